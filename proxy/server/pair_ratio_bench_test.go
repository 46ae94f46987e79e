package server_test

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"
	"time"

	"github.com/countersign/countersign/proxy/config"
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

// BenchmarkPairChannelVsGoRPPair8 is BenchmarkPairVsGoRPPair8 with chain.peerSignatures:
// channel on both proxies (the peer's own statements authenticated by the attested connection,
// not by their ECDSA signatures: two verifications fewer per request).
func BenchmarkPairChannelVsGoRPPair8(b *testing.B) {
	benchPairVsGoRPPairMode(b, 8, config.PeerSignaturesChannel)
}

// BenchmarkPairChannelVsGoRPPair is the one-worker (latency) form.
func BenchmarkPairChannelVsGoRPPair(b *testing.B) {
	benchPairVsGoRPPairMode(b, 1, config.PeerSignaturesChannel)
}

func benchPairVsGoRPPair(b *testing.B, workers int) {
	benchPairVsGoRPPairMode(b, workers, "")
}

func benchPairVsGoRPPairMode(b *testing.B, workers int, peerSigs string) {
	appURL := kibApp(b)
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

	// The attested pair as pair() builds it, but in front of the same app as the plain one.
	e := newEnv(b, time.Hour)
	bc := e.cfg("back", mrBack)
	bc.Chain.PeerSignatures = peerSigs
	bc.Inbound = []config.Inbound{{
		Name:      "api",
		Listen:    "127.0.0.1:0",
		Protocol:  "http",
		ForwardTo: appURL.Host,
		Allow:     []string{"front"},
	}}
	back := e.start(bc)
	fc := e.cfg("front", mrFront)
	fc.Chain.PeerSignatures = peerSigs
	fc.Outbound = []config.Outbound{{
		Name:             "to-back",
		Listen:           "127.0.0.1:0",
		Protocol:         "http",
		Upstream:         back.Addr("api"),
		UpstreamIdentity: []string{"back"},
		Authority:        "back.internal",
	}}
	front := e.start(fc)

	getter := func(u string) func(int) error {
		c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
		return func(int) error { return getOK(b, c, u, 1024) }
	}
	compare(b, workers, getter(fs.URL+"/x"), getter("http://"+front.Addr("to-back")+"/x"), "gorp2")
}
