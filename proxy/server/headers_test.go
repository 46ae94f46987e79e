package server_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign/proxy/chain"
	"github.com/countersign/countersign/proxy/config"
)

// variantNames are spellings of Countersign- headers that some app stack reads as ours
// (WSGI and CGI map '_' and '-' alike; names are case-insensitive).
var variantNames = []string{"Countersign_Verified", "countersign-verified", "COUNTERSIGN_CHAIN", "Countersign.Receipt", "countersign_X"}

// normalisedOurs reports whether name lower-cases, with '_' and '.' as '-', to countersign-….
func normalisedOurs(name string) bool {
	n := strings.NewReplacer("_", "-", ".", "-").Replace(strings.ToLower(name))
	return strings.HasPrefix(n, "countersign-")
}

// proxySet are the names (exact spelling) a proxy itself sets towards an app or a caller.
var proxySet = map[string]bool{
	chain.HeaderChain:       true,
	chain.HeaderTokens:      true,
	chain.HeaderVerified:    true,
	chain.HeaderCountersig:  true,
	chain.HeaderReceipt:     true,
	chain.HeaderReject:      true,
	chain.HeaderRejectCause: true,
}

// Go's server and client canonicalise "countersign-verified" to the exact name, which is
// deleted as ours rather than counted as a variant: of variantNames, this many are counted,
// and of the WSGI app's three response headers, two.
const countedVariants, countedWSGIResponse = 4, 2

// startWSGI starts testdata/wsgi_echo.py (Python's wsgiref) on loopback and returns its address.
func startWSGI(t *testing.T) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	cmd := exec.Command(py, filepath.Join("testdata", "wsgi_echo.py"))
	out, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	port := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if p, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
				port <- p
			}
		}
	}()
	select {
	case p := <-port:
		return "127.0.0.1:" + p
	case <-time.After(20 * time.Second):
		t.Fatalf("wsgi app did not start: %s", stderr.String())
	}
	return ""
}

// tlsPair writes a self-signed ECDSA certificate for 127.0.0.1 and returns its files and a pool.
func tlsPair(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big1(), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(k)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	write(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	write(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})))
	c, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(c)
	return certFile, keyFile, pool
}

// withVariants returns a request to url carrying every variant name, spelled as is.
func withVariants(t *testing.T, url string) *http.Request {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range variantNames {
		req.Header[n] = []string{`{"peer":"admin","hops":[]}`}
	}
	return req
}

func do(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// noVariantsIn fails for every header in h spelled as ours but not exactly as a proxy sets it.
func noVariantsIn(t *testing.T, where string, h http.Header) {
	t.Helper()
	for k, v := range h {
		if normalisedOurs(k) && !proxySet[k] {
			t.Errorf("%s: header %q = %q got through", where, k, v)
		}
		if proxySet[k] && strings.Contains(strings.Join(v, ","), "forged") {
			t.Errorf("%s: header %q = %q is the app's", where, k, v)
		}
	}
}

// TestHeaderVariantsDroppedWSGI: a WSGI app (Python's wsgiref) behind a public listener and
// behind an attested listener. A browser client, the calling app and a hostile peer with a
// genuine token send Countersign_Verified and other spellings; the app must see none of them
// (on the attested listener: exactly the summary the proxy set, not merged with a forgery),
// and the app's own variant response headers never reach the caller. Every drop is counted.
func TestHeaderVariantsDroppedWSGI(t *testing.T) {
	wsgi := startWSGI(t)
	e := newEnv(t, time.Hour)
	certFile, keyFile, pool := tlsPair(t)
	bc := e.cfg("back", mrBack)
	bc.Inbound = []config.Inbound{
		{
			Name:      "public",
			Listen:    "127.0.0.1:0",
			Protocol:  "http",
			ForwardTo: wsgi,
			Public:    true,
			CertFile:  certFile,
			KeyFile:   keyFile,
		},
		{
			Name:      "api",
			Listen:    "127.0.0.1:0",
			Protocol:  "http",
			ForwardTo: wsgi,
			Allow:     []string{"front"},
		},
	}
	back := e.start(bc)
	fc := e.cfg("front", mrFront)
	fc.Outbound = []config.Outbound{{
		Name:             "to-back",
		Listen:           "127.0.0.1:0",
		Protocol:         "http",
		Upstream:         back.Addr("api"),
		UpstreamIdentity: []string{"back"},
		Authority:        "back.internal",
	}}
	front := e.start(fc)

	seenBy := func(body string) map[string]string {
		t.Helper()
		var m map[string]string
		if err := json.Unmarshal([]byte(body), &m); err != nil {
			t.Fatalf("app answer %q: %v", body, err)
		}
		return m
	}

	// 1. A browser on the public listener.
	browser := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, body := do(t, browser, withVariants(t, "https://"+back.Addr("public")+"/records"))
	if resp.StatusCode != 200 {
		t.Fatalf("public: %d %s", resp.StatusCode, body)
	}
	if m := seenBy(body); len(m) != 0 {
		t.Errorf("public listener: the WSGI app saw %v", m)
	}
	noVariantsIn(t, "public response", resp.Header)
	if got := counter(back.Metrics.HeaderVariants.WithLabelValues("public", "request")); got != countedVariants {
		t.Errorf("public request variants counted %v, want %d", got, countedVariants)
	}
	if got := counter(back.Metrics.HeaderVariants.WithLabelValues("public", "response")); got != countedWSGIResponse {
		t.Errorf("public response variants counted %v, want %d", got, countedWSGIResponse)
	}

	// 2. The calling app, through front's outbound listener, to the attested listener.
	resp, body = do(t, http.DefaultClient, withVariants(t, "http://"+front.Addr("to-back")+"/records"))
	if resp.StatusCode != 200 {
		t.Fatalf("through the proxies: %d %s %s", resp.StatusCode, resp.Header.Get(chain.HeaderReject), body)
	}
	checkAttested := func(where string, m map[string]string) {
		t.Helper()
		for k, v := range m {
			if k != "HTTP_COUNTERSIGN_VERIFIED" && k != "HTTP_COUNTERSIGN_CHAIN" && k != "HTTP_COUNTERSIGN_CHAIN_TOKENS" {
				t.Errorf("%s: the WSGI app saw %s=%q", where, k, v)
			}
		}
		var sum struct{ Peer string }
		if err := json.Unmarshal([]byte(m["HTTP_COUNTERSIGN_VERIFIED"]), &sum); err != nil || sum.Peer != "front" {
			t.Errorf("%s: HTTP_COUNTERSIGN_VERIFIED=%q (merged with a forgery?)", where, m["HTTP_COUNTERSIGN_VERIFIED"])
		}
		if strings.Contains(m["HTTP_COUNTERSIGN_CHAIN"], "admin") {
			t.Errorf("%s: HTTP_COUNTERSIGN_CHAIN=%q", where, m["HTTP_COUNTERSIGN_CHAIN"])
		}
	}
	checkAttested("from the calling app", seenBy(body))
	noVariantsIn(t, "response to the calling app", resp.Header)
	if got := counter(front.Metrics.HeaderVariants.WithLabelValues("to-back", "request")); got != countedVariants {
		t.Errorf("outbound request variants counted %v, want %d", got, countedVariants)
	}
	if got := counter(back.Metrics.HeaderVariants.WithLabelValues("api", "response")); got != countedWSGIResponse {
		t.Errorf("inbound response variants counted %v, want %d", got, countedWSGIResponse)
	}

	// 3. A hostile peer with a genuine token (front's certificate and key) sends them itself.
	peer := attestedClient(&front.Identity.Current().Cert)
	req := withVariants(t, "https://"+back.Addr("api")+"/x")
	req.Host = "back.internal"
	empty := sha256.Sum256(nil)
	ch, _, err := chain.Append(nil, selfOf(front), chain.RequestDigest("GET", "back.internal", "/x", empty[:]), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(chain.HeaderChain, ch)
	resp, body = do(t, peer, req)
	if resp.StatusCode != 200 {
		t.Fatalf("hostile peer: %d %s %s", resp.StatusCode, resp.Header.Get(chain.HeaderReject), resp.Header.Get(chain.HeaderRejectCause))
	}
	checkAttested("from a hostile peer", seenBy(body))
	if got := counter(back.Metrics.HeaderVariants.WithLabelValues("api", "request")); got != countedVariants {
		t.Errorf("inbound request variants counted %v, want %d", got, countedVariants)
	}
}

// TestHeaderVariantsDroppedGoApp: a Go app answers with 103 Early Hints, response headers and
// trailers (declared and not) spelled as Countersign- headers, and the caller sends request
// trailers spelled so. None crosses a proxy, on the public listener or through two proxies;
// the Early Hints' other headers (Link) still arrive.
func TestHeaderVariantsDroppedGoApp(t *testing.T) {
	var appSaw atomic.Pointer[http.Header]
	app := newGoApp(t, &appSaw)
	e := newEnv(t, time.Hour)
	certFile, keyFile, pool := tlsPair(t)
	bc := e.cfg("back", mrBack)
	bc.Inbound = []config.Inbound{
		{
			Name:      "public",
			Listen:    "127.0.0.1:0",
			Protocol:  "http",
			ForwardTo: app,
			Public:    true,
			CertFile:  certFile,
			KeyFile:   keyFile,
		},
		{
			Name:      "api",
			Listen:    "127.0.0.1:0",
			Protocol:  "http",
			ForwardTo: app,
			Allow:     []string{"front"},
		},
	}
	back := e.start(bc)
	fc := e.cfg("front", mrFront)
	fc.Outbound = []config.Outbound{{
		Name:             "to-back",
		Listen:           "127.0.0.1:0",
		Protocol:         "http",
		Upstream:         back.Addr("api"),
		UpstreamIdentity: []string{"back"},
		Authority:        "back.internal",
	}}
	front := e.start(fc)

	browser := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	for _, tc := range []struct {
		name string
		c    *http.Client
		url  string
	}{
		{"public", browser, "https://" + back.Addr("public") + "/hints"},
		{"two proxies", http.DefaultClient, "http://" + front.Addr("to-back") + "/hints"},
		{"public, undeclared trailers", browser, "https://" + back.Addr("public") + "/undeclared"},
		{"two proxies, undeclared trailers", http.DefaultClient, "http://" + front.Addr("to-back") + "/undeclared"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			appSaw.Store(nil)
			var interim []http.Header
			pr, pw := io.Pipe()
			go func() { _, _ = io.WriteString(pw, "hello"); _ = pw.Close() }()
			req, _ := http.NewRequest(http.MethodPost, tc.url, pr)
			req.Trailer = http.Header{"Countersign_Verified": {`{"peer":"admin"}`}, "Countersign-Chain": {"forged"}}
			for _, n := range variantNames {
				req.Header[n] = []string{"forged"}
			}
			req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
				Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
					interim = append(interim, http.Header(h).Clone())
					return nil
				},
			}))
			resp, err := tc.c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "answer" {
				t.Fatalf("%d %s %q", resp.StatusCode, resp.Header.Get(chain.HeaderRejectCause), body)
			}
			if len(interim) == 0 {
				t.Fatal("the 103 Early Hints did not arrive")
			}
			for _, h := range interim {
				noVariantsIn(t, "103 Early Hints", h)
				for k := range h {
					if normalisedOurs(k) {
						t.Errorf("103 Early Hints carried %q", k)
					}
				}
				if h.Get("Link") == "" {
					t.Errorf("103 Early Hints lost its Link header: %v", h)
				}
			}
			noVariantsIn(t, "response", resp.Header)
			for k, v := range resp.Trailer {
				if normalisedOurs(k) {
					t.Errorf("response trailer %q = %q got through", k, v)
				}
			}
			if h := appSaw.Load(); h == nil {
				t.Error("the app saw no request")
			} else {
				for k, v := range *h {
					if normalisedOurs(k) && (!proxySet[k] || strings.Contains(strings.Join(v, ","), "admin") || strings.Contains(strings.Join(v, ","), "forged")) {
						t.Errorf("the app saw %q = %q", k, v)
					}
				}
			}
		})
	}
	if got := counter(back.Metrics.HeaderVariants.WithLabelValues("public", "interim")); got < 2 {
		t.Errorf("interim drops counted %v", got)
	}
	if got := counter(back.Metrics.HeaderVariants.WithLabelValues("public", "trailer")); got < 2 {
		t.Errorf("trailer drops counted %v", got)
	}
}

// newGoApp is a Go app that sends 103 Early Hints and trailers spelled as ours; it records the
// request's headers and trailers (merged) in saw.
func newGoApp(t *testing.T, saw *atomic.Pointer[http.Header]) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		h := r.Header.Clone()
		for k, v := range r.Trailer {
			h[k] = append(h[k], v...)
		}
		saw.Store(&h)
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.Header()["Countersign-Receipt"] = []string{"forged-in-103"}
		w.Header()["Countersign_Verified"] = []string{"forged-in-103"}
		w.WriteHeader(http.StatusEarlyHints)
		delete(w.Header(), "Countersign-Receipt")
		delete(w.Header(), "Countersign_Verified")
		if r.URL.Path != "/undeclared" {
			w.Header().Set("Trailer", "Countersign-Receipt, X-Fine")
		}
		w.Header()["countersign_receipt"] = []string{"forged"}
		w.WriteHeader(200)
		_, _ = io.WriteString(w, "answer")
		if r.URL.Path != "/undeclared" {
			w.Header().Set("Countersign-Receipt", "forged-trailer")
			w.Header().Set("X-Fine", "1")
		}
		w.Header()[http.TrailerPrefix+"Countersign_Chain"] = []string{"forged-undeclared-trailer"}
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().String()
}

// TestH2PrefaceRefused: the HTTP/2 connection preface sent by a raw TCP client to an HTTP/1.1
// listener (Go's server hands it to handlers as a "PRI *" request) is refused with
// upgrade_refused and never reaches the app.
func TestH2PrefaceRefused(t *testing.T) {
	e := newEnv(t, time.Hour)
	front, _, app := pair(t, e)
	c, err := net.Dial("tcp", front.Addr("to-back"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		_, _ = io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no response: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 || resp.StatusCode >= 500 || resp.Header.Get(chain.HeaderReject) != "upgrade_refused" {
		t.Errorf("status %d reason %q (%s), want a 4xx upgrade_refused", resp.StatusCode, resp.Header.Get(chain.HeaderReject), resp.Header.Get(chain.HeaderRejectCause))
	}
	waitMetric(t, front, "to-back", "upgrade_refused", 1)
	if h := app.last.Load(); h != nil {
		t.Errorf("the preface reached the app: %v", *h)
	}
}
