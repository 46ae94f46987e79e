package server_test

import (
	"crypto/sha256"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign/proxy/chain"
	"github.com/countersign/countersign/proxy/config"
)

// seen is what an app saw of one request.
type seen struct {
	header        http.Header
	contentLength int64
	chunked       bool
	body          int
}

// TestProtocolPageRules checks rules of docs/protocol.md section 8 and 9 end to end, through a
// calling proxy and an answering one:
//   - the request digest's authority is the calling proxy's configured `authority`, and a
//     request with no body and no Content-Length is digested as the empty body;
//   - a chunked request body of at most 64 KiB is re-sent with a Content-Length and digested,
//     a larger one is sent chunked with B = "-", as is a known length over 64 KiB;
//   - the app behind the answering proxy gets X-Forwarded-For/-Host/-Proto set by that proxy
//     (the caller's values replaced, never appended to), and no Forwarded;
//   - the calling app gets Countersign-Receipt and not the peer's Countersign-Countersignature.
func TestProtocolPageRules(t *testing.T) {
	var last atomic.Pointer[seen]
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		last.Store(&seen{header: r.Header.Clone(), contentLength: r.ContentLength, chunked: len(r.TransferEncoding) > 0, body: len(b)})
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(app.Close)
	e := newEnv(t, time.Hour)
	bc := e.cfg("back", mrBack)
	bc.Inbound = []config.Inbound{{
		Name:      "api",
		Listen:    "127.0.0.1:0",
		Protocol:  "http",
		ForwardTo: strings.TrimPrefix(app.URL, "http://"),
		Allow:     []string{"front"},
	}}
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
	url := "http://" + front.Addr("to-back")

	// send makes a request through both proxies and returns the answer and the entry the
	// receipt carries.
	send := func(method, target string, body io.Reader, contentLength int64, hdr map[string]string) (*http.Response, *chain.Entry) {
		t.Helper()
		req, err := http.NewRequest(method, url+target, body)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = contentLength
		req.Header.Set(chain.HeaderWantReceipt, chain.ReceiptInline)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s %s: %d %s", method, target, resp.StatusCode, resp.Header.Get(chain.HeaderRejectCause))
		}
		rc, err := chain.ParseReceipt([]byte(resp.Header.Get(chain.HeaderReceipt)))
		if err != nil {
			t.Fatalf("receipt: %v", err)
		}
		parts, err := chain.Split(rc.Chain, 8)
		if err != nil {
			t.Fatal(err)
		}
		en, _, _, err := chain.ParseEntry(parts[len(parts)-1])
		if err != nil {
			t.Fatal(err)
		}
		return resp, en
	}
	wantReq := func(what string, e *chain.Entry, method, target string, body []byte) {
		t.Helper()
		var sum []byte
		if body != nil {
			s := sha256.Sum256(body)
			sum = s[:]
		}
		d := chain.RequestDigest(method, "back.internal", target, sum)
		if e.Req != b64(d[:]) {
			t.Errorf("%s: entry req %s, want the digest of %s back.internal %s with B = %s", what, e.Req, method, target, map[bool]string{true: "-", false: "b64url(H(body))"}[body == nil])
		}
	}

	// No body, no Content-Length: the empty body's digest, the configured authority.
	resp, en := send(http.MethodGet, "/records/7?x=1", nil, 0, map[string]string{
		"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http", "Forwarded": "for=6.6.6.6",
	})
	wantReq("GET", en, http.MethodGet, "/records/7?x=1", []byte{})
	s := last.Load()
	if got := s.header.Values("X-Forwarded-For"); len(got) != 1 || got[0] != "127.0.0.1" {
		t.Errorf("app saw X-Forwarded-For %q, want the calling proxy's address only (127.0.0.1)", got)
	}
	if got := s.header.Values("X-Forwarded-Host"); len(got) != 1 || got[0] != "back.internal" {
		t.Errorf("app saw X-Forwarded-Host %q, want the Host the answering proxy received (back.internal)", got)
	}
	if got := s.header.Values("X-Forwarded-Proto"); len(got) != 1 || got[0] != "https" {
		t.Errorf("app saw X-Forwarded-Proto %q, want https (the attested listener)", got)
	}
	if got := s.header.Values("Forwarded"); len(got) != 0 {
		t.Errorf("app saw Forwarded %q, want it removed (the page says the proxies drop it)", got)
	}
	if v := resp.Header.Values(chain.HeaderCountersig); len(v) != 0 {
		t.Errorf("the calling app got %s %q: the page says it gets only %s", chain.HeaderCountersig, v, chain.HeaderReceipt)
	}

	// Chunked, at most 64 KiB: re-sent with a Content-Length and digested.
	small := []byte(strings.Repeat("s", 1000))
	_, en = send(http.MethodPost, "/small", io.NopCloser(strings.NewReader(string(small))), -1, nil)
	wantReq("chunked 1000 bytes", en, http.MethodPost, "/small", small)
	if s := last.Load(); s.chunked || s.contentLength != 1000 || s.body != 1000 {
		t.Errorf("chunked 1000 bytes: the app got chunked=%v Content-Length %d (%d bytes), want Content-Length 1000", s.chunked, s.contentLength, s.body)
	}
	exact := []byte(strings.Repeat("e", chain.MaxDigestBody))
	_, en = send(http.MethodPost, "/exact", io.NopCloser(strings.NewReader(string(exact))), -1, nil)
	wantReq("chunked 65536 bytes", en, http.MethodPost, "/exact", exact)

	// Chunked, over 64 KiB: sent on chunked, B = "-".
	big := strings.Repeat("b", chain.MaxDigestBody+1)
	_, en = send(http.MethodPost, "/big", io.NopCloser(strings.NewReader(big)), -1, nil)
	wantReq("chunked 65537 bytes", en, http.MethodPost, "/big", nil)
	if s := last.Load(); !s.chunked || s.body != len(big) {
		t.Errorf("chunked 65537 bytes: the app got chunked=%v Content-Length %d (%d bytes), want chunked", s.chunked, s.contentLength, s.body)
	}
	// A known length over 64 KiB: B = "-" too.
	_, en = send(http.MethodPost, "/big-known", strings.NewReader(big), int64(len(big)), nil)
	wantReq("Content-Length 65537", en, http.MethodPost, "/big-known", nil)
	// A known length of 0 on a POST: the empty body's digest, as for a GET.
	_, en = send(http.MethodPost, "/empty", strings.NewReader(""), 0, nil)
	wantReq("POST Content-Length 0", en, http.MethodPost, "/empty", []byte{})
}
