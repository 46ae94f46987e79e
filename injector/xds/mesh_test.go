package xds_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/testproxy"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/countersign/countersign/attestation/service"
	"github.com/countersign/countersign/injector/xds"
	"github.com/countersign/countersign/internal/testservice"
	"github.com/countersign/countersign/proxy/config"
	"github.com/countersign/countersign/proxy/server"
	"github.com/countersign/countersign/proxy/xdsclient"
)

var (
	mrFront = strings.Repeat("a1", 32)
	mrBack  = strings.Repeat("b2", 32)
	mrRogue = strings.Repeat("c3", 32)
)

// pki is a CA with a server certificate for 127.0.0.1 and a client certificate, on disk.
type pki struct {
	dir                       string
	caFile, certFile, keyFile string
	serverTLS                 *tls.Config
	ca                        *x509.Certificate
	caKey                     *ecdsa.PrivateKey
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	var err error
	p.caKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "countersign test control-plane CA"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &p.caKey.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	p.ca, _ = x509.ParseCertificate(der)
	p.caFile = filepath.Join(p.dir, "ca.pem")
	os.WriteFile(p.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	srv := p.issue(t, "xds.test", x509.ExtKeyUsageServerAuth)
	p.certFile, p.keyFile = p.write(t, "client", p.issue(t, "proxy-front", x509.ExtKeyUsageClientAuth))
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	p.serverTLS = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{srv}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	return p
}

func (p *pki) issue(t *testing.T, cn string, usage x509.ExtKeyUsage) tls.Certificate {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: n,
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{cn},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &k.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}

func (p *pki) write(t *testing.T, name string, c tls.Certificate) (string, string) {
	kb, _ := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	cf, kf := filepath.Join(p.dir, name+".crt"), filepath.Join(p.dir, name+".key")
	os.WriteFile(cf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600)
	os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600)
	return cf, kf
}

type meshEnv struct {
	t      *testing.T
	svc    *testservice.Service
	policy string
	// host is where back proxies listen and what EndpointSlices list: "localhost" (an FQDN
	// slice) with the fake API; with the real API server, which refuses loopback IPs and
	// single-label names in EndpointSlices, a private address inside the test's own network
	// namespace (see apiserver_test.go).
	host string
	// xds, when set, subscribes the back proxies to the control plane (NodeID their name).
	xds *config.XDS
}

func newMeshEnv(t *testing.T) *meshEnv {
	s := testservice.Start(t, func(c *service.Config) { c.TokenLifetime = time.Hour })
	e := &meshEnv{t: t, svc: s, policy: filepath.Join(t.TempDir(), "policy.yaml")}
	os.WriteFile(e.policy, []byte(fmt.Sprintf(`
issuers: [{url: %q, caFile: %q}]
clockSkew: 1s
identities:
  front: {mrenclave: [%q], allowDebug: true}
  back:  {mrenclave: [%q, %q], allowDebug: true}
  rogue: {mrenclave: [%q], allowDebug: true}
`, s.URL, s.CAFile, mrFront, mrBack, strings.Repeat("e5", 32), mrRogue)), 0o600)
	return e
}

func (e *meshEnv) cfg(id, mr string) *config.Config {
	m, err := config.ParseMeasurement(mr)
	if err != nil {
		panic(err)
	}
	return &config.Config{
		Attester:           config.Attester{Type: "sim", SimPlatformKey: e.svc.PlatformKeyFile, SimIdentity: config.SimIdentity{MREnclave: m}},
		AttestationService: config.AttestationService{URL: e.svc.URL, CAFile: e.svc.CAFile},
		PolicyFile:         e.policy,
		Identity:           id,
		Admin:              config.Admin{Listen: "127.0.0.1:0"},
		Refresh:            config.Refresh{MinBackoff: config.Duration(100 * time.Millisecond), MaxBackoff: config.Duration(300 * time.Millisecond)},
		Limits:             config.Limits{ShutdownTimeout: config.Duration(2 * time.Second)},
	}
}

func (e *meshEnv) start(c *config.Config) (*server.Server, *testproxy.Logs) {
	e.t.Helper()
	return testproxy.Start(e.t, c)
}

// backend is a back proxy in front of an app that answers with the backend's name, and a
// TCP echo app.
type backend struct {
	name     string
	httpPort int32
	tcpPort  int32
	srv      *server.Server
}

func port(addr string) int32 {
	_, p, _ := net.SplitHostPort(addr)
	var n int32
	fmt.Sscan(p, &n)
	return n
}

func (e *meshEnv) backend(name string) backend {
	t := e.t
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, name) }))
	t.Cleanup(app.Close)
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	c := e.cfg("back", mrBack)
	// The pinned floor lets front and rogue call; the control plane may narrow that.
	c.Inbound = []config.Inbound{
		{
			Name:      "api",
			Listen:    e.listenHost() + ":0",
			Protocol:  "http",
			ForwardTo: strings.TrimPrefix(app.URL, "http://"),
			Allow:     []string{"front", "rogue"},
		},
		{
			Name:      "echo",
			Listen:    e.listenHost() + ":0",
			Protocol:  "tcp",
			ForwardTo: echo.Addr().String(),
			Allow:     []string{"front", "rogue"},
		},
	}
	if e.xds != nil {
		x := *e.xds
		x.NodeID = name
		c.XDS = &x
	}
	s, _ := e.start(c)
	return backend{name: name, httpPort: port(s.Addr("api")), tcpPort: port(s.Addr("echo")), srv: s}
}

func ptr[T any](v T) *T { return &v }

func (e *meshEnv) listenHost() string {
	if e.host == "localhost" {
		return "127.0.0.1"
	}
	return e.host
}

const ns = "records"

func svcObj(name string, annotations map[string]string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: annotations},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP},
			{Name: "echo", Port: 7000, Protocol: corev1.ProtocolTCP},
		}},
	}
}

// slice lists the back proxy b as the service's endpoint ("localhost": the API server refuses
// loopback IPs in EndpointSlices, and FQDN slices are valid).
func (e *meshEnv) slice(svc, name string, b backend) *discoveryv1.EndpointSlice {
	at := discoveryv1.AddressTypeIPv4
	if e.host == "localhost" {
		at = discoveryv1.AddressTypeFQDN
	}
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: at,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{e.host}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}}},
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr("http"), Port: ptr(b.httpPort), Protocol: ptr(corev1.ProtocolTCP)},
			{Name: ptr("echo"), Port: ptr(b.tcpPort), Protocol: ptr(corev1.ProtocolTCP)},
		},
	}
}

const clusterHTTP = ns + "/records:http"

// endpoints of the cluster in front's current state, sorted.
func endpointsOf(s *server.Server, cluster string) []string {
	cl := s.XDS().State().Cluster(cluster)
	if cl == nil {
		return nil
	}
	return slices.Clone(cl.Endpoints)
}

// waitApplied polls front's xDS state (every 200µs) until cond holds and returns how long it
// took from since.
func waitApplied(t *testing.T, since time.Time, what string, cond func() bool) time.Duration {
	t.Helper()
	deadline := since.Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never applied: %s", what)
		}
		time.Sleep(200 * time.Microsecond)
	}
	return time.Since(since)
}

func get(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func metricValue(t *testing.T, s *server.Server, name string, labels map[string]string) float64 {
	mfs, err := s.Metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			sum += value(m)
		}
	}
	return sum
}

func value(m *dto.Metric) float64 {
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// runConformance is the xDS conformance scenario against an API server reached through
// client (the real kube-apiserver harness, or a fake where it is unavailable).
func runConformance(t *testing.T, client kubernetes.Interface, host string) {
	ctx := context.Background()
	e := newMeshEnv(t)
	e.host = host
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	p := newPKI(t)
	var nackMu sync.Mutex
	var nacks []string
	cpCtx, stopCP := context.WithCancel(ctx)
	cpLogs := &testproxy.Logs{}
	cp, err := xds.New(xds.Config{
		Listen:    "127.0.0.1:0",
		TLS:       p.serverTLS,
		Client:    client,
		Namespace: ns,
		Debounce:  5 * time.Millisecond,
		Logger:    slog.New(slog.NewTextHandler(cpLogs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		OnNack: func(node, typeURL, reason string) {
			nackMu.Lock()
			nacks = append(nacks, node+" "+typeURL+": "+reason)
			nackMu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	cpDone := make(chan error, 1)
	go func() { cpDone <- cp.Run(cpCtx) }()
	t.Cleanup(func() {
		stopCP()
		<-cpDone
		if t.Failed() {
			t.Logf("control plane logs:\n%s", cpLogs.String())
		}
	})

	// The back proxies subscribe too, with no upstream identities: the control plane can only
	// narrow who may call them.
	e.xds = &config.XDS{
		Server:     cp.Addr(),
		ServerName: "xds.test",
		CAFile:     p.caFile,
		CertFile:   p.certFile,
		KeyFile:    p.keyFile,
		MinBackoff: config.Duration(50 * time.Millisecond),
		MaxBackoff: config.Duration(200 * time.Millisecond),
	}
	backs := []backend{e.backend("back-1"), e.backend("back-2"), e.backend("back-3")}
	fc := e.cfg("front", mrFront)
	fc.XDS = &config.XDS{
		Server:             cp.Addr(),
		ServerName:         "xds.test",
		CAFile:             p.caFile,
		CertFile:           p.certFile,
		KeyFile:            p.keyFile,
		UpstreamIdentities: []string{"back"},
		MinBackoff:         config.Duration(50 * time.Millisecond),
		MaxBackoff:         config.Duration(200 * time.Millisecond),
	}
	fc.Outbound = []config.Outbound{
		{
			Name:             "api",
			Listen:           "127.0.0.1:0",
			Protocol:         "http",
			Cluster:          clusterHTTP,
			UpstreamIdentity: []string{"back"},
		},
		{
			Name:             "echo",
			Listen:           "127.0.0.1:0",
			Protocol:         "tcp",
			Cluster:          ns + "/records:echo",
			UpstreamIdentity: []string{"back"},
		},
	}
	front, frontLogs := e.start(fc)
	api := "http://" + front.Addr("api") + "/records/1"
	want := func(b backend) []string { return []string{net.JoinHostPort(host, fmt.Sprint(b.httpPort))} }
	var latencies []time.Duration

	// Before anything exists: no cluster, refused with a reason.
	if code, body, _ := get(api); code != http.StatusServiceUnavailable || !strings.Contains(body, "no_endpoints") {
		t.Fatalf("before the service exists: %d %s", code, body)
	}

	// 1. Create a Service and its EndpointSlice: front picks them up.
	t0 := time.Now()
	if _, err := client.CoreV1().Services(ns).Create(ctx, svcObj("records", map[string]string{xds.AnnotationUpstreamIdentity: "back"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.DiscoveryV1().EndpointSlices(ns).Create(ctx, e.slice("records", "records-a", backs[0]), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	d := waitApplied(t, t0, "create", func() bool { return slices.Equal(endpointsOf(front, clusterHTTP), want(backs[0])) })
	latencies = append(latencies, d)
	t.Logf("create: applied %v after the API calls", d)
	if code, body, err := get(api); err != nil || code != 200 || body != "back-1" {
		t.Fatalf("after create: %d %q %v", code, body, err)
	}

	// A TCP stream opened now must survive every change below.
	stream, err := net.Dial("tcp", front.Addr("echo"))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	sr := bufio.NewReader(stream)
	echoOnce := func(i int) {
		t.Helper()
		msg := fmt.Sprintf("ping %d\n", i)
		stream.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(stream, msg); err != nil {
			t.Fatalf("the TCP stream broke (write): %v", err)
		}
		if got, err := sr.ReadString('\n'); err != nil || got != msg {
			t.Fatalf("the TCP stream broke: %q %v", got, err)
		}
	}
	echoOnce(0)

	// 2. Change: the endpoint moves to back-2.
	t0 = time.Now()
	if _, err := client.DiscoveryV1().EndpointSlices(ns).Update(ctx, e.slice("records", "records-a", backs[1]), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	d = waitApplied(t, t0, "move", func() bool { return slices.Equal(endpointsOf(front, clusterHTTP), want(backs[1])) })
	latencies = append(latencies, d)
	if code, body, _ := get(api); code != 200 || body != "back-2" {
		t.Fatalf("after the move: %d %q", code, body)
	}
	echoOnce(1)

	// 3. Narrow: pin one of back's two builds. Accepted (a subset of the floor).
	narrowed := map[string]string{xds.AnnotationUpstreamIdentity: "back", xds.AnnotationNarrow: fmt.Sprintf(`{"back":{"mrenclave":[%q],"allowDebug":true}}`, mrBack)}
	t0 = time.Now()
	if _, err := client.CoreV1().Services(ns).Update(ctx, svcObj("records", narrowed), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, t0, "narrowing", func() bool {
		cl := front.XDS().State().Cluster(clusterHTTP)
		return cl != nil && cl.Engine != front.Engine && len(cl.Engine.Policy.Identities["back"].MREnclave) == 1
	})
	if code, body, _ := get(api); code != 200 || body != "back-2" {
		t.Fatalf("after narrowing: %d %q", code, body)
	}

	// 4. A bad resource: the control plane pushes a policy that would widen the floor (a
	// build the pinned policy does not know). front NACKs it with the reason, keeps its last
	// good configuration and keeps serving.
	before := front.XDS().State()
	widened := map[string]string{xds.AnnotationUpstreamIdentity: "back", xds.AnnotationNarrow: fmt.Sprintf(`{"back":{"mrenclave":[%q]}}`, mrRogue)}
	if _, err := client.CoreV1().Services(ns).Update(ctx, svcObj("records", widened), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, time.Now(), "NACK", func() bool {
		return metricValue(t, front, "countersign_xds_updates_total", map[string]string{"type": "Cluster", "result": "widening"}) >= 1
	})
	// The rejected version is not sent again (go-control-plane's cache would resend it at once,
	// in a loop, without the control plane's NACK handling): one rejection, then quiet.
	time.Sleep(300 * time.Millisecond)
	if n := metricValue(t, front, "countersign_xds_updates_total", map[string]string{"type": "Cluster", "result": "widening"}); n != 1 {
		t.Errorf("front rejected %v Cluster responses for one bad push, want 1 (the rejected version was resent)", n)
	}
	waitApplied(t, time.Now(), "NACK reaches the control plane", func() bool {
		nackMu.Lock()
		defer nackMu.Unlock()
		return len(nacks) > 0
	})
	nackMu.Lock()
	t.Logf("control plane saw: %s", nacks[0])
	if !strings.Contains(nacks[0], "widens the policy floor") || !strings.Contains(nacks[0], "narrow.back.mrenclave[0]") {
		t.Errorf("NACK reason %q does not say what widened", nacks[0])
	}
	nackMu.Unlock()
	if after := front.XDS().State(); after.Cluster(clusterHTTP) != before.Cluster(clusterHTTP) {
		t.Error("front changed its cluster after a rejected push")
	}
	if code, body, _ := get(api); code != 200 || body != "back-2" {
		t.Fatalf("after the NACK: %d %q", code, body)
	}
	if !strings.Contains(frontLogs.String(), "widens_floor=true") {
		t.Error("front did not log the widening")
	}
	// A pushed identity outside the listener's floor is refused the same way.
	if _, err := client.CoreV1().Services(ns).Update(ctx, svcObj("records", map[string]string{xds.AnnotationUpstreamIdentity: "back,rogue"}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, time.Now(), "second NACK", func() bool {
		return metricValue(t, front, "countersign_xds_updates_total", map[string]string{"type": "Cluster", "result": "widening"}) >= 2
	})
	// Fixed: accepted again.
	if _, err := client.CoreV1().Services(ns).Update(ctx, svcObj("records", map[string]string{xds.AnnotationUpstreamIdentity: "back"}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, time.Now(), "recovery", func() bool {
		cl := front.XDS().State().Cluster(clusterHTTP)
		return cl != nil && cl.Engine == front.Engine
	})

	// 5. 100 endpoint changes under load: no failed request, the TCP stream stays up.
	var ok, failed atomic.Int64
	var failMu sync.Mutex
	var failures []string
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	hc := &http.Client{Timeout: 10 * time.Second}
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for loadCtx.Err() == nil {
				resp, err := hc.Get(api)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode != 200 {
					failed.Add(1)
					failMu.Lock()
					if len(failures) < 5 {
						if err != nil {
							failures = append(failures, err.Error())
						} else {
							failures = append(failures, fmt.Sprintf("status %d %s", resp.StatusCode, resp.Header.Get("Countersign-Reject")))
						}
					}
					failMu.Unlock()
					continue
				}
				ok.Add(1)
			}
		}()
	}
	// The back proxies' views (no clusters; no inbound listener without countersign.dev/allow)
	// do not change with the endpoints: they are not sent anything during the changes.
	backAcks := func() float64 {
		return metricValue(t, backs[1].srv, "countersign_xds_updates_total", map[string]string{"result": "ack"})
	}
	acks0 := backAcks()
	if acks0 == 0 {
		t.Error("back-2 has accepted nothing: a proxy with an empty view was never answered")
	}
	for i := 0; i < 100; i++ {
		b := backs[i%3]
		t0 := time.Now()
		if _, err := client.DiscoveryV1().EndpointSlices(ns).Update(ctx, e.slice("records", "records-a", b), metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		latencies = append(latencies, waitApplied(t, t0, fmt.Sprintf("change %d", i), func() bool { return slices.Equal(endpointsOf(front, clusterHTTP), want(b)) }))
		if i%10 == 0 {
			echoOnce(10 + i)
		}
	}
	stopLoad()
	wg.Wait()
	echoOnce(1000)
	if n := backAcks(); n != acks0 {
		t.Errorf("back-2 accepted %v responses during endpoint changes it cannot see, want none", n-acks0)
	}
	t.Logf("100 endpoint changes under load: %d requests ok, %d failed", ok.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Errorf("%d requests failed during endpoint changes, e.g. %v", failed.Load(), failures)
	}
	if ok.Load() < 100 {
		t.Errorf("only %d requests under load; the load did not run", ok.Load())
	}
	t.Logf("config update latency (API change -> proxy applied), %d changes: p50 %v, p99 %v, max %v",
		len(latencies), percentile(latencies, 0.5), percentile(latencies, 0.99), percentile(latencies, 1))

	// 5b. Narrow who may call back: the Service's countersign.dev/allow becomes an inbound
	// Listener on the slice's target port, sent to the proxies proving "back"; the one serving
	// that port applies it without a restart. front is no longer allowed: its next request,
	// on its existing keep-alive connection, is refused by back; the TCP stream opened before
	// stays up (narrowing applies to new handshakes and requests); a new one is refused.
	cur := backs[99%3]
	inboundOf := func() *xdsclient.Inbound { return cur.srv.XDS().State().InboundOn(uint16(cur.httpPort)) }
	t0 = time.Now()
	if _, err := client.CoreV1().Services(ns).Update(ctx, svcObj("records", map[string]string{xds.AnnotationUpstreamIdentity: "back", xds.AnnotationAllow: "rogue"}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	d = waitApplied(t, t0, "inbound narrowing", func() bool { in := inboundOf(); return in != nil && slices.Equal(in.Allow, []string{"rogue"}) })
	t.Logf("inbound narrowing: applied at %s %v after the API call", cur.name, d)
	refused := func() float64 {
		return metricValue(t, cur.srv, "countersign_rejections_total", map[string]string{"listener": "api"})
	}
	r0 := refused()
	// back refuses front (at the handshake of a new connection, or the request on a kept-alive
	// one); front answers 502 with the reason.
	if code, body, _ := get(api); code == 200 || refused() != r0+1 {
		t.Fatalf("front still allowed after back narrowed its callers to rogue: %d %q (back refusals %v -> %v)", code, body, r0, refused())
	}
	echoOnce(2000)
	if c2, err := net.Dial("tcp", front.Addr("echo")); err == nil {
		c2.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c2, "x\n")
		if _, err := bufio.NewReader(c2).ReadString('\n'); err == nil {
			t.Error("a new TCP stream from front was accepted after back narrowed its callers")
		}
		c2.Close()
	}
	// Widening the pinned allow list (back only lets front and rogue call) is NACKed by back,
	// which keeps the narrowed list.
	if _, err := client.CoreV1().Services(ns).Update(ctx, svcObj("records", map[string]string{xds.AnnotationUpstreamIdentity: "back", xds.AnnotationAllow: "front,back"}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, time.Now(), "inbound widening NACK", func() bool {
		return metricValue(t, cur.srv, "countersign_xds_updates_total", map[string]string{"type": "Listener", "result": "widening"}) >= 1
	})
	if in := inboundOf(); in == nil || !slices.Equal(in.Allow, []string{"rogue"}) {
		t.Errorf("back changed its inbound policy after a rejected push: %+v", in)
	}
	if code, _, _ := get(api); code == 200 || refused() != r0+2 {
		t.Errorf("after the rejected widening: %d, back refusals %v, want front refused again", code, refused())
	}
	// The annotation removed: the pinned allow list is in force again.
	t0 = time.Now()
	if _, err := client.CoreV1().Services(ns).Update(ctx, svcObj("records", map[string]string{xds.AnnotationUpstreamIdentity: "back"}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, t0, "inbound narrowing removed", func() bool { return inboundOf() == nil })
	if code, body, _ := get(api); code != 200 || body != cur.name {
		t.Fatalf("after the narrowing was removed: %d %q", code, body)
	}
	echoOnce(2001)

	// 6. Delete: the cluster goes away and requests are refused with a reason.
	t0 = time.Now()
	if err := client.DiscoveryV1().EndpointSlices(ns).Delete(ctx, "records-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := client.CoreV1().Services(ns).Delete(ctx, "records", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	d = waitApplied(t, t0, "delete", func() bool { return front.XDS().State().Cluster(clusterHTTP) == nil })
	t.Logf("delete: applied %v after the API calls", d)
	if code, body, _ := get(api); code != http.StatusServiceUnavailable || !strings.Contains(body, "no_endpoints") {
		t.Errorf("after delete: %d %s", code, body)
	}

	// 7. The control plane goes away: front keeps serving on its last good configuration.
	if _, err := client.CoreV1().Services(ns).Create(ctx, svcObj("records", map[string]string{xds.AnnotationUpstreamIdentity: "back"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.DiscoveryV1().EndpointSlices(ns).Create(ctx, e.slice("records", "records-b", backs[2]), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, time.Now(), "re-create", func() bool { return slices.Equal(endpointsOf(front, clusterHTTP), want(backs[2])) })
	stopCP()
	<-cpDone
	cpDone <- nil // for the cleanup
	waitApplied(t, time.Now(), "disconnect", func() bool {
		return metricValue(t, front, "countersign_xds_connected", nil) == 0
	})
	for i := 0; i < 20; i++ {
		if code, body, err := get(api); err != nil || code != 200 || body != "back-3" {
			t.Fatalf("with the control plane gone: %d %q %v", code, body, err)
		}
	}
}

// TestControlPlaneRequiresClientCert: the xDS port refuses a client without a certificate
// from the control plane's CA.
func TestControlPlaneRequiresClientCert(t *testing.T) {
	p := newPKI(t)
	cp, err := xds.New(xds.Config{Listen: "127.0.0.1:0", TLS: p.serverTLS, Client: fakeClient()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	defer func() { cancel(); <-done }()
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	c, err := tls.Dial("tcp", cp.Addr(), &tls.Config{RootCAs: pool, ServerName: "xds.test", MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}})
	if err == nil {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1)) // TLS 1.3: the server's refusal arrives after the handshake
		c.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a client without a certificate got %v, want a certificate error", err)
	}
	// Without mTLS configured, the control plane refuses to start.
	if _, err := xds.New(xds.Config{Listen: "127.0.0.1:0", TLS: &tls.Config{}, Client: fakeClient()}); err == nil {
		t.Error("a control plane without client authentication was built")
	}
}
