package transparent_test

// TestTransparentInterceptionNetns runs transparent interception for real: two network
// namespaces joined by a veth pair, the init container's rules applied in both with the
// proxy binary's `iptables` subcommand, two proxy processes running as the proxy UID, an
// HTTP app and redis-server in the server namespace, and unmodified curl and redis-cli in
// the client namespace talking to plain addresses. Needs root, iproute2, iptables, curl,
// redis-server and redis-tools; skipped with a reason otherwise.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/countersign/countersign/attestation/quote"
	"github.com/countersign/countersign/attestation/service"
	"github.com/countersign/countersign/internal/testbin"
	"github.com/countersign/countersign/proxy/chain"
	"github.com/countersign/countersign/proxy/httpproxy"
	"github.com/countersign/countersign/proxy/transparent"
)

const proxyUID = 1337 // the proxy's UID in the test (as in a pod)
const appUID = 1000   // the unmodified clients' UID

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("transparent interception test needs root (network namespaces, iptables); CI runs as root")
	}
	for _, tool := range []string{"ip", "iptables", "iptables-restore", "ip6tables", "ip6tables-restore", "setpriv", "curl", "redis-server", "redis-cli"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("transparent interception test needs %s (scripts/deps.d/transparent.txt): %v", tool, err)
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// listenIn binds a TCP listener inside the named network namespace: the socket belongs to
// the namespace it was created in, whatever thread later accepts on it.
func listenIn(ns, addr string) (net.Listener, error) {
	type res struct {
		ln  net.Listener
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		// If restoring the namespace fails, the goroutine exits still locked and the
		// runtime discards the thread.
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- res{nil, err}
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open("/var/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- res{nil, err}
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			ch <- res{nil, err}
			return
		}
		ln, lerr := net.Listen("tcp", addr)
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			if ln != nil {
				ln.Close()
			}
			ch <- res{nil, fmt.Errorf("restoring the network namespace: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		ch <- res{ln, lerr}
	}()
	r := <-ch
	return r.ln, r.err
}

type topo struct {
	client, server         string // namespace names
	clientIP, serverIP     string
	clientVeth, serverVeth string
}

// newTopo creates two namespaces joined by a veth pair; t.Cleanup deletes them by name
// (which deletes the veth pair and every rule inside).
func newTopo(t *testing.T) topo {
	n := os.Getpid()%200 + 20
	tp := topo{
		client: fmt.Sprintf("cs-tp%d-c", os.Getpid()), server: fmt.Sprintf("cs-tp%d-s", os.Getpid()),
		clientIP: fmt.Sprintf("10.200.%d.1", n), serverIP: fmt.Sprintf("10.200.%d.2", n),
	}
	vc, vs := fmt.Sprintf("cstp%dc", os.Getpid()%100000), fmt.Sprintf("cstp%ds", os.Getpid()%100000)
	tp.clientVeth, tp.serverVeth = vc, vs
	for _, ns := range []string{tp.client, tp.server} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("deleting namespace %s: %v %s", ns, err, out)
			}
		})
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	// Created inside the client namespace with its peer in the server namespace: nothing
	// is ever added to the host's namespace.
	run(t, "ip", "-n", tp.client, "link", "add", vc, "type", "veth", "peer", "name", vs, "netns", tp.server)
	run(t, "ip", "-n", tp.client, "addr", "add", tp.clientIP+"/24", "dev", vc)
	run(t, "ip", "-n", tp.server, "addr", "add", tp.serverIP+"/24", "dev", vs)
	run(t, "ip", "-n", tp.client, "link", "set", vc, "up")
	run(t, "ip", "-n", tp.server, "link", "set", vs, "up")
	return tp
}

// proc is a process we started; cleanup ends it by PID.
type proc struct {
	cmd  *exec.Cmd
	logs *lockedBuf
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startIn starts a command inside ns, as uid (or root when uid < 0).
func startIn(t *testing.T, ns string, uid int, name string, args ...string) *proc {
	t.Helper()
	argv := []string{"netns", "exec", ns}
	if uid >= 0 {
		argv = append(argv, "setpriv", fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups", "--")
	}
	argv = append(argv, name)
	argv = append(argv, args...)
	p := &proc{cmd: exec.Command("ip", argv...), logs: &lockedBuf{}}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(unix.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-done
		}
	})
	return p
}

// execIn runs a command inside ns as uid (root when uid < 0) and returns its output.
func execIn(ns string, uid int, name string, args ...string) (string, error) {
	argv := []string{"netns", "exec", ns}
	if uid >= 0 {
		argv = append(argv, "setpriv", fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups", "--")
	}
	argv = append(argv, name)
	argv = append(argv, args...)
	out, err := exec.Command("ip", argv...).CombinedOutput()
	return string(out), err
}

// execInitStep runs a command inside ns as root with only CAP_NET_ADMIN, as the injector's
// iptables init container does (runAsUser 0, capabilities drop ALL, add NET_ADMIN).
func execInitStep(ns string, name string, args ...string) (string, error) {
	argv := append([]string{"netns", "exec", ns, "setpriv", "--bounding-set=-all,+net_admin", "--inh-caps=-all", "--", name}, args...)
	out, err := exec.Command("ip", argv...).CombinedOutput()
	return string(out), err
}

func selfSigned(t *testing.T, ip string) (tls.Certificate, []byte) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		Subject:      pkix.Name{CommonName: ip},
		IPAddresses:  []net.IP{net.ParseIP(ip)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func buildProxy(t *testing.T, _ string) string {
	t.Helper()
	return testbin.Build(t, "./proxy/cmd/proxy")
}

func TestTransparentInterceptionNetns(t *testing.T) {
	requireRoot(t)
	if testing.Short() {
		t.Skip("builds the proxy binary and starts processes; not in -short")
	}
	// A directory the proxy UID can read (t.TempDir's parent is private to root).
	dir, err := os.MkdirTemp("", "cs-transparent-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := buildProxy(t, dir)
	tp := newTopo(t)

	// The local attestation service, listening inside the client namespace.
	const maaPort = 8443
	platformFile := filepath.Join(dir, "platform.pem")
	platform, err := quote.GeneratePlatformKey(platformFile)
	if err != nil {
		t.Fatal(err)
	}
	signKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test signing"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &signKey.PublicKey, signKey)
	signCert, _ := x509.ParseCertificate(der)
	maaURL := fmt.Sprintf("https://%s:%d", tp.clientIP, maaPort)
	svc, err := service.New(service.Config{
		Issuer:          maaURL,
		SigningKey:      signKey,
		SigningCert:     signCert,
		TokenLifetime:   time.Hour,
		SimPlatformKeys: []ed25519.PublicKey{platform.Public().(ed25519.PublicKey)},
	})
	if err != nil {
		t.Fatal(err)
	}
	maaCert, maaPEM := selfSigned(t, tp.clientIP)
	maaLn, err := listenIn(tp.client, fmt.Sprintf("%s:%d", tp.clientIP, maaPort))
	if err != nil {
		t.Fatal(err)
	}
	maaSrv := &http.Server{Handler: svc.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		_ = maaSrv.Serve(tls.NewListener(maaLn, &tls.Config{Certificates: []tls.Certificate{maaCert}}))
	}()
	t.Cleanup(func() { maaSrv.Close() })

	// The HTTP app in the server namespace, on every address, port 8080: it records the
	// headers it saw.
	var mu sync.Mutex
	var seen []http.Header
	appLn, err := listenIn(tp.server, "0.0.0.0:8080")
	if err != nil {
		t.Fatal(err)
	}
	app := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		fmt.Fprintf(w, "records app: %s %s", r.Method, r.URL.Path)
	})}
	go func() { _ = app.Serve(appLn) }()
	t.Cleanup(func() { app.Close() })
	// redis-server in the server namespace.
	startIn(t, tp.server, -1, "redis-server", "--port", "6379", "--bind", "0.0.0.0", "--save", "", "--appendonly", "no", "--dir", dir)

	mrFront, mrBack := strings.Repeat("a1", 32), strings.Repeat("b2", 32)
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("ca.pem", string(maaPEM))
	write("policy.yaml", fmt.Sprintf(`
issuers: [{url: %q, caFile: ca.pem}]
identities:
  front: {mrenclave: [%q], allowDebug: true}
  back:  {mrenclave: [%q], allowDebug: true}
`, maaURL, mrFront, mrBack))
	_ = os.Chmod(platformFile, 0o644) // the proxies run as their own UID
	common := func(id, mr string) string {
		return fmt.Sprintf(`
attester: {type: sim, simPlatformKey: platform.pem, simIdentity: {mrenclave: %q}}
attestationService: {url: %q, caFile: ca.pem}
policyFile: policy.yaml
identity: %s
admin: {listen: "127.0.0.1:9901"}
refresh: {minBackoff: 100ms, maxBackoff: 500ms}
limits: {shutdownTimeout: 2s}
`, mr, maaURL, id)
	}
	clientCfg := write("client.yaml", common("front", mrFront)+fmt.Sprintf(`
transparent:
  outbound:
    - {name: to-api, destination: "%[1]s:8080", protocol: http, upstreamIdentity: [back]}
    - {name: to-redis, destination: "%[1]s:6379", protocol: tcp, upstreamIdentity: [back]}
`, tp.serverIP))
	serverCfg := write("server.yaml", common("back", mrBack)+`
transparent:
  inbound:
    - {name: api, port: 8080, protocol: http, allow: [front]}
    - {name: redis, port: 6379, protocol: tcp, allow: [front]}
`)

	// The init container's step, in each namespace: the proxy binary's iptables subcommand,
	// as root with NET_ADMIN as its only capability (what the injector grants; iptables-nft
	// needs no NET_RAW). The client namespace also hosts the attestation service, reached
	// without the proxy.
	iptablesArgs := func(exclude string) []string {
		return []string{"iptables", "--proxy-uid", fmt.Sprint(proxyUID), "--inbound-port", "15006", "--outbound-port", "15001", "--exclude-inbound-ports", exclude}
	}
	if out, err := execInitStep(tp.client, bin, iptablesArgs(fmt.Sprintf("9901,%d", maaPort))...); err != nil {
		t.Fatalf("proxy iptables (client): %v\n%s", err, out)
	}
	if out, err := execInitStep(tp.server, bin, iptablesArgs("9901")...); err != nil {
		t.Fatalf("proxy iptables (server): %v\n%s", err, out)
	}
	// Running it again (a restarted init container) leaves one copy of the rules.
	if out, err := execInitStep(tp.server, bin, iptablesArgs("9901")...); err != nil {
		t.Fatalf("proxy iptables again: %v\n%s", err, out)
	}
	rules, _ := execIn(tp.server, -1, "iptables", "-t", "nat", "-S")
	if n := strings.Count(rules, "-A PREROUTING -p tcp -j CS_INBOUND"); n != 1 {
		t.Fatalf("after two runs, %d PREROUTING jumps:\n%s", n, rules)
	}
	t.Logf("server namespace nat rules:\n%s", rules)

	server := startIn(t, tp.server, proxyUID, bin, "run", "--config", serverCfg, "--log-level", "debug")
	client := startIn(t, tp.client, proxyUID, bin, "run", "--config", clientCfg, "--log-level", "debug")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server proxy logs:\n%s", server.logs.String())
			t.Logf("client proxy logs:\n%s", client.logs.String())
		}
	})
	for _, ns := range []string{tp.server, tp.client} {
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, err := execIn(ns, -1, "curl", "-sS", "-m", "2", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:9901/readyz")
			if err == nil && out == "200" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("proxy in %s never ready: %s %v", ns, out, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// 1. Unmodified curl, as the app's UID, to the server's plain address.
	out, err := execIn(tp.client, appUID, "curl", "-sS", "-m", "10", "-D", "-", "-H", chain.HeaderWantReceipt+": "+chain.ReceiptInline, fmt.Sprintf("http://%s:8080/records/7", tp.serverIP))
	if err != nil {
		t.Fatalf("curl through the interception: %v\n%s", err, out)
	}
	if !strings.Contains(out, "200 OK") || !strings.Contains(out, "records app: GET /records/7") {
		t.Fatalf("curl got:\n%s", out)
	}
	if !strings.Contains(strings.ToLower(out), strings.ToLower(chain.HeaderReceipt)+":") {
		t.Errorf("the answer carries no %s (the countersignature was not checked):\n%s", chain.HeaderReceipt, out)
	}
	mu.Lock()
	if len(seen) != 1 {
		t.Fatalf("the app saw %d requests, want 1", len(seen))
	}
	var sum httpproxy.Summary
	if err := json.Unmarshal([]byte(seen[0].Get(chain.HeaderVerified)), &sum); err != nil {
		t.Fatalf("%s header %q: %v", chain.HeaderVerified, seen[0].Get(chain.HeaderVerified), err)
	}
	mu.Unlock()
	if sum.Peer != "front" || len(sum.Hops) != 1 || sum.Hops[0].MREnclave != mrFront {
		t.Errorf("the app's verified summary: %+v, want peer front with mrenclave %s", sum, mrFront)
	}
	t.Logf("the app saw %s: %s", chain.HeaderVerified, seen[0].Get(chain.HeaderVerified))

	// 2. Unmodified redis-cli to the server's plain address.
	redis := func(uid int, args ...string) (string, error) {
		return execIn(tp.client, uid, "redis-cli", append([]string{"-h", tp.serverIP, "-p", "6379"}, args...)...)
	}
	if out, err := redis(appUID, "SET", "patient:1", "x-ray ok"); err != nil || strings.TrimSpace(out) != "OK" {
		t.Fatalf("redis-cli SET: %v %q", err, out)
	}
	if out, err := redis(appUID, "GET", "patient:1"); err != nil || strings.TrimSpace(out) != "x-ray ok" {
		t.Fatalf("redis-cli GET: %v %q", err, out)
	}

	// 3. Bypass: a client that is not redirected (it runs as the proxy's UID) reaches the
	// server namespace in plaintext. The server's interception sends it to the attested
	// inbound listener, which refuses it; the app sees nothing.
	// (Go's TLS server answers a plaintext request with a bare 400; the app never sees it.)
	out, _ = execIn(tp.client, proxyUID, "curl", "-sS", "-m", "5", "-w", "\nstatus=%{http_code}", fmt.Sprintf("http://%s:8080/records/7", tp.serverIP))
	if strings.Contains(out, "records app") || strings.Contains(out, "status=200") {
		t.Errorf("a plaintext request bypassing the client's proxy reached the app: %s", out)
	}
	t.Logf("bypass attempt got: %q", out)
	if out, _ := redis(proxyUID, "GET", "patient:1"); strings.Contains(out, "x-ray") {
		t.Errorf("plaintext redis bypassing the client's proxy read the data: %q", out)
	}
	// The server's inbound interception listener addressed directly: no original
	// destination to route by, refused.
	if out, err := execIn(tp.client, proxyUID, "curl", "-sS", "-m", "5", fmt.Sprintf("http://%s:15006/", tp.serverIP)); err == nil {
		t.Errorf("the inbound interception listener answered a direct request: %s", out)
	}
	mu.Lock()
	if len(seen) != 1 {
		t.Errorf("the app saw %d requests after the bypass attempts, want still 1", len(seen))
	}
	mu.Unlock()
	// A destination with no route from the client side is refused (fail closed), not
	// passed through.
	if out, err := execIn(tp.client, appUID, "curl", "-sS", "-m", "5", fmt.Sprintf("http://%s:9999/", tp.serverIP)); err == nil {
		t.Errorf("an unrouted destination was reachable: %s", out)
	}

	// 3b. IPv6 does not bypass the proxies. The init step installed the same interception
	// for ip6tables (the namespaces have IPv6: loopback's ::1). The app's listener above is
	// dual-stack (Go listens on [::] for 0.0.0.0 when it can), so without those rules both
	// attempts below would reach it over IPv6.
	if v6, _ := execIn(tp.server, -1, "ip6tables", "-t", "nat", "-S"); !strings.Contains(v6, "-A OUTPUT -p tcp -j CS_OUTBOUND") || !strings.Contains(v6, "-A PREROUTING -p tcp -j CS_INBOUND") {
		t.Errorf("no IPv6 interception rules in the server namespace:\n%s", v6)
	}
	run(t, "ip", "-n", tp.client, "addr", "add", "fd00:c5::1/64", "dev", tp.clientVeth, "nodad")
	run(t, "ip", "-n", tp.server, "addr", "add", "fd00:c5::2/64", "dev", tp.serverVeth, "nodad")
	// The app's outbound IPv6 connection: redirected to the outbound interception port on
	// ::1, where nothing listens (the outbound listener is 127.0.0.1): refused.
	if out, err := execIn(tp.client, appUID, "curl", "-sS", "-f", "-m", "5", "http://[fd00:c5::2]:8080/records/7"); err == nil {
		t.Errorf("the app reached an IPv6 address around its proxy: %s", out)
	}
	// A plaintext IPv6 client not redirected on its side (the proxy's UID): the server's
	// rules hand it to its proxy, which wants attested TLS.
	if out, err := execIn(tp.client, proxyUID, "curl", "-sS", "-f", "-m", "5", "http://[fd00:c5::2]:8080/records/7"); err == nil {
		t.Errorf("an IPv6 client reached the server's app around its proxy: %s", out)
	}
	mu.Lock()
	if len(seen) != 1 {
		t.Errorf("the app saw %d requests after the IPv6 attempts, want still 1", len(seen))
	}
	mu.Unlock()

	// 4. What the proxies say: the server's metrics count the handshakes it refused, and the
	// client's its unrouted connection.
	metrics := func(ns string) string {
		out, err := execIn(ns, -1, "curl", "-sS", "-m", "5", "http://127.0.0.1:9901/metrics")
		if err != nil {
			t.Fatalf("metrics: %v %s", err, out)
		}
		return out
	}
	cm := metrics(tp.client)
	if !strings.Contains(cm, `countersign_rejections_total{listener="transparent-outbound",reason="no_route"} 1`) {
		t.Errorf("client metrics lack the no_route rejection:\n%s", grep(cm, "countersign_"))
	}
	sm := metrics(tp.server)
	t.Logf("server proxy metrics:\n%s", grep(sm, "countersign_"))
	if !strings.Contains(server.logs.String(), "no original destination") {
		t.Errorf("the server proxy did not log the direct connection to its interception listener")
	}

	// 5. Removal is idempotent and tolerates an address family without our chains: in the
	// client namespace, the IPv6 rules are deleted by hand first (as on a pod whose init
	// step predates IPv6 interception), then `proxy iptables --remove` runs twice.
	for _, args := range [][]string{
		{"-t", "nat", "-D", "PREROUTING", "-p", "tcp", "-j", transparent.ChainInbound},
		{"-t", "nat", "-D", "OUTPUT", "-p", "tcp", "-j", transparent.ChainOutbound},
		{"-t", "nat", "-F"}, {"-t", "nat", "-X"},
	} {
		if out, err := execIn(tp.client, -1, "ip6tables", args...); err != nil {
			t.Fatalf("ip6tables %v: %v %s", args, err, out)
		}
	}
	removeArgs := append(iptablesArgs(fmt.Sprintf("9901,%d", maaPort)), "--remove")
	out1, err := execInitStep(tp.client, bin, removeArgs...)
	if err != nil {
		t.Fatalf("proxy iptables --remove without IPv6 chains: %v\n%s", err, out1)
	}
	out2, err := execInitStep(tp.client, bin, removeArgs...)
	if err != nil {
		t.Fatalf("proxy iptables --remove a second time: %v\n%s", err, out2)
	}
	if !strings.Contains(out1, "IPv4 interception removed") || !strings.Contains(out1, "IPv6 interception not present") ||
		!strings.Contains(out2, "IPv4 interception not present") {
		t.Errorf("removal messages:\n%s\n---\n%s", out1, out2)
	}
	for _, tool := range []string{"iptables", "ip6tables"} {
		if rules, _ := execIn(tp.client, -1, tool, "-t", "nat", "-S"); strings.Contains(rules, "CS_") {
			t.Errorf("%s rules left after removal:\n%s", tool, rules)
		}
	}
}

func grep(s, substr string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) && !strings.HasPrefix(l, "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
