package platform

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ArtifactDir is where the browser test leaves its screenshots (git-ignored).
func ArtifactDir(t testing.TB) string {
	t.Helper()
	d := filepath.Join(RepoRoot(), "test", "artifacts")
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestPortalInBrowser drives the portal in headless Chromium: the records API's attestation
// verifies (and says it is simulated), a patient is created, a scan uploaded, and the
// diagnosis's receipt verifies in the page; then the stored diagnosis is tampered with in
// Redis (another label, the receipt's body digest swapped to match) and the page shows the
// receipt as not verified. Screenshots: test/artifacts/portal.png, portal-tampered.png.
func TestPortalInBrowser(t *testing.T) { portalInBrowser(t, Options{}) }

// TestPortalInBrowserGRPC: the same with the diagnosis over gRPC; the browser verifies the v2
// receipt over the stored gRPC body and reads the label out of it.
func TestPortalInBrowserGRPC(t *testing.T) { portalInBrowser(t, Options{InferenceGRPC: true}) }

func portalInBrowser(t *testing.T, o Options) {
	ChromiumPath(t)
	p := StartWith(t, o)
	spki := []string{
		SPKIHash(t, strings.TrimSuffix(strings.TrimPrefix(p.PortalURL, "https://"), "/")),
		SPKIHash(t, strings.TrimPrefix(p.Issuer, "https://")),
	}
	b := StartBrowser(t, spki)
	b.Navigate(p.PortalURL)
	b.WaitFor("the portal to load", `document.body && document.body.dataset.ready === "true"`, 20*time.Second)
	b.WaitFor("the attestation to be checked", `document.getElementById("att-status").dataset.state !== "pending"`, 30*time.Second)
	var att struct {
		State, Text, Reason string
		Sim                 bool
		MR                  string
	}
	b.Eval(`({State: document.getElementById("att-status").dataset.state, Text: document.getElementById("att-status").textContent,
		Reason: document.getElementById("att-reason").textContent, Sim: !document.getElementById("att-sim").hidden,
		MR: (document.querySelector("[data-testid=mrenclave]") || {}).textContent})`, &att)
	if att.State != "verified" || !att.Sim || att.MR != MRRecords {
		t.Fatalf("attestation panel: %+v (want verified, simulated, MRENCLAVE %s)", att, MRRecords)
	}

	// Create a patient with the keyboard-accessible form.
	b.Eval(`(() => { const v = (id, x) => { const e = document.getElementById(id); e.value = x; e.dispatchEvent(new Event("input", {bubbles: true})); };
		v("p-name", "Browser Test Patient"); v("p-dob", "1980-05-01"); v("p-sex", "female"); v("p-mrn", "MRN-4242");
		document.querySelector("#patient-form button[type=submit]").click(); })()`, nil)
	b.WaitFor("the patient to be selected", `!document.getElementById("patient").hidden && document.getElementById("pt-title").textContent.includes("Browser Test Patient")`, 20*time.Second)

	b.SetFile("#s-file", filepath.Join(RepoRoot(), "inference-server/models/chest-scan-classifier/samples/nodule-1.png"))
	b.Eval(`document.querySelector("#scan-form button[type=submit]").click()`, nil)
	b.WaitFor("the receipt to be checked", `(() => { const s = document.querySelector("[data-testid=receipt-status]"); return s && s.dataset.state !== "pending"; })()`, 60*time.Second)
	var rec struct{ State, Text, Diagnosis, Hops, Reason string }
	evalRecord := `(() => { const s = document.querySelector("[data-testid=receipt-status]"); const li = s.closest("li");
		return {State: s.dataset.state, Text: s.textContent, Diagnosis: li.querySelector("[data-testid=diagnosis]").textContent,
		Hops: (li.querySelector(".hops") || {}).innerText || "", Reason: (li.querySelector("[data-testid=receipt-reason]") || {}).textContent || ""}; })()`
	b.Eval(evalRecord, &rec)
	if rec.State != "verified" || rec.Diagnosis != "nodule" || !strings.Contains(rec.Hops, "records-api") || !strings.Contains(rec.Hops, "inference") || !strings.Contains(rec.Text, "simulated") {
		t.Fatalf("diagnosis receipt in the page: %+v", rec)
	}
	shot := filepath.Join(ArtifactDir(t), "portal.png")
	b.Screenshot(shot)
	t.Logf("screenshot: %s", shot)

	// Tamper with the stored diagnosis behind the API's back, as someone with database access
	// could. First only the label the app stored: the countersigned response still says
	// nodule. Then the response too (labels swapped), with the receipt's body digest replaced to
	// match: the countersignature no longer covers it.
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: p.RedisAddr})
	defer rdb.Close()
	keys, err := rdb.Keys(ctx, "record:*").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("records in redis: %v %v", keys, err)
	}
	original, err := rdb.HGet(ctx, keys[0], "json").Result()
	if err != nil {
		t.Fatal(err)
	}
	tamper := func(forgeResponse bool) {
		var stored map[string]any
		if err := json.Unmarshal([]byte(original), &stored); err != nil {
			t.Fatal(err)
		}
		d := stored["diagnosis"].(map[string]any)
		d["label"] = "normal"
		if forgeResponse {
			body := d["response"].(string)
			if o.InferenceGRPC { // stored as base64 of the binary gRPC body: forge the bytes
				raw, err := base64.StdEncoding.DecodeString(body)
				if err != nil {
					t.Fatal(err)
				}
				body = string(raw)
			}
			forged := strings.NewReplacer("nodule", "normal", "normal", "nodule").Replace(body)
			if forged == body {
				t.Fatal("the forgery changed nothing")
			}
			d["response"] = forged
			if o.InferenceGRPC {
				d["response"] = base64.StdEncoding.EncodeToString([]byte(forged))
			}
			rb, _ := base64.RawURLEncoding.DecodeString(d["receipt"].(string))
			var receipt map[string]any
			if err := json.Unmarshal(rb, &receipt); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256([]byte(forged))
			receipt["bodySha256"] = base64.RawURLEncoding.EncodeToString(sum[:])
			nr, _ := json.Marshal(receipt)
			d["receipt"] = base64.RawURLEncoding.EncodeToString(nr)
		}
		nj, _ := json.Marshal(stored)
		if err := rdb.HSet(ctx, keys[0], "json", nj).Err(); err != nil {
			t.Fatal(err)
		}
		b.Navigate(p.PortalURL)
		b.WaitFor("the portal to reload", `document.body && document.body.dataset.ready === "true" && document.querySelector("#patients button")`, 20*time.Second)
		b.Eval(`document.querySelector("#patients button").click()`, nil)
		b.WaitFor("the tampered receipt to be checked", `(() => { const s = document.querySelector("[data-testid=receipt-status]"); return s && s.dataset.state !== "pending"; })()`, 30*time.Second)
		b.Eval(evalRecord, &rec)
	}
	tamper(false)
	if rec.State != "not-verified" || rec.Diagnosis != "normal" || !strings.Contains(rec.Reason, "not the one in the countersigned response") {
		t.Fatalf("diagnosis label changed in the store: %+v (want not-verified, naming the label)", rec)
	}
	tamper(true)
	if rec.State != "not-verified" || rec.Diagnosis != "normal" || !strings.Contains(rec.Reason, "countersignature does not cover this response") {
		t.Fatalf("forged response with its digest in the receipt: %+v (want not-verified, naming the countersignature)", rec)
	}
	shot = filepath.Join(ArtifactDir(t), "portal-tampered.png")
	b.Screenshot(shot)
	t.Logf("screenshot: %s", shot)
}
