package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"github.com/countersign/countersign/internal/testnet"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startProxy runs `proxy run --config` as a process and waits for /readyz.
func startProxy(t *testing.T, dir, name, config, admin string) {
	t.Helper()
	path := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "proxy"), "run", "--config", path)
	cmd.Dir = dir
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("proxy %s did not stop on SIGTERM", name)
		}
		if t.Failed() {
			t.Logf("proxy %s logs:\n%s", name, logs.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			t.Fatalf("proxy %s exited at start:\n%s", name, logs.String())
		default:
		}
		if resp, err := http.Get("http://" + admin + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("proxy %s not ready:\n%s", name, logs.String())
}

// TestReceiptVerifiedOffline runs two proxy processes in front of a real HTTP app, sends a
// request through them, and checks the receipt the caller gets with `proxy verify --receipt`:
// online, fully offline from a saved key set, and tampered.
func TestReceiptVerifiedOffline(t *testing.T) {
	dir := t.TempDir()
	if r := runBin(t, dir, "proxy", nil, "sim-platform-key", "--out", "platform.pem"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	issuer, stopService := startService(t, dir, "--sim-platform-key", "platform.pem.pub")

	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "diagnosis for %s: %d bytes; chain %q", r.URL.Path, len(body), r.Header.Get("Countersign-Verified"))
	}))
	defer app.Close()

	mrFront, mrBack := strings.Repeat("a1", 32), strings.Repeat("b2", 32)
	policy := fmt.Sprintf("issuers:\n  - url: %s\n    caFile: ca.pem\nidentities:\n  records-api: {mrenclave: [%q], allowDebug: true}\n  inference: {mrenclave: [%q], allowDebug: true}\n",
		issuer, mrFront, mrBack)
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	common := func(identity, mr, admin string) string {
		return fmt.Sprintf("attester: {type: sim, simPlatformKey: platform.pem, simIdentity: {mrenclave: %q}}\n"+
			"attestationService: {url: %s, caFile: ca.pem}\npolicyFile: policy.yaml\nidentity: %s\nadmin: {listen: %s}\n",
			mr, issuer, identity, admin)
	}
	backIn, backAdmin, frontOut, frontAdmin := testnet.FreeAddr(t), testnet.FreeAddr(t), testnet.FreeAddr(t), testnet.FreeAddr(t)
	startProxy(t, dir, "back", common("inference", mrBack, backAdmin)+fmt.Sprintf(
		"inbound:\n  - {name: api, listen: %s, protocol: http, forwardTo: %s, allow: [records-api]}\n", backIn, strings.TrimPrefix(app.URL, "http://")), backAdmin)
	startProxy(t, dir, "front", common("records-api", mrFront, frontAdmin)+fmt.Sprintf(
		"outbound:\n  - {name: inference, listen: %s, protocol: http, upstream: %s, upstreamIdentity: [inference]}\n", frontOut, backIn), frontAdmin)

	req, _ := http.NewRequest(http.MethodPost, "http://"+frontOut+"/v2/models/x/infer", strings.NewReader(`{"inputs":[]}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Countersign-Want-Receipt", "inline")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "records-api") {
		t.Fatalf("through the proxies: %d %s (reject: %s)", resp.StatusCode, body, resp.Header.Get("Countersign-Reject"))
	}
	receipt := resp.Header.Get("Countersign-Receipt")
	if receipt == "" {
		t.Fatal("no Countersign-Receipt header on the answer")
	}
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("receipt.txt", []byte(receipt))

	r := runBin(t, dir, "proxy", nil, "verify", "--policy", "policy.yaml", "--receipt", "receipt.txt", "--identity", "records-api", "--answerer", "inference")
	if r.code != 0 || !strings.Contains(r.stdout, "accepted: receipt countersigned") || !strings.Contains(r.stdout, "hop 1           records-api") {
		t.Fatalf("verify --receipt: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// The answer named the wrong answerer identity: rejected.
	r = runBin(t, dir, "proxy", nil, "verify", "--policy", "policy.yaml", "--receipt", "receipt.txt", "--answerer", "records-api")
	if r.code != 1 {
		t.Fatalf("verify --receipt with the wrong answerer: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// Save the issuer's key set, stop the service: the receipt still verifies offline.
	keys := get(t, issuer+"/certs", filepath.Join(dir, "ca.pem"))
	write("certs.json", keys)
	stopService()
	r = runBin(t, dir, "proxy", nil, "verify", "--policy", "policy.yaml", "--receipt", "receipt.txt", "--issuer-keys", issuer+"=certs.json")
	if r.code != 0 {
		t.Fatalf("offline verify --receipt: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runBin(t, dir, "proxy", nil, "verify", "--policy", "policy.yaml", "--receipt", "receipt.txt")
	if r.code != 2 || !strings.Contains(r.stderr, "--issuer-keys") {
		t.Fatalf("verify --receipt with the issuer down and no saved keys: exit %d\n%s", r.code, r.stderr)
	}
	// A tampered receipt (the response status changed) is rejected.
	dec, err := base64.RawURLEncoding.DecodeString(receipt)
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Replace(dec, []byte(`"status":200`), []byte(`"status":201`), 1)
	if bytes.Equal(tampered, dec) {
		t.Fatalf("receipt has no status 200 to tamper with: %s", dec)
	}
	write("tampered.json", tampered)
	r = runBin(t, dir, "proxy", nil, "verify", "--policy", "policy.yaml", "--receipt", "tampered.json", "--issuer-keys", issuer+"=certs.json")
	if r.code != 1 || !strings.Contains(r.stdout, "rejected:") {
		t.Fatalf("tampered receipt: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

func get(t *testing.T, url, caFile string) []byte {
	t.Helper()
	ca, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatal("no CA in " + caFile)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return b
}
