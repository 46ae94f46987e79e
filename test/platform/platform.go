// Package platform starts the whole healthcare demo as real processes on loopback, the way
// scripts/demo.sh does: the local attestation service, redis-server (AOF, appendfsync always)
// behind a proxy pair, the inference server behind its proxy, and the records API behind its
// proxy (a public HTTPS listener for browsers, outbound TCP to Redis, outbound HTTP to the
// inference server). Tests in this directory use it.
package platform

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"github.com/countersign/countersign/internal/testbin"
	"github.com/countersign/countersign/internal/testnet"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Simulated measurements of the demo's enclaves (MRENCLAVE of each sidecar).
var (
	MRRecords   = strings.Repeat("a1", 32)
	MRInference = strings.Repeat("b2", 32)
	MRRedis     = strings.Repeat("c3", 32)
)

// RepoRoot is the repository root.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// Binaries builds the four binaries once per test process and returns their directory.
func Binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "countersign-platform-bin-")
		if buildErr != nil {
			return
		}
		buildErr = testbin.Link(binDir, map[string]string{
			"attestation-service": "./attestation/cmd/attestation-service",
			"proxy":               "./proxy/cmd/proxy",
			"inference-server":    "./inference-server/cmd/inference-server",
			"records":             "./sample-apps/records/cmd/records",
		})
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// Require fails (or skips under -short) when a program the platform needs is missing.
func Require(t testing.TB, progs ...string) {
	t.Helper()
	for _, p := range progs {
		if _, err := exec.LookPath(p); err != nil {
			if testing.Short() {
				t.Skipf("%s not installed (-short)", p)
			}
			t.Fatalf("%s is not installed: the platform tests need it (Debian: apt-get install $(cat scripts/deps.d/platform.txt), or scripts/install-deps.sh)", p)
		}
	}
}

// ORTLib returns the ONNX Runtime library path, failing with how to fetch it.
func ORTLib(t testing.TB) string {
	t.Helper()
	p := os.Getenv("ONNXRUNTIME_LIB")
	if p == "" {
		c := os.Getenv("COUNTERSIGN_CACHE")
		if c == "" {
			c = filepath.Join(RepoRoot(), ".cache")
		}
		p = filepath.Join(c, "onnxruntime", "1.24.1", "libonnxruntime.so.1")
	}
	if _, err := os.Stat(p); err != nil {
		if testing.Short() {
			t.Skipf("ONNX Runtime library not found at %s (-short)", p)
		}
		t.Fatalf("ONNX Runtime library not found at %s: run `make onnxruntime` (or set ONNXRUNTIME_LIB)", p)
	}
	return p
}

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// Proc is a started process that can be killed and restarted with the same arguments.
type Proc struct {
	t    testing.TB
	Name string
	Path string
	Args []string
	Log  string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts (or restarts) the process, appending to its log.
func (p *Proc) Start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		p.t.Fatal(err)
	}
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Dir = RepoRoot()
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		p.t.Fatalf("start %s: %v", p.Name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); f.Close(); close(done) }()
	p.cmd, p.done = cmd, done
}

// Kill9 kills the process with SIGKILL and waits for it.
func (p *Proc) Kill9() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Stop sends SIGTERM and waits (SIGKILL after 10 s).
func (p *Proc) Stop() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}
}

// Platform is the running demo.
type Platform struct {
	t   testing.TB
	Dir string
	Bin string

	Issuer      string // https://127.0.0.1:port of the local attestation service
	CAFile      string // its TLS CA
	Policy      string // the demo policy
	PortalURL   string // https://127.0.0.1:port/ (the records sidecar's public listener)
	PortalCert  *x509.Certificate
	WellKnown   string // the records sidecar's /.well-known/attestation
	RecordsAddr string // the records app itself (plain HTTP, loopback)
	RedisAddr   string // redis-server itself

	Procs map[string]*Proc
	order []string
}

// Start runs every process and waits until all are ready.
// Options vary the platform.
type Options struct {
	// InferenceGRPC makes the records API call the inference server over gRPC (the OIP v2
	// GRPCInferenceService) through a grpc listener pair of the two sidecars, instead of REST.
	InferenceGRPC bool
}

// Start starts the platform with the default options (the records API calls the inference
// server over REST).
func Start(t testing.TB) *Platform {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith starts the platform.
func StartWith(t testing.TB, o Options) *Platform {
	t.Helper()
	Require(t, "redis-server", "redis-cli")
	lib := ORTLib(t)
	bin := Binaries(t)
	dir := t.TempDir()
	p := &Platform{t: t, Dir: dir, Bin: bin, Procs: map[string]*Proc{}}
	t.Cleanup(p.stopAll)

	port := func() int { return testnet.FreePort(t) }
	attestPort, redisPort, redisProxyPort := port(), port(), port()
	inferPort, inferProxyPort, recordsPort := port(), port(), port()
	publicPort, recRedisOut, recInferOut := port(), port(), port()
	inferGRPCPort, inferGRPCProxyPort, recInferGRPCOut := port(), port(), port()
	adminRecords, adminInfer, adminRedis, adminApp := port(), port(), port(), port()

	run(t, filepath.Join(bin, "proxy"), "sim-platform-key", "--out", filepath.Join(dir, "platform.pem"))
	p.Issuer = "https://" + addr(attestPort)
	p.CAFile = filepath.Join(dir, "ca.pem")
	p.start("attestation-service", filepath.Join(bin, "attestation-service"),
		"--listen", addr(attestPort), "--issuer", p.Issuer,
		"--signing-key", filepath.Join(dir, "signing.pem"), "--signing-cert", filepath.Join(dir, "signing-cert.pem"),
		"--tls-ca-out", p.CAFile, "--sim-platform-key", filepath.Join(dir, "platform.pem.pub"))
	// The service listens before it writes its CA file, so wait for the file (written
	// atomically) rather than the port: a client built before it exists trusts nothing.
	p.waitFile("attestation-service", p.CAFile)
	p.waitHTTP("attestation-service", p.Issuer+"/certs", p.tlsClient(p.CAFile))

	p.Policy = filepath.Join(dir, "policy.yaml")
	write(t, p.Policy, fmt.Sprintf(`# Development policy: the local attestation service, simulated (debuggable) enclaves.
issuers:
  - url: %s
    caFile: ca.pem
identities:
  records-api: {mrenclave: ["%s"], allowDebug: true}
  inference:   {mrenclave: ["%s"], allowDebug: true}
  redis:       {mrenclave: ["%s"], allowDebug: true}
`, p.Issuer, MRRecords, MRInference, MRRedis))

	// Redis: every acknowledged write is fsynced to the append-only file first.
	p.RedisAddr = addr(redisPort)
	if err := os.MkdirAll(filepath.Join(dir, "redis"), 0o700); err != nil {
		t.Fatal(err)
	}
	p.start("redis-server", "redis-server", "--bind", "127.0.0.1", "--port", strconv.Itoa(redisPort),
		"--dir", filepath.Join(dir, "redis"), "--appendonly", "yes", "--appendfsync", "always", "--save", "")
	p.waitTCP("redis-server", p.RedisAddr)

	p.proxy("redis-proxy", "redis", MRRedis, adminRedis, fmt.Sprintf(`inbound:
  - {name: redis, listen: "%s", protocol: tcp, forwardTo: "%s", allow: [records-api]}
`, addr(redisProxyPort), p.RedisAddr))

	p.start("inference-server", filepath.Join(bin, "inference-server"), "--listen", addr(inferPort),
		"--grpc-listen", addr(inferGRPCPort),
		"--model-repository", filepath.Join(RepoRoot(), "inference-server", "models"), "--onnxruntime-lib", lib)
	p.waitHTTP("inference-server", "http://"+addr(inferPort)+"/v2/health/ready", http.DefaultClient)
	p.waitTCP("inference-server", addr(inferGRPCPort))
	// The inference sidecar fronts both APIs: REST (http) and gRPC (grpc: h2 between the proxies).
	p.proxy("inference-proxy", "inference", MRInference, adminInfer, fmt.Sprintf(`inbound:
  - {name: oip, listen: "%s", protocol: http, forwardTo: "%s", allow: [records-api]}
  - {name: oip-grpc, listen: "%s", protocol: grpc, forwardTo: "%s", allow: [records-api]}
`, addr(inferProxyPort), addr(inferPort), addr(inferGRPCProxyPort), addr(inferGRPCPort)))

	// The records sidecar: public HTTPS for browsers, outbound to Redis and the inference server.
	certFile, keyFile := filepath.Join(dir, "portal-cert.pem"), filepath.Join(dir, "portal-key.pem")
	p.PortalCert = selfSigned(t, certFile, keyFile)
	p.RecordsAddr = addr(recordsPort)
	p.proxy("records-proxy", "records-api", MRRecords, adminRecords, fmt.Sprintf(`inbound:
  - {name: portal, listen: "%s", protocol: http, forwardTo: "%s", public: true, certFile: portal-cert.pem, keyFile: portal-key.pem}
outbound:
  - {name: redis, listen: "%s", protocol: tcp, upstream: "%s", upstreamIdentity: [redis]}
  - {name: inference, listen: "%s", protocol: http, upstream: "%s", upstreamIdentity: [inference], authority: inference}
  - {name: inference-grpc, listen: "%s", protocol: grpc, upstream: "%s", upstreamIdentity: [inference], authority: inference}
`, addr(publicPort), p.RecordsAddr, addr(recRedisOut), addr(redisProxyPort), addr(recInferOut), addr(inferProxyPort), addr(recInferGRPCOut), addr(inferGRPCProxyPort)))
	p.PortalURL = "https://" + addr(publicPort) + "/"
	p.WellKnown = "http://" + addr(adminRecords) + "/.well-known/attestation"

	cfg := map[string]any{
		"attestationURL": p.WellKnown,
		"issuers":        []map[string]string{{"url": p.Issuer, "certsURL": p.Issuer + "/certs"}},
		"identities": map[string]any{
			"records-api": map[string]any{"mrenclave": []string{MRRecords}},
			"inference":   map[string]any{"mrenclave": []string{MRInference}},
		},
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	write(t, filepath.Join(dir, "portal-config.json"), string(b))
	args := []string{"--listen", p.RecordsAddr, "--admin-listen", addr(adminApp),
		"--redis-addr", addr(recRedisOut), "--inference-url", "http://" + addr(recInferOut),
		"--portal-dir", filepath.Join(RepoRoot(), "sample-apps", "portal"), "--portal-config", filepath.Join(dir, "portal-config.json")}
	if o.InferenceGRPC {
		args = append(args, "--inference-protocol", "grpc", "--inference-grpc-addr", addr(recInferGRPCOut))
	}
	p.start("records", filepath.Join(bin, "records"), args...)
	p.waitHTTP("records", "http://"+addr(adminApp)+"/readyz", http.DefaultClient)
	return p
}

func (p *Platform) start(name, path string, args ...string) *Proc {
	pr := &Proc{
		t:    p.t,
		Name: name,
		Path: path,
		Args: args,
		Log:  filepath.Join(p.Dir, name+".log"),
	}
	pr.Start()
	p.Procs[name] = pr
	p.order = append(p.order, name)
	return pr
}

func (p *Platform) proxy(name, identity, mr string, adminPort int, listeners string) {
	cfg := fmt.Sprintf(`# %s's sidecar
attester: {type: sim, simPlatformKey: platform.pem, simIdentity: {mrenclave: "%s"}}
attestationService: {url: "%s", caFile: ca.pem}
policyFile: policy.yaml
identity: %s
admin: {listen: "%s"}
limits: {shutdownTimeout: 2s}
%s`, identity, mr, p.Issuer, identity, addr(adminPort), listeners)
	f := filepath.Join(p.Dir, name+".yaml")
	write(p.t, f, cfg)
	p.start(name, filepath.Join(p.Bin, "proxy"), "run", "--config", f)
	p.waitHTTP(name, "http://"+addr(adminPort)+"/readyz", http.DefaultClient)
}

// stopAll stops every process in reverse order and, if the test failed, prints their logs.
func (p *Platform) stopAll() {
	for i := len(p.order) - 1; i >= 0; i-- {
		p.Procs[p.order[i]].Stop()
	}
	if tt, ok := p.t.(*testing.T); ok && tt.Failed() {
		p.DumpLogs()
	}
}

// DumpLogs logs the tail of every process's log.
func (p *Platform) DumpLogs() {
	for _, n := range p.order {
		b, _ := os.ReadFile(p.Procs[n].Log)
		s := string(b)
		if len(s) > 4000 {
			s = "…" + s[len(s)-4000:]
		}
		p.t.Logf("--- %s log ---\n%s", n, s)
	}
}

func (p *Platform) tlsClient(caFile string) *http.Client {
	pool := x509.NewCertPool()
	b, err := os.ReadFile(caFile)
	if err != nil || !pool.AppendCertsFromPEM(b) {
		p.t.Fatalf("CA file %s: no certificate in it (%v)", caFile, err)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// Client returns an HTTP client that trusts the portal's certificate.
func (p *Platform) Client() *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(p.PortalCert)
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func (p *Platform) waitHTTP(name, url string, c *http.Client) {
	p.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	pr := p.Procs[name]
	for {
		if pr != nil {
			select {
			case <-pr.done:
				p.DumpLogs()
				p.t.Fatalf("%s exited before it became ready (log above)", name)
			default:
			}
		}
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			p.DumpLogs()
			p.t.Fatalf("%s did not become ready at %s: %v", name, url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *Platform) waitTCP(name, a string) {
	p.t.Helper()
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", a); err == nil {
			c.Close()
			return
		}
		if i > 300 {
			p.DumpLogs()
			p.t.Fatalf("%s did not listen on %s", name, a)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFile waits until path exists.
func (p *Platform) waitFile(name, path string) {
	p.t.Helper()
	for i := 0; ; i++ {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if i > 600 {
			p.DumpLogs()
			p.t.Fatalf("%s did not write %s", name, path)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitTCP waits until a accepts connections.
func (p *Platform) WaitTCP(name, a string) { p.waitTCP(name, a) }

// SPKIHash returns base64(SHA-256(SPKI)) of the leaf certificate served at addr (for
// Chromium's --ignore-certificate-errors-spki-list).
func SPKIHash(t testing.TB, hostport string) string {
	t.Helper()
	c, err := tls.Dial("tcp", hostport, &tls.Config{InsecureSkipVerify: true}) // only to read the certificate
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h := sha256.Sum256(c.ConnectionState().PeerCertificates[0].RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(h[:])
}

func run(t testing.TB, path string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, path, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", filepath.Base(path), args, err, out)
	}
}

func write(t testing.TB, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// selfSigned writes an ordinary (not attested) certificate for the public listener.
func selfSigned(t testing.TB, certFile, keyFile string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "healthcare demo portal"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalPKCS8PrivateKey(key)
	write(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	write(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})))
	c, _ := x509.ParseCertificate(der)
	return c
}
