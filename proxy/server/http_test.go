package server_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/countersign/countersign/proxy/admin"
	"github.com/countersign/countersign/proxy/attestedtls"
	"github.com/countersign/countersign/proxy/chain"
	"github.com/countersign/countersign/proxy/config"
	"github.com/countersign/countersign/proxy/httpproxy"
)

// pair starts back (inbound http to a real app, allowing front) and front (outbound http to back);
// tune, if given, adjusts both configurations before they start.
func pair(t testing.TB, e *env, tune ...func(*config.Config)) (front, back *proxyT, app *appT) {
	a, last := newApp(t)
	app = &appT{last: last}
	bc := e.cfg("back", mrBack)
	bc.Inbound = []config.Inbound{{
		Name:      "api",
		Listen:    "127.0.0.1:0",
		Protocol:  "http",
		ForwardTo: strings.TrimPrefix(a.URL, "http://"),
		Allow:     []string{"front"},
	}}
	for _, f := range tune {
		f(bc)
	}
	back = e.start(bc)
	fc := e.cfg("front", mrFront)
	fc.Outbound = []config.Outbound{{
		Name:             "to-back",
		Listen:           "127.0.0.1:0",
		Protocol:         "http",
		Upstream:         back.Addr("api"),
		UpstreamIdentity: []string{"back"},
		Authority:        "back.internal",
	}}
	for _, f := range tune {
		f(fc)
	}
	front = e.start(fc)
	return front, back, app
}

type appT struct {
	last interface{ Load() *http.Header }
}

func get(t *testing.T, url string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func TestHTTPThroughTwoProxies(t *testing.T) {
	e := newEnv(t, time.Hour)
	front, back, app := pair(t, e)
	url := "http://" + front.Addr("to-back")
	resp, body := get(t, url+"/records/7?x=1", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d (%s): %s", resp.StatusCode, resp.Header.Get(chain.HeaderReject), body)
	}
	if want := "GET back.internal /records/7?x=1 body=0"; body != want {
		t.Errorf("app answered %q, want %q", body, want)
	}
	h := *app.last.Load()
	var sum httpproxy.Summary
	if err := json.Unmarshal([]byte(h.Get(chain.HeaderVerified)), &sum); err != nil {
		t.Fatalf("summary header %q: %v", h.Get(chain.HeaderVerified), err)
	}
	if sum.Peer != "front" || len(sum.Hops) != 1 || sum.Hops[0].Identity != "front" || sum.Hops[0].MREnclave != mrFront || sum.Hops[0].Claimed["app"] == "" {
		t.Errorf("summary %+v", sum)
	}
	// POST with a small body: digest includes the body.
	r2, err := http.Post(url+"/upload", "text/plain", strings.NewReader(strings.Repeat("x", 1000)))
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := io.ReadAll(r2.Body)
	r2.Body.Close()
	if r2.StatusCode != 200 || !strings.HasSuffix(string(b2), "body=1000") {
		t.Fatalf("POST: %d %s %s", r2.StatusCode, r2.Header.Get(chain.HeaderRejectCause), b2)
	}
	// Receipts when asked: an app that does not ask gets none, and never the peer's raw
	// countersignature (it is checked by the proxy and travels only inside receipts).
	if h := resp.Header; h.Get(chain.HeaderReceipt) != "" || h.Get(chain.HeaderCountersig) != "" {
		t.Errorf("unasked: the answer carries a receipt (%d bytes) or a countersignature (%d bytes)", len(h.Get(chain.HeaderReceipt)), len(h.Get(chain.HeaderCountersig)))
	}
	if h := *app.last.Load(); h.Get(chain.HeaderTokens) != "" {
		t.Errorf("the app was handed %s; tokens reach apps only inside receipts", chain.HeaderTokens)
	}
	// Only the exact spelling and value ask; a variant is dropped (no receipt), a bad value
	// is refused.
	if r, _ := get(t, url+"/records/7?x=1", map[string]string{"Countersign_Want_Receipt": "inline"}); r.StatusCode != 200 || r.Header.Get(chain.HeaderReceipt) != "" {
		t.Errorf("a variant spelling of %s: status %d, receipt %q; want 200 without a receipt", chain.HeaderWantReceipt, r.StatusCode, r.Header.Get(chain.HeaderReceipt))
	}
	if r, _ := get(t, url+"/records/7?x=1", map[string]string{chain.HeaderWantReceipt: "yes"}); r.StatusCode != 400 || r.Header.Get(chain.HeaderReject) != "receipt_request_invalid" {
		t.Errorf("%s: yes: status %d, reject %q; want 400 receipt_request_invalid", chain.HeaderWantReceipt, r.StatusCode, r.Header.Get(chain.HeaderReject))
	}
	resp, body = get(t, url+"/records/7?x=1", map[string]string{chain.HeaderWantReceipt: chain.ReceiptInline})
	if resp.StatusCode != 200 {
		t.Fatalf("asking for a receipt: status %d (%s): %s", resp.StatusCode, resp.Header.Get(chain.HeaderReject), body)
	}
	// The receipt verifies offline and names both hops.
	rc, err := chain.ParseReceipt([]byte(resp.Header.Get(chain.HeaderReceipt)))
	if err != nil {
		t.Fatalf("receipt: %v", err)
	}
	ctx := context.Background()
	res, err := chain.VerifyReceipt(ctx, back.Engine, rc, []string{"front"}, []string{"back"}, 8)
	if err != nil {
		t.Fatalf("receipt does not verify: %v", err)
	}
	if res.Answerer != "back" || len(res.Chain.Hops) != 1 {
		t.Errorf("receipt result: answerer %s, %d hops", res.Answerer, len(res.Chain.Hops))
	}
	bodySum := sha256.Sum256([]byte(body))
	if rc.BodySHA256 != b64(bodySum[:]) || rc.Status != 200 {
		t.Errorf("receipt does not describe the response received")
	}
	// A tampered receipt fails.
	bad := *rc
	bad.Status = 500
	if _, err := chain.VerifyReceipt(ctx, back.Engine, &bad, nil, nil, 8); err == nil {
		t.Error("a receipt with a changed status verified")
	}
	// The admin listener.
	adm := "http://" + front.Addr("admin")
	if r, _ := get(t, adm+"/readyz", nil); r.StatusCode != 200 {
		t.Errorf("/readyz %d", r.StatusCode)
	}
	r3, wk := get(t, adm+admin.WellKnownPath, nil)
	var doc admin.Document
	if err := json.Unmarshal([]byte(wk), &doc); err != nil || r3.StatusCode != 200 || doc.Token == "" || doc.Key.Kty != "EC" || !strings.Contains(doc.Certificate, "BEGIN CERTIFICATE") {
		t.Errorf("well-known: %d %v %.200s", r3.StatusCode, err, wk)
	}
	if _, m := get(t, adm+"/metrics", nil); !strings.Contains(m, "countersign_ready 1") {
		t.Errorf("metrics lack countersign_ready 1")
	}
	// Both proxies counted the four requests they answered (a metric nothing incremented
	// before the on-node tests looked at it); the refused one is a 4xx of front's.
	if got := counter(front.Metrics.Requests.WithLabelValues("to-back", "2xx")); got != 4 {
		t.Errorf("front countersign_http_requests_total{listener=to-back,class=2xx} = %v, want 4", got)
	}
	if got := counter(back.Metrics.Requests.WithLabelValues("api", "2xx")); got != 4 {
		t.Errorf("back countersign_http_requests_total{listener=api,class=2xx} = %v, want 4", got)
	}
}

// TestForgedChainFromAppIsDropped: a chain header the app sends that this proxy did not hand
// it is removed, counted, and never reaches the upstream.
func TestForgedChainFromAppIsDropped(t *testing.T) {
	e := newEnv(t, time.Hour)
	front, _, app := pair(t, e)
	resp, body := get(t, "http://"+front.Addr("to-back")+"/", map[string]string{chain.HeaderChain: "forged.entry", chain.HeaderVerified: `{"peer":"admin"}`})
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	h := *app.last.Load()
	if n := strings.Count(h.Get(chain.HeaderChain), ",") + 1; n != 1 || strings.Contains(h.Get(chain.HeaderChain), "forged") {
		t.Errorf("app saw chain %q", h.Get(chain.HeaderChain))
	}
	if got := counter(front.Metrics.Rejections.WithLabelValues("to-back", string(httpproxy.CodeChainForged))); got != 1 {
		t.Errorf("forged-chain metric %v", got)
	}
}

// attestedClient is a TLS client presenting cert, trusting any server (the test checks the
// proxy's refusal, not the server).
func attestedClient(cert *tls.Certificate) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil },
	}}}
}

func TestNonProxyClientRefused(t *testing.T) {
	e := newEnv(t, time.Hour)
	_, back, _ := pair(t, e)
	addr := "https://" + back.Addr("api") + "/"
	// No client certificate at all.
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if resp, err := c.Get(addr); err == nil {
		resp.Body.Close()
		t.Fatalf("a client without a certificate got %d", resp.StatusCode)
	}
	// An ordinary certificate without a token.
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big1(), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}, &x509.Certificate{SerialNumber: big1()}, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := attestedClient(&tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}).Get(addr); err == nil {
		resp.Body.Close()
		t.Fatalf("a client with an unattested certificate got %d", resp.StatusCode)
	}
	waitMetric(t, back, "api", string(attestedtls.CodeNotAttested), 2)
}

func TestCertificateWithSomeoneElsesTokenRefused(t *testing.T) {
	e := newEnv(t, time.Hour)
	front, back, _ := pair(t, e)
	stolen := front.Identity.Current().Token.Raw // valid, satisfies "front", names front's key
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := attestedtls.NewCertificate(k, stolen, "thief", time.Now(), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	c := attestedClient(&tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k})
	if resp, err := c.Get("https://" + back.Addr("api") + "/"); err == nil {
		resp.Body.Close()
		t.Fatalf("a certificate carrying someone else's token got %d", resp.StatusCode)
	}
	waitMetric(t, back, "api", "key_not_bound", 1)
}

func TestUnallowedIdentityRefusedBothDirections(t *testing.T) {
	e := newEnv(t, time.Hour)
	_, back, _ := pair(t, e)
	// rogue calls back, which allows only front.
	rc := e.cfg("rogue", mrRogue)
	rc.Outbound = []config.Outbound{{
		Name:             "to-back",
		Listen:           "127.0.0.1:0",
		Protocol:         "http",
		Upstream:         back.Addr("api"),
		UpstreamIdentity: []string{"back"},
	}}
	rogue := e.start(rc)
	resp, _ := get(t, "http://"+rogue.Addr("to-back")+"/", nil)
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("rogue -> back: status %d, want 502", resp.StatusCode)
	}
	waitMetric(t, back, "api", "mrenclave_mismatch", 1)

	// front expects "back" but is pointed at rogue's inbound listener.
	a, _ := newApp(t)
	rc2 := e.cfg("rogue", mrRogue)
	rc2.Inbound = []config.Inbound{{
		Name:      "api",
		Listen:    "127.0.0.1:0",
		Protocol:  "http",
		ForwardTo: strings.TrimPrefix(a.URL, "http://"),
		Allow:     []string{"front"},
	}}
	rogue2 := e.start(rc2)
	fc := e.cfg("front", mrFront)
	fc.Outbound = []config.Outbound{{
		Name:             "to-back",
		Listen:           "127.0.0.1:0",
		Protocol:         "http",
		Upstream:         rogue2.Addr("api"),
		UpstreamIdentity: []string{"back"},
	}}
	front := e.start(fc)
	resp, body := get(t, "http://"+front.Addr("to-back")+"/", nil)
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get(chain.HeaderReject) != "mrenclave_mismatch" {
		t.Errorf("front -> rogue: %d %q %s", resp.StatusCode, resp.Header.Get(chain.HeaderReject), body)
	}
	waitMetric(t, front, "to-back", "mrenclave_mismatch", 1)
}

// TestHTTPHygiene sends request smuggling shapes and upgrades on a raw connection. Shapes
// that Go's server normalizes before the handler (RFC 9112 §6.3) are refused by the framing
// guard (proxy/httpframe) with our reason; shapes Go's server refuses itself get its answer
// (no reason header), and the guard still counts them. Nothing reaches the app.
func TestHTTPHygiene(t *testing.T) {
	e := newEnv(t, time.Hour)
	front, _, app := pair(t, e)
	const smuggling = string(httpproxy.CodeSmuggling)
	cases := []struct {
		name, raw string
		reason    string // the reason header; "" for a refusal by Go's server itself
		counted   bool   // counted as request_smuggling_shape
	}{
		{"h2c upgrade", "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", string(httpproxy.CodeUpgrade), false},
		{"websocket", "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", string(httpproxy.CodeUpgrade), false},
		{"header too long", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 200<<10) + "\r\n\r\n", "", false},
		{"CL and TE", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", smuggling, true},
		{"TE and CL", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n", smuggling, true},
		{"duplicate CL", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde", "", true},
		{"duplicate identical CL", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nabcde", smuggling, true},
		{"CL list", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nabcde", "", true},
		{"space before colon", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nabcde", "", true},
		{"TE not chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", "", true},
		{"TE in HTTP/1.0 with CL", "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", smuggling, true},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", smuggling, true},
		{"bare LF in head", "GET / HTTP/1.1\nHost: x\n\n", smuggling, true},
		{"bare LF chunk", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\nabcd\n0\n\n", smuggling, true},
		{"chunk data without CRLF", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcdX\r\n0\r\n\r\n", smuggling, true},
		{"invalid chunk size", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x4\r\nabcd\r\n0\r\n\r\n", smuggling, true},
		{"bare LF in trailer", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\n\r\n", smuggling, true},
	}
	counted := 0.0
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", front.Addr("to-back"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			go func() { _, _ = io.WriteString(c, tc.raw) }()
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("no response: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode < 400 || (resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented) {
				t.Errorf("status %d, want a 4xx (or 501) refusal", resp.StatusCode)
			}
			if got := resp.Header.Get(chain.HeaderReject); got != tc.reason {
				t.Errorf("reason %q, want %q", got, tc.reason)
			}
			if tc.reason == smuggling && resp.StatusCode != http.StatusBadRequest {
				t.Errorf("status %d, want 400", resp.StatusCode)
			}
			if tc.counted {
				counted++
				waitMetric(t, front, "to-back", smuggling, counted)
			}
		})
	}
	if h := app.last.Load(); h != nil {
		t.Errorf("a refused request reached the app: %v", *h)
	}
	if got := counter(front.Metrics.Rejections.WithLabelValues("to-back", smuggling)); got != counted {
		t.Errorf("request_smuggling_shape counted %v times, want %v", got, counted)
	}
}

// TestCLAndTENotSmuggled: Go's server applies RFC 9112 §6.3 before the handler runs
// (Transfer-Encoding wins, Content-Length is removed), so the handler cannot see the original
// Content-Length; the framing guard on the connection does. The request is refused with 400
// request_smuggling_shape, the connection is closed, and the request smuggled after the
// chunked body (/smuggled) never reaches the app.
func TestCLAndTENotSmuggled(t *testing.T) {
	e := newEnv(t, time.Hour)
	front, _, app := pair(t, e)
	c, err := net.Dial("tcp", front.Addr("to-back"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(c, "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get(chain.HeaderReject) != string(httpproxy.CodeSmuggling) {
		t.Errorf("answer %d %q %q, want 400 %s", resp.StatusCode, resp.Header.Get(chain.HeaderReject), b, httpproxy.CodeSmuggling)
	}
	if more, err := br.ReadByte(); err == nil {
		t.Errorf("the connection stayed open and answered again (%q...)", more)
	}
	if h := app.last.Load(); h != nil {
		t.Errorf("the app was reached: %v", *h)
	}
	if got := counter(front.Metrics.Rejections.WithLabelValues("to-back", string(httpproxy.CodeSmuggling))); got != 1 {
		t.Errorf("request_smuggling_shape metric %v, want 1", got)
	}
}

// TestFramingPipelined: on one connection, clean requests before a smuggling shape are
// answered, the shape is refused, and nothing after it is served.
func TestFramingPipelined(t *testing.T) {
	e := newEnv(t, time.Hour)
	front, _, _ := pair(t, e)
	c, err := net.Dial("tcp", front.Addr("to-back"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(c, "GET /one HTTP/1.1\r\nHost: x\r\n\r\n"+
		"POST /two HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"+
		"POST /three HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"+
		"GET /four HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	for i, want := range []string{"GET back.internal /one body=0", "POST back.internal /two body=3"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer %d: %v", i+1, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != want {
			t.Fatalf("answer %d: %d %q, want 200 %q", i+1, resp.StatusCode, b, want)
		}
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body) // the body ends with the connection
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get(chain.HeaderReject) != string(httpproxy.CodeSmuggling) {
		t.Errorf("third answer %d %q", resp.StatusCode, resp.Header.Get(chain.HeaderReject))
	}
	if _, err := br.ReadByte(); err == nil {
		t.Error("the connection served /four")
	}
}

// TestFramingAttestedTLS: the guard of an attested inbound listener reads the plaintext above
// TLS: a caller presenting a valid certificate gets the same refusal.
func TestFramingAttestedTLS(t *testing.T) {
	e := newEnv(t, time.Hour)
	front, back, app := pair(t, e)
	cert := front.Identity.Current().Cert
	c, err := tls.Dial("tcp", back.Addr("api"), &tls.Config{
		InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, NextProtos: []string{"http/1.1"},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(c, "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get(chain.HeaderReject) != string(httpproxy.CodeSmuggling) {
		t.Errorf("answer %d %q", resp.StatusCode, resp.Header.Get(chain.HeaderReject))
	}
	if h := app.last.Load(); h != nil {
		t.Errorf("the app was reached: %v", *h)
	}
	waitMetric(t, back, "api", string(httpproxy.CodeSmuggling), 1)
}

func waitMetric(t *testing.T, p *proxyT, listener, reason string, min float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := counter(p.Metrics.Rejections.WithLabelValues(listener, reason))
		if got >= min {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metric countersign_rejections_total{listener=%q,reason=%q} = %v, want >= %v; logs:\n%s", listener, reason, got, min, p.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func counter(c interface{ Write(*dto.Metric) error }) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil || m.Counter == nil {
		return -1
	}
	return m.Counter.GetValue()
}

// TestV1CallerInteroperates: a front proxy that signs v1 (chain.signVersion: 1, for
// upstreams that predate v2) and a back proxy that signs v2 by default work together: the
// back verifies the v1 entry and answers with a v1 countersignature (the version of the entry
// it answers), so a v1 caller can check it. A default pair speaks v2 both ways. Both
// receipts verify offline.
func TestV1CallerInteroperates(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version int
		parts   int // of the entry and of the countersignature
	}{{"v1 caller", 1, 2}, {"default (v2)", 0, 3}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, time.Hour)
			a, last := newApp(t)
			bc := e.cfg("back", mrBack)
			bc.Inbound = []config.Inbound{{
				Name:      "api",
				Listen:    "127.0.0.1:0",
				Protocol:  "http",
				ForwardTo: strings.TrimPrefix(a.URL, "http://"),
				Allow:     []string{"front"},
			}}
			back := e.start(bc)
			fc := frontTo(e, back.Addr("api"))
			fc.Chain.SignVersion = tc.version
			front := e.start(fc)
			resp, body := get(t, "http://"+front.Addr("to-back")+"/x", map[string]string{chain.HeaderWantReceipt: chain.ReceiptInline})
			if resp.StatusCode != 200 {
				t.Fatalf("status %d (%s %s): %s", resp.StatusCode, resp.Header.Get(chain.HeaderReject), resp.Header.Get(chain.HeaderRejectCause), body)
			}
			if got := strings.Count((*last.Load()).Get(chain.HeaderChain), ".") + 1; got != tc.parts {
				t.Errorf("the entry the app was handed has %d parts, want %d", got, tc.parts)
			}
			rc, err := chain.ParseReceipt([]byte(resp.Header.Get(chain.HeaderReceipt)))
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Count(rc.Countersignature, ".") + 1; got != tc.parts {
				t.Errorf("the countersignature has %d parts, want %d (the version of the entry it answers)", got, tc.parts)
			}
			if _, err := chain.VerifyReceipt(context.Background(), back.Engine, rc, []string{"front"}, []string{"back"}, 8); err != nil {
				t.Errorf("receipt: %v", err)
			}
		})
	}
}
