package server_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/countersign/countersign/internal/benchratio"
	"github.com/countersign/countersign/proxy/config"
)

// BenchmarkGRPCPairVsGoH2Pair compares gRPC unary calls (grpc-go's interop TestService
// UnaryCall, 1 KiB request payload) through one attested hop (front's outbound grpc listener
// → attested TLS h2 → back's inbound grpc listener → the app, as grpcPair builds it) with the
// same calls through a plain Go HTTP/2 mTLS pair (httputil.ReverseProxy A, h2c in, TLS 1.3
// with a client certificate and ALPN h2 to B, h2c from B to the app), same client, same app,
// in this process, one call at a time: ours-µs/op and goh2-µs/op are latencies, and
// added-p50-ratio is (ours − direct) / (goh2 − direct) with direct the client calling the app
// itself (issue 16 asks ≤ 1.5). The figures are means over the calls, not medians.
func BenchmarkGRPCPairVsGoH2Pair(b *testing.B) {
	benchGRPCPairVsGoH2Pair(b, 1)
}

// BenchmarkGRPCPairVsGoH2Pair8 is the same with 8 concurrent callers on each side's one
// ClientConn (throughput, issue 16 asks ≥ 0.8, and CPU per call, ≤ 1.3). In this process the
// client's and the app's CPU are counted on every path, which dilutes ours/goh2-cpu;
// proxies-cpu-ratio subtracts direct's CPU from both sides first, the figure to compare.
func BenchmarkGRPCPairVsGoH2Pair8(b *testing.B) {
	benchGRPCPairVsGoH2Pair(b, 8)
}

// BenchmarkGRPCPairChannelVsGoH2Pair8 is BenchmarkGRPCPairVsGoH2Pair8 with
// chain.peerSignatures: channel on both proxies (two ECDSA verifications fewer per call).
func BenchmarkGRPCPairChannelVsGoH2Pair8(b *testing.B) {
	benchGRPCPairVsGoH2PairMode(b, 8, config.PeerSignaturesChannel)
}

func benchGRPCPairVsGoH2Pair(b *testing.B, workers int) {
	benchGRPCPairVsGoH2PairMode(b, workers, "")
}

func benchGRPCPairVsGoH2PairMode(b *testing.B, workers int, peerSigs string) {
	// One app for the three paths; the attested pair is grpcPair's, in front of it.
	appAddr, _ := startGRPCApp(b)
	e := newEnv(b, time.Hour)
	bc := e.cfg("back", mrBack)
	bc.Chain.PeerSignatures = peerSigs
	bc.Inbound = []config.Inbound{{
		Name:      "api",
		Listen:    "127.0.0.1:0",
		Protocol:  config.ProtocolGRPC,
		ForwardTo: appAddr,
		Allow:     []string{"front"},
	}}
	back := e.start(bc)
	fc := e.cfg("front", mrFront)
	fc.Chain.PeerSignatures = peerSigs
	fc.Outbound = []config.Outbound{{
		Name:             "to-back",
		Listen:           "127.0.0.1:0",
		Protocol:         config.ProtocolGRPC,
		Upstream:         back.Addr("api"),
		UpstreamIdentity: []string{"back"},
		Authority:        "back.internal",
	}}
	front := e.start(fc)
	ours := grpcClient(b, front.Addr("to-back"))
	direct := grpcClient(b, appAddr)
	goPair := grpcClient(b, goH2Pair(b, appAddr))

	req := &testpb.SimpleRequest{Payload: &testpb.Payload{Body: make([]byte, 1024)}}
	call := func(c testpb.TestServiceClient) func(int) error {
		return func(int) error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := c.UnaryCall(ctx, req)
			return err
		}
	}
	paths := []func(int) error{call(direct), call(goPair), call(ours)}
	for _, op := range paths { // warm up: connections, token and chain caches
		runLoad(b, workers, 50*workers, op)
	}
	const rounds = 4
	var sum [3]benchratio.Load
	b.ResetTimer()
	for r := range rounds {
		n := b.N / rounds
		if r == 0 {
			n += b.N % rounds
		}
		if n == 0 {
			continue
		}
		for i, op := range paths {
			l := runLoad(b, workers, n, op)
			sum[i].Wall += l.Wall
			sum[i].CPU += l.CPU
		}
	}
	b.StopTimer()
	per := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / float64(b.N) }
	d, g, o := sum[0], sum[1], sum[2]
	b.ReportMetric(per(d.Wall), "direct-µs/op")
	b.ReportMetric(per(g.Wall), "goh2-µs/op")
	b.ReportMetric(per(o.Wall), "ours-µs/op")
	b.ReportMetric(per(d.CPU), "direct-cpu-µs/op")
	b.ReportMetric(per(g.CPU), "goh2-cpu-µs/op")
	b.ReportMetric(per(o.CPU), "ours-cpu-µs/op")
	b.ReportMetric(float64(g.Wall)/float64(o.Wall), "ours/goh2-throughput")
	b.ReportMetric(float64(o.CPU)/float64(g.CPU), "ours/goh2-cpu")
	// The proxies' own CPU: each path's less direct's (the client and the app, on every path).
	if g.CPU > d.CPU {
		b.ReportMetric(float64(o.CPU-d.CPU)/float64(g.CPU-d.CPU), "proxies-cpu-ratio")
	}
	if g.Wall > d.Wall {
		b.ReportMetric(float64(o.Wall-d.Wall)/float64(g.Wall-d.Wall), "added-ratio")
	}
}

// grpcClient is a TestService client of addr over h2c, as an app dials an outbound listener.
func grpcClient(tb testing.TB, addr string) testpb.TestServiceClient {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cc.Close() })
	return testpb.NewTestServiceClient(cc)
}

// goH2Pair starts the plain Go HTTP/2 mTLS pair in front of the gRPC app at appAddr and returns
// A's address: A serves h2c (prior knowledge) and forwards over TLS 1.3, P-256, ALPN h2, with a
// client certificate to B, which requires it and forwards h2c to the app. Both are
// httputil.ReverseProxy with Rewrite and FlushInterval -1 (gRPC streams are not buffered).
func goH2Pair(b *testing.B, appAddr string) string {
	_, _, cert, pool := selfSigned(b)
	rp := func(to *url.URL, tr *http.Transport) *httputil.ReverseProxy {
		return &httputil.ReverseProxy{
			Rewrite:       func(pr *httputil.ProxyRequest) { pr.SetURL(to); pr.Out.Host = pr.In.Host },
			Transport:     tr,
			FlushInterval: -1,
		}
	}
	var h2c, h2 http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	h2.SetHTTP2(true)

	bTr := &http.Transport{Protocols: &h2c, MaxIdleConns: 1024, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second}
	bs := httptest.NewUnstartedServer(rp(&url.URL{Scheme: "http", Host: appAddr}, bTr))
	bs.EnableHTTP2 = true
	bs.TLS = &tls.Config{
		MinVersion:       tls.VersionTLS13,
		Certificates:     []tls.Certificate{cert},
		ClientAuth:       tls.RequireAndVerifyClientCert,
		ClientCAs:        pool,
		CurvePreferences: []tls.CurveID{tls.CurveP256},
	}
	bs.StartTLS()
	b.Cleanup(bs.Close)
	bURL, _ := url.Parse(bs.URL)

	aTr := &http.Transport{
		Protocols:           &h2,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, Certificates: []tls.Certificate{cert},
			CurvePreferences: []tls.CurveID{tls.CurveP256}},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	as := &http.Server{Handler: rp(bURL, aTr), Protocols: &h2c, ReadHeaderTimeout: 10 * time.Second}
	go as.Serve(ln)
	b.Cleanup(func() { as.Close() })
	return ln.Addr().String()
}
