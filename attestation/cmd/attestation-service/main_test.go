package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/countersign/countersign/attestation/maa"
	"github.com/countersign/countersign/attestation/quote"
)

var listeningLine = regexp.MustCompile(`^attestation-service listening on (\S+) issuer=(\S+) ca=(\S+)$`)

// TestBinary builds the real binary, starts it with generated keys, talks to it over TLS
// trusting only the CA it wrote, and stops it with SIGTERM; a restart keeps the signing key.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go tool is needed to build the binary: %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "attestation-service")
	build := exec.Command(goTool, "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	platform, err := quote.GeneratePlatformKey(filepath.Join(dir, "platform.key"))
	if err != nil {
		t.Fatal(err)
	}
	const admin = "binary-test-admin-token"
	if err := os.WriteFile(filepath.Join(dir, "admin-token"), []byte(admin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{
		"--listen", "127.0.0.1:0",
		"--signing-key", filepath.Join(dir, "signing.key"),
		"--signing-cert", filepath.Join(dir, "signing.crt"),
		"--tls-ca-out", filepath.Join(dir, "ca.pem"),
		// The private key file by mistake for one, the .pub for the other: both work.
		"--sim-platform-key", filepath.Join(dir, "platform.key.pub"),
		"--sim-platform-key", filepath.Join(dir, "platform.key"),
		"--admin-token-file", filepath.Join(dir, "admin-token"),
		"--token-lifetime", "1h",
		"--log-format", "json",
	}

	kid1 := runBinaryOnce(t, bin, args, dir, func(client *http.Client, issuer string) {
		// Attest a simulated quote over TLS.
		runtime := []byte("binary test runtime data")
		r := &quote.Report{ProductID: 1, SVN: 2, ReportData: maa.ReportDataFor(runtime)}
		body, _ := json.Marshal(map[string]any{
			"quote":       base64.RawURLEncoding.EncodeToString(quote.NewSim(r, platform)),
			"runtimeData": map[string]string{"data": base64.RawURLEncoding.EncodeToString(runtime), "dataType": "Binary"},
		})
		resp, err := client.Post(issuer+"/attest/SgxEnclave?api-version=2022-08-01", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var tr maa.TokenResponse
		if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || resp.StatusCode != 200 || tr.Token == "" {
			t.Fatalf("attest: status %d, %v", resp.StatusCode, err)
		}
		payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(tr.Token, ".")[1])
		var c maa.Claims
		if err := json.Unmarshal(payload, &c); err != nil || c.Issuer != issuer || *c.Expiry-*c.IssuedAt != 3600 {
			t.Errorf("claims %+v: %v", c, err)
		}
	})
	info, err := os.Stat(filepath.Join(dir, "signing.key"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("signing key mode %v (%v), want 0600", info.Mode().Perm(), err)
	}
	kid2 := runBinaryOnce(t, bin, args, dir, nil)
	if kid1 != kid2 {
		t.Errorf("kid changed across restarts: %s then %s", kid1, kid2)
	}
}

// runBinaryOnce starts the binary, waits for its listening line, checks /certs over TLS with
// the CA it wrote, runs more checks, stops it with SIGTERM and returns the kid it served.
func runBinaryOnce(t *testing.T, bin string, args []string, dir string, more func(*http.Client, string)) string {
	t.Helper()
	caPath := filepath.Join(dir, "ca.pem")
	os.Remove(caPath)
	cmd := exec.Command(bin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	stopped := false
	defer func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, stdout)
		done <- cmd.Wait()
	}()
	var line string
	select {
	case line = <-lines:
	case err := <-done:
		stopped = true
		t.Fatalf("binary exited before listening: %v\n%s", err, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("no listening line within 30s; stderr:\n%s", stderr.String())
	}
	m := listeningLine.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("listening line %q does not match %s", line, listeningLine)
	}
	addr, issuer, ca := m[1], m[2], m[3]
	if issuer != "https://"+addr || ca != caPath {
		t.Errorf("listening line %q: want issuer https://%s and ca %s", line, addr, caPath)
	}
	caPEM, err := os.ReadFile(caPath)
	if err != nil {
		t.Fatalf("CA file: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("CA file holds no certificate")
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()
	resp, err := client.Get(issuer + "/certs")
	if err != nil {
		t.Fatalf("GET /certs over TLS with the written CA: %v", err)
	}
	var set struct {
		Keys []struct {
			Kid string   `json:"kid"`
			X5c []string `json:"x5c"`
		} `json:"keys"`
	}
	err = json.NewDecoder(resp.Body).Decode(&set)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || len(set.Keys) != 1 || set.Keys[0].Kid == "" {
		t.Fatalf("/certs: status %d %+v %v", resp.StatusCode, set, err)
	}
	if got := resp.Header.Get("x-ms-maa-service-version"); got == "" {
		t.Error("no x-ms-maa-service-version header")
	}
	// Without the CA, TLS fails: the certificate really comes from that CA.
	if _, err := (&http.Client{Timeout: 5 * time.Second}).Get(issuer + "/certs"); err == nil {
		t.Error("the serving certificate verified without the generated CA")
	}
	if more != nil {
		more(client, issuer)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		stopped = true
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("still running 15s after SIGTERM\n%s", stderr.String())
	}
	for _, want := range []string{`"msg":"listening"`, `"msg":"shutting down"`, `"msg":"stopped"`} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %s:\n%s", want, stderr.String())
		}
	}
	return set.Keys[0].Kid
}
