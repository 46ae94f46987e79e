package server_test

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"
)

// BenchmarkPairVsGoRPPair compares the attested pair (front's outbound → attested mTLS + chain
// → back's inbound → app) with the same shape built of two plain httputil.ReverseProxies (a
// plaintext one forwarding over TLS with keep-alive to a TLS one that forwards to the app), in
// this process. With -workers 1 (the default here) ours-µs/op and gorp2-µs/op are the latency
// of one request at a time, so their difference is what the attested link adds beyond two
// proxy traversals and a TLS leg: the chain entry, its verification, the countersignature and
// its verification, the receipt and the larger headers.
func BenchmarkPairVsGoRPPair(b *testing.B) {
	benchPairVsGoRPPair(b, 1)
}

// BenchmarkPairVsGoRPPair8 is the same over 8 keep-alive connections (throughput and CPU).
func BenchmarkPairVsGoRPPair8(b *testing.B) {
	benchPairVsGoRPPair(b, 8)
}

func benchPairVsGoRPPair(b *testing.B, workers int) {
	body := strings.Repeat("x", 1024)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, body)
	}))
	b.Cleanup(app.Close)
	appURL, _ := url.Parse(app.URL)
	_, _, cert, pool := selfSigned(b)

	backRP := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(appURL); pr.Out.Host = pr.In.Host; pr.SetXForwarded() },
		Transport: &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second},
	}
	bs := httptest.NewUnstartedServer(backRP)
	bs.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
	bs.StartTLS()
	b.Cleanup(bs.Close)
	bsURL, _ := url.Parse(bs.URL)
	frontRP := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(bsURL) },
		Transport: &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second,
			TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	fs := httptest.NewServer(frontRP)
	b.Cleanup(fs.Close)

	e := newEnv(b, time.Hour)
	front, _, _ := pair(b, e)

	getter := func(u string) func(int) error {
		c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
		return func(int) error {
			resp, err := c.Get(u)
			if err != nil {
				return err
			}
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != http.StatusOK {
				b.Fatalf("status %d: %s", resp.StatusCode, resp.Header.Get("Countersign-Reject-Detail"))
			}
			return err
		}
	}
	compare(b, workers, getter(fs.URL+"/x"), getter("http://"+front.Addr("to-back")+"/x"), "gorp2")
}
