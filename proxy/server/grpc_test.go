package server_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/countersign/countersign/proxy/chain"
	"github.com/countersign/countersign/proxy/config"
)

// grpcApp is a real gRPC service (grpc-go's interop TestService) on loopback, h2c.
type grpcApp struct {
	testpb.UnimplementedTestServiceServer
	authority chan string
}

func (a *grpcApp) UnaryCall(ctx context.Context, in *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	select {
	case a.authority <- strings.Join(md.Get(":authority"), ","):
	default:
	}
	body := string(in.GetPayload().GetBody())
	if body == "fail" {
		return nil, status.Error(codes.NotFound, "no such record")
	}
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-app-trailer", "kept", "countersign-verified", "forged by the app"))
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: []byte("echo:" + body)}, Username: strings.Join(md.Get("countersign-verified"), "")}, nil
}

func (a *grpcApp) StreamingOutputCall(in *testpb.StreamingOutputCallRequest, s grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	for _, p := range in.GetResponseParameters() {
		if err := s.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: make([]byte, p.GetSize())}}); err != nil {
			return err
		}
	}
	return nil
}

func (a *grpcApp) StreamingInputCall(s grpc.ClientStreamingServer[testpb.StreamingInputCallRequest, testpb.StreamingInputCallResponse]) error {
	n := 0
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return s.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: int32(n)})
		}
		if err != nil {
			return err
		}
		n += len(m.GetPayload().GetBody())
	}
}

// FullDuplexCall answers each message at once: through the proxies, it works only if neither
// buffers a stream.
func (a *grpcApp) FullDuplexCall(s grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := s.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: append([]byte("re:"), m.GetPayload().GetBody()...)}}); err != nil {
			return err
		}
	}
}

func startGRPCApp(t testing.TB) (addr string, app *grpcApp) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app = &grpcApp{authority: make(chan string, 1)}
	s := grpc.NewServer()
	testpb.RegisterTestServiceServer(s, app)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return ln.Addr().String(), app
}

// grpcPair starts back (inbound grpc to a gRPC app, allowing front) and front (outbound grpc
// to back), and returns a client of front's outbound listener. front requires its upstream to
// prove one of upstreamIDs (default back).
func grpcPair(t testing.TB, e *env, upstreamIDs ...string) (testpb.TestServiceClient, *proxyT, *proxyT, *grpcApp) {
	if len(upstreamIDs) == 0 {
		upstreamIDs = []string{"back"}
	}
	addr, app := startGRPCApp(t)
	bc := e.cfg("back", mrBack)
	bc.Inbound = []config.Inbound{{
		Name:      "api",
		Listen:    "127.0.0.1:0",
		Protocol:  config.ProtocolGRPC,
		ForwardTo: addr,
		Allow:     []string{"front"},
	}}
	back := e.start(bc)
	fc := e.cfg("front", mrFront)
	fc.Outbound = []config.Outbound{{
		Name:             "to-back",
		Listen:           "127.0.0.1:0",
		Protocol:         config.ProtocolGRPC,
		Upstream:         back.Addr("api"),
		UpstreamIdentity: upstreamIDs,
		Authority:        "back.internal",
	}}
	front := e.start(fc)
	return grpcClient(t, front.Addr("to-back")), front, back, app
}

// grpcFrame is a gRPC length-prefixed message, as it is on the wire (uncompressed).
func grpcFrame(t *testing.T, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 5, 5+len(b))
	binary.BigEndian.PutUint32(out[1:], uint32(len(b)))
	return append(out, b...)
}

func TestGRPCThroughTwoProxies(t *testing.T) {
	e := newEnv(t, time.Hour)
	c, _, back, app := grpcPair(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	t.Run("unary", func(t *testing.T) {
		var trailer metadata.MD
		resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("record 7")}}, grpc.Trailer(&trailer))
		if err != nil {
			t.Fatalf("UnaryCall: %v", err)
		}
		if got := string(resp.GetPayload().GetBody()); got != "echo:record 7" {
			t.Errorf("answer %q", got)
		}
		if !strings.Contains(resp.GetUsername(), `"peer":"front"`) {
			t.Errorf("the app was not handed the verified summary: %q", resp.GetUsername())
		}
		if got := <-app.authority; got != "back.internal" {
			t.Errorf("the app saw :authority %q, want the configured back.internal", got)
		}
		if got := trailer.Get("x-app-trailer"); len(got) != 1 || got[0] != "kept" {
			t.Errorf("the app's trailer: %q", got)
		}
		for k := range trailer {
			if strings.HasPrefix(k, "countersign-") {
				t.Errorf("the client got trailer %s (no receipt asked; an app's Countersign- trailers are dropped)", k)
			}
		}
	})

	t.Run("receipt", func(t *testing.T) {
		var trailer metadata.MD
		req := &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("scan")}}
		rctx := metadata.AppendToOutgoingContext(ctx, strings.ToLower(chain.HeaderWantReceipt), chain.ReceiptInline)
		if _, err := c.UnaryCall(rctx, req, grpc.Trailer(&trailer)); err != nil {
			t.Fatalf("UnaryCall: %v", err)
		}
		enc := trailer.Get(strings.ToLower(chain.HeaderReceipt))
		if len(enc) != 1 {
			t.Fatalf("receipt trailer: %d values; trailers %v", len(enc), trailer)
		}
		rc, err := chain.ParseReceipt([]byte(enc[0]))
		if err != nil {
			t.Fatal(err)
		}
		if rc.V != 2 || rc.Status != 200 {
			t.Errorf("receipt v %d status %d, want a v2 receipt of a 200 stream", rc.V, rc.Status)
		}
		if sum := sha256.Sum256(grpcFrame(t, req)); rc.RequestBody != b64(sum[:]) {
			t.Errorf("receipt requestBody %q, want the digest of the one message sent %q", rc.RequestBody, b64(sum[:]))
		}
		res, err := chain.VerifyReceipt(ctx, back.Engine, rc, []string{"front"}, []string{"back"}, 8)
		if err != nil {
			t.Fatalf("the receipt does not verify: %v", err)
		}
		if res.Answerer != "back" {
			t.Errorf("answerer %s", res.Answerer)
		}
		for _, tamper := range []func(r *chain.Receipt){
			func(r *chain.Receipt) { r.TrailersSHA256 = r.BodySHA256 },
			func(r *chain.Receipt) { r.RequestBody = "-" },
		} {
			bad := *rc
			tamper(&bad)
			if _, err := chain.VerifyReceipt(ctx, back.Engine, &bad, nil, nil, 8); err == nil {
				t.Error("a receipt with a changed trailers or request-body digest verified")
			}
		}
	})

	t.Run("app error is the app's status", func(t *testing.T) {
		_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("fail")}})
		if st, _ := status.FromError(err); st.Code() != codes.NotFound || st.Message() != "no such record" {
			t.Errorf("a trailers-only NotFound from the app reached the client as %v", err)
		}
	})

	t.Run("server streaming", func(t *testing.T) {
		s, err := c.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 10}, {Size: 70000}, {Size: 3}}})
		if err != nil {
			t.Fatal(err)
		}
		var sizes []int
		for {
			m, err := s.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("Recv: %v", err)
			}
			sizes = append(sizes, len(m.GetPayload().GetBody()))
		}
		if len(sizes) != 3 || sizes[0] != 10 || sizes[1] != 70000 || sizes[2] != 3 {
			t.Errorf("got messages of %v bytes", sizes)
		}
	})

	t.Run("client streaming", func(t *testing.T) {
		s, err := c.StreamingInputCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{5, 100000, 7} { // over 64 KiB in all: never buffered
			if err := s.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, n)}}); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := s.CloseAndRecv()
		if err != nil {
			t.Fatalf("CloseAndRecv: %v", err)
		}
		if resp.GetAggregatedPayloadSize() != 100012 {
			t.Errorf("the app counted %d bytes", resp.GetAggregatedPayloadSize())
		}
	})

	t.Run("bidirectional", func(t *testing.T) {
		s, err := c.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i, w := range []string{"a", "b", "c"} { // ping-pong: deadlocks if anything buffers
			if err := s.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte(w)}}); err != nil {
				t.Fatal(err)
			}
			m, err := s.Recv()
			if err != nil {
				t.Fatalf("Recv %d: %v", i, err)
			}
			if got := string(m.GetPayload().GetBody()); got != "re:"+w {
				t.Errorf("message %d: %q", i, got)
			}
		}
		if err := s.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); !errors.Is(err, io.EOF) {
			t.Errorf("end of the call: %v, want io.EOF (status OK)", err)
		}
	})
}

// TestGRPCRejectionIsStatus: a refused gRPC call is a gRPC status (PERMISSION_DENIED with the
// reason code), not an HTTP 403 that clients read as UNKNOWN.
func TestGRPCRejectionIsStatus(t *testing.T) {
	e := newEnv(t, time.Hour)
	// front requires its upstream to be "third": back's attestation is refused by front.
	c, _, _, _ := grpcPair(t, e, "third")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var hdr, trl metadata.MD
	_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.Header(&hdr), grpc.Trailer(&trl))
	st, _ := status.FromError(err)
	if st.Code() != codes.PermissionDenied {
		t.Fatalf("an upstream front does not accept: %v, want PERMISSION_DENIED", err)
	}
	code := append(hdr.Get("countersign-reject"), trl.Get("countersign-reject")...)
	if len(code) != 1 || code[0] == "" || !strings.Contains(st.Message(), code[0]) {
		t.Errorf("reason code %q, message %q: want the code in countersign-reject and in the message", code, st.Message())
	}
	// The outbound listener refuses a bad receipt request as a status too.
	rctx := metadata.AppendToOutgoingContext(ctx, strings.ToLower(chain.HeaderWantReceipt), "yes")
	_, err = c.UnaryCall(rctx, &testpb.SimpleRequest{})
	if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "receipt_request_invalid") {
		t.Errorf("a bad %s: %v, want INVALID_ARGUMENT receipt_request_invalid", chain.HeaderWantReceipt, err)
	}
}
