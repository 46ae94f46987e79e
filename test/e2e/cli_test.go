package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const mrsigner = "abababababababababababababababababababababababababababababababab"

// TestTryItByHand is the README's "try it by hand" walk-through: make a simulated platform key,
// start the local attestation service trusting it, get a token, and verify it against a
// policy, with the exit codes the README promises.
func TestTryItByHand(t *testing.T) {
	dir := t.TempDir()
	if r := runBin(t, dir, "proxy", nil, "sim-platform-key", "--out", "platform.pem"); r.code != 0 {
		t.Fatalf("sim-platform-key: %d %s", r.code, r.stderr)
	}
	if r := runBin(t, dir, "proxy", nil, "sim-platform-key", "--out", "platform.pem"); r.code != 2 || !strings.Contains(r.stderr, "already exists") {
		t.Fatalf("sim-platform-key over an existing key: %d %s", r.code, r.stderr)
	}
	issuer, stop := startService(t, dir, "--sim-platform-key", "platform.pem.pub")

	r := runBin(t, dir, "proxy", nil, "attest", "--service", issuer, "--ca", "ca.pem", "--sim-platform-key", "platform.pem",
		"--mrsigner", mrsigner, "--product-id", "1", "--svn", "2", "--key-out", "tls-key.pem")
	if r.code != 0 || strings.Count(strings.TrimSpace(r.stdout), ".") != 2 {
		t.Fatalf("attest: exit %d, stdout %q, stderr %s", r.code, r.stdout, r.stderr)
	}
	if err := os.WriteFile(filepath.Join(dir, "token.jwt"), []byte(r.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	writePolicy := func(allowDebug bool) {
		doc := fmt.Sprintf("issuers:\n  - url: %s\n    caFile: ca.pem\nidentities:\n  records-api:\n    mrsigner: [%q]\n    productId: 1\n    minSvn: 2\n    allowDebug: %v\n",
			issuer, mrsigner, allowDebug)
		if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// A production policy rejects a simulated (debuggable) token: exit 1, reason on stdout.
	writePolicy(false)
	r = runBin(t, dir, "proxy", nil, "verify", "--policy", "policy.yaml", "--token", "token.jwt")
	if r.code != 1 || !strings.Contains(r.stdout, "rejected: debug_not_allowed") || !strings.Contains(r.stdout, "x-ms-sgx-is-debuggable is true, expected false") {
		t.Fatalf("verify under a strict policy: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// A development policy accepts it, read from standard input, by the named identity.
	writePolicy(true)
	token, _ := os.ReadFile(filepath.Join(dir, "token.jwt"))
	r = runBin(t, dir, "proxy", strings.NewReader(string(token)), "verify", "--policy", "policy.yaml", "--identity", "records-api", "--token", "-")
	if r.code != 0 || !strings.Contains(r.stdout, "accepted: identity records-api") || !strings.Contains(r.stdout, mrsigner) {
		t.Fatalf("verify under a development policy: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// The token binds the key written by --key-out, and no other.
	r = runBin(t, dir, "proxy", nil, "verify", "--policy", "policy.yaml", "--token", "token.jwt", "--key", "tls-key.pem")
	if r.code != 0 {
		t.Fatalf("verify with the bound key: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runBin(t, dir, "proxy", nil, "verify", "--policy", "policy.yaml", "--token", "token.jwt", "--key", "ca.pem")
	if r.code != 1 || !strings.Contains(r.stdout, "key_not_bound") {
		t.Fatalf("verify with another key: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// A tampered token is rejected.
	tampered := []byte(strings.TrimSpace(string(token)))
	tampered[len(tampered)-5] ^= 1
	r = runBin(t, dir, "proxy", strings.NewReader(string(tampered)), "verify", "--policy", "policy.yaml", "--token", "-")
	if r.code != 1 || !strings.Contains(r.stdout, "rejected: ") {
		t.Fatalf("verify tampered: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// A token over the size cap is a rejection of that token (token_too_large, exit 1), not an
	// input error; so is a receipt over its cap (receipt_malformed).
	r = runBin(t, dir, "proxy", strings.NewReader(strings.Repeat("a", 2<<20)), "verify", "--policy", "policy.yaml", "--token", "-")
	if r.code != 1 || !strings.Contains(r.stdout, "rejected: token_too_large") {
		t.Fatalf("verify a 2 MiB token: exit %d (want 1, token_too_large)\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runBin(t, dir, "proxy", strings.NewReader(strings.Repeat("a", 2<<20)), "verify", "--policy", "policy.yaml", "--receipt", "-")
	if r.code != 1 || !strings.Contains(r.stdout, "rejected: receipt_malformed") {
		t.Fatalf("verify a 2 MiB receipt: exit %d (want 1, receipt_malformed)\n%s%s", r.code, r.stdout, r.stderr)
	}
	// Usage and configuration errors exit 2.
	for _, args := range [][]string{
		{"verify", "--token", "token.jwt"},
		{"verify", "--policy", "missing.yaml", "--token", "token.jwt"},
		{"verify", "--policy", "policy.yaml", "--identity", "nobody", "--token", "token.jwt"},
		{"verify", "--policy", "policy.yaml", "--token", "missing.jwt"},
		{"attest", "--service", issuer, "--attester", "tpm"},
		{"no-such-command"},
	} {
		if r := runBin(t, dir, "proxy", nil, args...); r.code != 2 {
			t.Errorf("proxy %v: exit %d, want 2 (%s)", args, r.code, r.stderr)
		}
	}
	// The sgx attester outside an enclave says so.
	r = runBin(t, dir, "proxy", nil, "attest", "--attester", "sgx", "--service", issuer, "--ca", "ca.pem")
	if r.code != 1 || !strings.Contains(r.stderr, "EGo enclave") {
		t.Errorf("sgx attester outside an enclave: exit %d %s", r.code, r.stderr)
	}
	// With the service gone, verify cannot fetch the issuer's keys: exit 2.
	stop()
	r = runBin(t, dir, "proxy", nil, "verify", "--policy", "policy.yaml", "--token", "token.jwt")
	if r.code != 2 || !strings.Contains(r.stderr, "cannot fetch the issuers' keys") {
		t.Fatalf("verify with the issuer down: exit %d %s", r.code, r.stderr)
	}
}
