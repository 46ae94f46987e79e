package server_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/countersign/countersign/proxy/chain"
	"github.com/countersign/countersign/proxy/config"
)

// rogueAnswerer is an upstream that holds back's attested certificate and key (so front's
// handshake accepts it) but answers streams as the test says: the calling proxy's check of the
// countersignature in the trailers is all that stands between it and the app.
func rogueAnswerer(t *testing.T, back *proxyT, answer func(w http.ResponseWriter, r *http.Request, entry string, reqBody []byte)) string {
	cur := back.Identity.Current()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			parts := strings.Split(r.Header.Get(chain.HeaderChain), ",")
			answer(w, r, chain.Digest(parts[len(parts)-1]), b)
		}),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cur.Cert}, ClientAuth: tls.RequireAnyClientCert, NextProtos: []string{"h2"}},
		Protocols: new(http.Protocols),
	}
	srv.Protocols.SetHTTP2(true)
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// answerGRPC writes a gRPC answer of msg with trailers; countersign, if set, is the stream
// digest's trailers (what the rogue signs, which may differ from what it sends).
func answerGRPC(t *testing.T, back *proxyT, w http.ResponseWriter, entry string, reqBody []byte, sent, signed map[string]string, sign bool) {
	msg := grpcFrame(t, &testpb.SimpleResponse{Payload: &testpb.Payload{Body: []byte("answer")}})
	w.Header().Set("Content-Type", "application/grpc")
	w.WriteHeader(200)
	w.Write(msg)
	for k, v := range sent {
		w.Header().Set(http.TrailerPrefix+k, v)
	}
	if !sign {
		return
	}
	st := http.Header{}
	for k, v := range signed {
		st.Set(k, v)
	}
	body := sha256.Sum256(msg)
	ts := chain.TrailersDigest(st)
	rb := sha256.Sum256(reqBody)
	cs, err := chain.Countersign(selfOf(back), entry, chain.StreamResponseDigest(200, body[:], ts[:], b64(rb[:])), time.Now())
	if err != nil {
		t.Error(err)
	}
	w.Header().Set(http.TrailerPrefix+chain.HeaderCountersig, cs)
}

// TestH2StreamCountersignature: the end of a streamed answer is failed (PERMISSION_DENIED with
// the reason code for gRPC, a reset stream for http2) when the countersignature in the
// trailers is missing or does not cover what arrived; a genuine one passes.
func TestH2StreamCountersignature(t *testing.T) {
	e := newEnv(t, time.Hour)
	bc := e.cfg("back", mrBack)
	bc.Inbound = []config.Inbound{{
		Name:      "api",
		Listen:    "127.0.0.1:0",
		Protocol:  config.ProtocolGRPC,
		ForwardTo: "127.0.0.1:1",
		Allow:     []string{"front"},
	}}
	back := e.start(bc)
	ok := map[string]string{"Grpc-Status": "0", "X-Result": "benign"}
	cases := []struct {
		name         string
		sent, signed map[string]string
		sign         bool
		code         codes.Code
		reason       string
	}{
		{"genuine", ok, ok, true, codes.OK, ""},
		{"missing", ok, nil, false, codes.PermissionDenied, "countersignature_missing"},
		{"trailer changed", map[string]string{"Grpc-Status": "0", "X-Result": "malignant"}, ok, true, codes.PermissionDenied, "countersignature_invalid"},
		{"status changed", map[string]string{"Grpc-Status": "0", "X-Result": "benign"}, map[string]string{"Grpc-Status": "5", "X-Result": "benign"}, true, codes.PermissionDenied, "countersignature_invalid"},
	}
	for _, tc := range cases {
		for _, mode := range []string{config.PeerSignaturesVerify, config.PeerSignaturesChannel} {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				up := rogueAnswerer(t, back, func(w http.ResponseWriter, r *http.Request, entry string, reqBody []byte) {
					answerGRPC(t, back, w, entry, reqBody, tc.sent, tc.signed, tc.sign)
				})
				fc := e.cfg("front", mrFront)
				fc.Chain.PeerSignatures = mode // the digests are checked either way
				fc.Outbound = []config.Outbound{{
					Name:             "to-back",
					Listen:           "127.0.0.1:0",
					Protocol:         config.ProtocolGRPC,
					Upstream:         up,
					UpstreamIdentity: []string{"back"},
				}}
				front := e.start(fc)
				c := grpcClient(t, front.Addr("to-back"))
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("q")}})
				st, _ := status.FromError(err)
				if st.Code() != tc.code {
					t.Fatalf("call: %v, want %v", err, tc.code)
				}
				if tc.code == codes.OK {
					if string(resp.GetPayload().GetBody()) != "answer" {
						t.Errorf("answer %q", resp.GetPayload().GetBody())
					}
					return
				}
				if !strings.Contains(st.Message(), tc.reason) {
					t.Errorf("message %q, want the reason %s", st.Message(), tc.reason)
				}
				if got := counter(front.Metrics.Rejections.WithLabelValues("to-back", tc.reason)); got != 1 {
					t.Errorf("countersign_rejections_total{to-back,%s} = %v, want 1", tc.reason, got)
				}
			})
		}
	}
	// An http2 (not gRPC) listener resets the stream: the client sees an incomplete answer.
	t.Run("http2 reset", func(t *testing.T) {
		up := rogueAnswerer(t, back, func(w http.ResponseWriter, r *http.Request, entry string, reqBody []byte) {
			w.WriteHeader(200)
			w.Write([]byte("unsigned"))
		})
		fc := e.cfg("front", mrFront)
		fc.Outbound = []config.Outbound{{
			Name:             "to-back",
			Listen:           "127.0.0.1:0",
			Protocol:         config.ProtocolHTTP2,
			Upstream:         up,
			UpstreamIdentity: []string{"back"},
		}}
		front := e.start(fc)
		c := h2cClient()
		resp, err := c.Get("http://" + front.Addr("to-back") + "/x")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err == nil {
			t.Fatalf("an unsigned http2 answer reached the app complete (status %d)", resp.StatusCode)
		}
	})
}

// h2cClient speaks HTTP/2 with prior knowledge, as an app does to an http2 outbound listener.
func h2cClient() *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// TestLargeBodyBound: over HTTP/1.1, a request body too large to digest up front (B is "-")
// is streamed, and the answer's countersignature covers the body the answering proxy received:
// the receipt (v2) names it, whatever its length.
func TestLargeBodyBound(t *testing.T) {
	e := newEnv(t, time.Hour)
	front, back, _ := pair(t, e)
	body := strings.Repeat("scan-", 40000) // 200 000 bytes
	for _, chunked := range []bool{false, true} {
		var rd io.Reader = strings.NewReader(body)
		if chunked {
			rd = io.MultiReader(rd) // no length: sent chunked
		}
		req, _ := http.NewRequest(http.MethodPost, "http://"+front.Addr("to-back")+"/scans", rd)
		req.Header.Set(chain.HeaderWantReceipt, chain.ReceiptInline)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasSuffix(string(got), "body=200000") {
			t.Fatalf("chunked %v: %d %s %s", chunked, resp.StatusCode, resp.Header.Get(chain.HeaderRejectCause), got)
		}
		rc, err := chain.ParseReceipt([]byte(resp.Header.Get(chain.HeaderReceipt)))
		if err != nil {
			t.Fatalf("chunked %v: receipt: %v", chunked, err)
		}
		sum := sha256.Sum256([]byte(body))
		if rc.V != 2 || rc.RequestBody != b64(sum[:]) {
			t.Errorf("chunked %v: receipt v %d requestBody %q, want v2 naming the body's digest %q", chunked, rc.V, rc.RequestBody, b64(sum[:]))
		}
		if _, err := chain.VerifyReceipt(context.Background(), back.Engine, rc, []string{"front"}, []string{"back"}, 8); err != nil {
			t.Errorf("chunked %v: the receipt does not verify: %v", chunked, err)
		}
	}
}

// TestHTTP2ThroughTwoProxies: plain HTTP/2 (not gRPC) from an h2c app client through both
// proxies to an h2c app, with the receipt in the trailers.
func TestHTTP2ThroughTwoProxies(t *testing.T) {
	e := newEnv(t, time.Hour)
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Count")
		w.Write([]byte(r.Proto + " " + r.Host + " " + strings.ToUpper(string(b))))
		w.Header().Set("X-Count", "1")
	}), Protocols: new(http.Protocols)}
	app.Protocols.SetUnencryptedHTTP2(true)
	aln, _ := net.Listen("tcp", "127.0.0.1:0")
	go app.Serve(aln)
	defer app.Close()
	bc := e.cfg("back", mrBack)
	bc.Inbound = []config.Inbound{{
		Name:      "api",
		Listen:    "127.0.0.1:0",
		Protocol:  config.ProtocolHTTP2,
		ForwardTo: aln.Addr().String(),
		Allow:     []string{"front"},
	}}
	back := e.start(bc)
	fc := e.cfg("front", mrFront)
	fc.Outbound = []config.Outbound{{
		Name:             "to-back",
		Listen:           "127.0.0.1:0",
		Protocol:         config.ProtocolHTTP2,
		Upstream:         back.Addr("api"),
		UpstreamIdentity: []string{"back"},
		Authority:        "back.internal",
	}}
	front := e.start(fc)
	req, _ := http.NewRequest(http.MethodPost, "http://"+front.Addr("to-back")+"/up", strings.NewReader("hello"))
	req.Header.Set(chain.HeaderWantReceipt, chain.ReceiptInline)
	resp, err := h2cClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || string(got) != "HTTP/2.0 back.internal HELLO" || resp.ProtoMajor != 2 {
		t.Fatalf("%s %d %q %v", resp.Proto, resp.StatusCode, got, err)
	}
	if resp.Trailer.Get("X-Count") != "1" {
		t.Errorf("the app's trailer: %v", resp.Trailer)
	}
	rc, err := chain.ParseReceipt([]byte(resp.Trailer.Get(chain.HeaderReceipt)))
	if err != nil {
		t.Fatalf("receipt trailer: %v (trailers %v)", err, resp.Trailer)
	}
	body := sha256.Sum256(got)
	sent := sha256.Sum256([]byte("hello"))
	if rc.BodySHA256 != b64(body[:]) || rc.RequestBody != b64(sent[:]) {
		t.Errorf("receipt body %s request %s", rc.BodySHA256, rc.RequestBody)
	}
	if _, err := chain.VerifyReceipt(context.Background(), back.Engine, rc, []string{"front"}, []string{"back"}, 8); err != nil {
		t.Errorf("the receipt does not verify: %v", err)
	}
}

// TestPeerSignaturesChannel: with chain.peerSignatures: channel on both proxies, requests pass,
// and a receipt asked for is still a verified one (the countersignature is verified then).
func TestPeerSignaturesChannel(t *testing.T) {
	e := newEnv(t, time.Hour)
	front, back, _ := pair(t, e, func(c *config.Config) { c.Chain.PeerSignatures = config.PeerSignaturesChannel })
	url := "http://" + front.Addr("to-back") + "/r"
	if r, body := get(t, url, nil); r.StatusCode != 200 {
		t.Fatalf("%d %s", r.StatusCode, body)
	}
	r, _ := get(t, url, map[string]string{chain.HeaderWantReceipt: chain.ReceiptInline})
	rc, err := chain.ParseReceipt([]byte(r.Header.Get(chain.HeaderReceipt)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chain.VerifyReceipt(context.Background(), back.Engine, rc, []string{"front"}, []string{"back"}, 8); err != nil {
		t.Errorf("receipt: %v", err)
	}
}
