package app

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/attestation/quote"
	"github.com/countersign/countersign/attestation/service"
	"github.com/countersign/countersign/internal/cmdexit"
)

func TestRunConfigErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	badPolicy := write("bad.policy", "version=1.0;\nauthorizationrules { => permit() };")
	lonelyKey := write("lonely-key.pem", "not used")
	emptyToken := write("empty-token", "\n")
	base := func(extra ...string) []string {
		return append([]string{"--listen", "127.0.0.1:0", "--signing-key", filepath.Join(dir, "k.pem"), "--signing-cert", filepath.Join(dir, "c.pem"), "--tls-ca-out", filepath.Join(dir, "ca.pem")}, extra...)
	}
	tests := []struct {
		name  string
		args  []string
		msg   string
		usage bool
	}{
		{"unknown flag", []string{"--nope"}, "flag provided but not defined: -nope", true},
		{"positional argument", append(base(), "extra"), `unexpected argument "extra"`, true},
		{"no signing flags", []string{"--tls-ca-out", "x"}, "--signing-key and --signing-cert: both are required", true},
		{"half a TLS pair", base("--tls-cert", "x.pem"), "--tls-cert and --tls-key: give both", true},
		{"no CA output", []string{"--signing-key", "k", "--signing-cert", "c"}, "--tls-ca-out: required when --tls-cert/--tls-key are not given", true},
		{"bad lifetime", base("--token-lifetime", "1ms"), "--token-lifetime: 1ms, expected at least 1s", true},
		{"bad max body", base("--max-body", "0"), "--max-body: 0, expected a positive number of bytes", true},
		{"bad log format", base("--log-format", "xml"), `--log-format: "xml", expected text or json`, true},
		{"missing platform key", base("--sim-platform-key", filepath.Join(dir, "none.pub")), "--sim-platform-key: open", false},
		{"bad policy", base("--policy", badPolicy), "--policy: " + badPolicy + `:2:34: expected ";", found "}"`, false},
		{"empty admin token", base("--admin-token-file", emptyToken), "--admin-token-file: " + emptyToken + " is empty", false},
		{"short admin token", base("--admin-token-file", write("short-token", "abc")), "--admin-token-file: 3 characters, expected at least 16", false},
		{"only the key exists", []string{"--signing-key", lonelyKey, "--signing-cert", filepath.Join(dir, "no-cert.pem"), "--tls-ca-out", "ca"}, "--signing-key/--signing-cert: signing key " + lonelyKey + " exists but its certificate", false},
		{"issuer with a slash", base("--issuer", "https://attest.test/"), `--issuer: "https://attest.test/" ends with a slash`, false},
		{"http issuer", base("--issuer", "http://attest.test"), "--issuer: \"http://attest.test\" must use https", false},
		{"bad listen address", base("--listen", "256.0.0.1:99999"), "--listen:", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := Run(context.Background(), tt.args, &stdout, &stderr)
			if err == nil {
				t.Fatal("run succeeded")
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not contain %q", err, tt.msg)
			}
			if got := cmdexit.IsUsage(err); got != tt.usage {
				t.Errorf("usage error = %v, want %v", got, tt.usage)
			}
		})
	}
}

// TestSimRequest: the sim-request subcommand prints bodies the service accepts.
func TestSimRequest(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "platform.key")
	key, cert, _, err := service.LoadOrCreateSigningKey(filepath.Join(dir, "k.pem"), filepath.Join(dir, "c.pem"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for i, tt := range []struct {
		args []string
		path string
	}{
		{[]string{"--runtime-data", `{"keys":[]}`, "--mrenclave", strings.Repeat("ab", 32), "--svn", "9"}, "/attest/SgxEnclave?api-version=2022-08-01"},
		{[]string{"--runtime-data", "raw bytes", "--data-type", "Binary", "--openenclave"}, "/attest/OpenEnclave?api-version=2020-10-01"},
	} {
		var stdout, stderr bytes.Buffer
		if err := Run(context.Background(), append([]string{"sim-request", "--platform-key", keyPath}, tt.args...), &stdout, &stderr); err != nil {
			t.Fatalf("sim-request: %v", err)
		}
		if generated := strings.Contains(stderr.String(), "generated simulated platform key"); generated != (i == 0) {
			t.Errorf("run %d: generated=%v, want only on the first run", i, generated)
		}
		pub, err := quote.LoadPlatformPublicKey(keyPath + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		svc, err := service.New(service.Config{Issuer: "https://attest.test", SigningKey: key, SigningCert: cert, SimPlatformKeys: []ed25519.PublicKey{pub}})
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", tt.path, &stdout)
		req.Header.Set("Content-Type", "application/json")
		svc.Handler().ServeHTTP(rec, req)
		if rec.Code != 200 {
			t.Errorf("%v: status %d %s", tt.args, rec.Code, rec.Body)
		}
	}
	for _, tt := range []struct {
		args []string
		msg  string
	}{
		{nil, "--platform-key: required"},
		{[]string{"--platform-key", keyPath, "--mrsigner", "abc"}, `--mrsigner: "abc", expected 64 hex digits`},
		{[]string{"--platform-key", keyPath, "--svn", "70000"}, "expected at most 65535"},
		{[]string{"--platform-key", keyPath, "--data-type", "Text"}, `--data-type: "Text", expected Binary or JSON`},
		{[]string{"--platform-key", filepath.Join(dir, "k.pem")}, "--platform-key:"},
	} {
		err := Run(context.Background(), append([]string{"sim-request"}, tt.args...), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%v: error %v, want %q", tt.args, err, tt.msg)
		}
	}
}
