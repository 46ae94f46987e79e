package platform

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// apiCall sends a request through the records sidecar's public listener and decodes JSON.
func apiCall(t *testing.T, c *http.Client, method, url, ct string, body []byte, hdr map[string]string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %d, not JSON: %s", method, url, resp.StatusCode, b)
		}
	}
	return resp.StatusCode
}

type diagnosisJSON struct {
	Label            string `json:"label"`
	Response         string `json:"response"`
	ResponseEncoding string `json:"responseEncoding"`
	Receipt          string `json:"receipt"`
}

type recordJSON struct {
	ID        string         `json:"id"`
	Kind      string         `json:"kind"`
	Diagnosis *diagnosisJSON `json:"diagnosis"`
}

// TestSmokeFlow is `make demo-smoke` as a test: create a patient through the records API's
// sidecar, upload a sample scan (records API → its sidecar → attested mTLS → the inference
// sidecar → ONNX Runtime), fetch the diagnosis, and verify its receipt offline with
// `proxy verify --receipt`; a receipt whose response digest was altered is rejected.
func TestSmokeFlow(t *testing.T) { smokeFlow(t, false) }

// TestSmokeFlowGRPC is TestSmokeFlow with the records API calling the inference server over
// gRPC (ModelInfer) through the sidecars' grpc listeners: HTTP/2 on the attested hop, the
// countersignature in the trailers, a v2 (streamed) receipt that binds the request body too.
func TestSmokeFlowGRPC(t *testing.T) { smokeFlow(t, true) }

func smokeFlow(t *testing.T, grpc bool) {
	p := StartWith(t, Options{InferenceGRPC: grpc})
	c := p.Client()
	base := strings.TrimSuffix(p.PortalURL, "/")

	var pat struct{ ID string }
	if code := apiCall(t, c, "POST", base+"/api/patients", "application/json", []byte(`{"name":"Smoke Test","dateOfBirth":"1970-01-01","sex":"unknown"}`), map[string]string{"Idempotency-Key": "smoke-patient"}, &pat); code != 201 {
		t.Fatalf("create patient: %d", code)
	}
	png, err := os.ReadFile(filepath.Join(RepoRoot(), "inference-server/models/chest-scan-classifier/samples/opacity-1.png"))
	if err != nil {
		t.Fatal(err)
	}
	var rec recordJSON
	if code := apiCall(t, c, "POST", base+"/api/patients/"+pat.ID+"/scans", "image/png", png, map[string]string{"Idempotency-Key": "smoke-scan"}, &rec); code != 201 {
		t.Fatalf("upload scan: %d %+v", code, rec)
	}
	var list struct{ Records []recordJSON }
	if code := apiCall(t, c, "GET", base+"/api/patients/"+pat.ID+"/records", "", nil, nil, &list); code != 200 || len(list.Records) != 1 {
		t.Fatalf("list records: %d %+v", code, list)
	}
	d := list.Records[0].Diagnosis
	if d == nil || d.Receipt == "" {
		t.Fatalf("the diagnosis carries no receipt: %+v", list.Records[0])
	}
	if d.Label != "opacity" {
		t.Errorf("opacity-1.png diagnosed as %q", d.Label)
	}
	// The receipt covers exactly the stored response body.
	rb, err := base64.RawURLEncoding.DecodeString(d.Receipt)
	if err != nil {
		t.Fatal(err)
	}
	var receipt map[string]any
	if err := json.Unmarshal(rb, &receipt); err != nil {
		t.Fatal(err)
	}
	stored := []byte(d.Response)
	if grpc {
		if d.ResponseEncoding != "grpc" {
			t.Fatalf("a gRPC diagnosis stored with responseEncoding %q", d.ResponseEncoding)
		}
		if stored, err = base64.StdEncoding.DecodeString(d.Response); err != nil {
			t.Fatal(err)
		}
		if receipt["v"] != 2.0 || receipt["requestBody"] == "-" || receipt["trailersSha256"] == nil {
			t.Fatalf("a gRPC diagnosis's receipt: v %v requestBody %v trailersSha256 %v; want a v2 (streamed) receipt binding the request", receipt["v"], receipt["requestBody"], receipt["trailersSha256"])
		}
	}
	sum := sha256.Sum256(stored)
	if receipt["bodySha256"] != base64.RawURLEncoding.EncodeToString(sum[:]) {
		t.Fatalf("receipt bodySha256 %v does not cover the stored response", receipt["bodySha256"])
	}
	rf := filepath.Join(p.Dir, "receipt.txt")
	write(t, rf, d.Receipt)
	out, err := exec.Command(filepath.Join(p.Bin, "proxy"), "verify", "--policy", p.Policy, "--receipt", rf, "--identity", "records-api", "--answerer", "inference").CombinedOutput()
	if err != nil {
		t.Fatalf("proxy verify --receipt rejected the diagnosis receipt: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "accepted") {
		t.Fatalf("proxy verify --receipt: %s", out)
	}
	t.Logf("proxy verify --receipt:\n%s", out)

	// The wrong answerer identity is rejected.
	out, err = exec.Command(filepath.Join(p.Bin, "proxy"), "verify", "--policy", p.Policy, "--receipt", rf, "--answerer", "redis").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("a receipt checked against the wrong answerer: %v\n%s", err, out)
	}
	// A forged response (another diagnosis) with its digest swapped in is rejected.
	forged := []byte(strings.Replace(string(stored), "opacity", "normal", 1))
	fs := sha256.Sum256(forged)
	receipt["bodySha256"] = base64.RawURLEncoding.EncodeToString(fs[:])
	tb, _ := json.Marshal(receipt)
	write(t, rf, string(tb))
	out, err = exec.Command(filepath.Join(p.Bin, "proxy"), "verify", "--policy", p.Policy, "--receipt", rf).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "countersignature_invalid") {
		t.Fatalf("a tampered receipt: %v\n%s", err, out)
	}
}
