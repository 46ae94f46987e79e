package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestProxyRefusesPlainHTTPAttestationService: `proxy run` with an http:// attestation
// service exits non-zero at once, naming the field, instead of running unready forever; so
// does a policy that gives allowDebug twice in different cases.
func TestProxyRefusesPlainHTTPAttestationService(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("policy.yaml", "issuers: [{url: 'https://127.0.0.1:1'}]\nidentities:\n  svc: {mrenclave: ['"+strings.Repeat("a1", 32)+"'], allowDebug: false, allowdebug: true}\n")
	cfg := "attester: {type: sim, simPlatformKey: platform.pem}\nattestationService: {url: %q}\npolicyFile: policy.yaml\nidentity: svc\nadmin: {listen: 127.0.0.1:0}\n"
	write("http.yaml", strings.Replace(cfg, "%q", "http://127.0.0.1:1", 1))
	r := runBin(t, dir, "proxy", nil, "run", "--config", "http.yaml")
	if r.code == 0 || !strings.Contains(r.stderr, "attestationService.url") || !strings.Contains(r.stderr, "https://") {
		t.Errorf("http:// attestation service: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runBin(t, dir, "proxy", nil, "verify", "--policy", "policy.yaml", "--token", "x")
	if r.code == 0 || !strings.Contains(r.stderr+r.stdout, "identities.svc.allowdebug") {
		t.Errorf("policy with allowDebug and allowdebug: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestProxyExitsNonZeroWhenAListenerCannotServe: `proxy run` whose admin listener cannot be
// bound exits 1 (not 0, not the usage status 2), naming the listener, instead of serving the
// rest with a dead port. (A listener that dies after the start is proxy/server's
// TestListenerFailureStopsProxy; the binary maps both the same way.)
func TestProxyExitsNonZeroWhenAListenerCannotServe(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if r := runBin(t, dir, "proxy", nil, "sim-platform-key", "--out", "platform.pem"); r.code != 0 {
		t.Fatalf("sim-platform-key: %d %s", r.code, r.stderr)
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	write("policy.yaml", "issuers: [{url: 'https://127.0.0.1:1'}]\nidentities:\n  svc: {mrenclave: ['"+strings.Repeat("a1", 32)+"']}\n")
	write("proxy.yaml", "attester: {type: sim, simPlatformKey: platform.pem}\nattestationService: {url: 'https://127.0.0.1:1'}\npolicyFile: policy.yaml\nidentity: svc\nadmin: {listen: '"+taken.Addr().String()+"'}\noutbound: [{name: out, listen: '127.0.0.1:0', protocol: tcp, upstream: '127.0.0.1:1', upstreamIdentity: [svc]}]\n")
	r := runBin(t, dir, "proxy", nil, "run", "--config", "proxy.yaml")
	if r.code != 1 || !strings.Contains(r.stderr, "listener admin") || !strings.Contains(r.stderr, "address already in use") {
		t.Errorf("admin address taken: exit %d (want 1)\n%s%s", r.code, r.stdout, r.stderr)
	}
}
