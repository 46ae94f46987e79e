package oipgrpc

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/countersign/countersign/inference-server/modelrepo"
	"github.com/countersign/countersign/inference-server/oip"
	pb "github.com/countersign/countersign/inference-server/oipgrpc/inferencepb"
	"github.com/countersign/countersign/inference-server/server"
	"github.com/countersign/countersign/internal/fuzzcorpus"
)

// doubler returns each input element doubled as its one output.
type doubler struct{}

func (doubler) Run(_ context.Context, in []oip.Tensor) ([]oip.Tensor, error) {
	x := in[0].Data.([]float32)
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = 2 * v
	}
	return []oip.Tensor{{Datatype: oip.FP32, Shape: append([]int64(nil), in[0].Shape...), Data: out}}, nil
}

func testConfig() modelrepo.Config {
	return modelrepo.Config{
		Name:         "fake",
		Version:      "1",
		Platform:     "fake",
		Model:        "model.onnx",
		SHA256:       strings.Repeat("ab", 32),
		MaxBatchSize: 8,
		Inputs:       []modelrepo.TensorSpec{{Name: "x", Datatype: oip.FP32, Shape: []int64{-1, 3}}},
		Outputs:      []modelrepo.TensorSpec{{Name: "y", Datatype: oip.FP32, Shape: []int64{-1, 3}, Labels: []string{"a", "b", "c"}}},
	}
}

// serve starts the service on loopback over a server with a fake model, and returns a client.
func serve(t *testing.T, o Options) (*server.Server, pb.GRPCInferenceServiceClient) {
	t.Helper()
	srv, err := server.New(server.Options{Models: []server.Model{{Config: testConfig(), Session: doubler{}}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registry: prometheus.NewRegistry(), MaxBodyBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := NewServer(srv, o)
	go func() { _ = gs.Serve(ln) }()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); gs.Stop(); srv.Close() })
	return srv, pb.NewGRPCInferenceServiceClient(conn)
}

func f32raw(v ...float32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

func rawRequest(model string, shape []int64, raw []byte) *pb.ModelInferRequest {
	return &pb.ModelInferRequest{ModelName: model, Id: "r",
		Inputs:           []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: oip.FP32, Shape: shape}},
		RawInputContents: [][]byte{raw}}
}

func TestHealthAndMetadata(t *testing.T) {
	srv, c := serve(t, Options{MaxRecvMsgBytes: 4096})
	ctx := context.Background()
	if r, err := c.ServerLive(ctx, &pb.ServerLiveRequest{}); err != nil || !r.GetLive() {
		t.Fatalf("ServerLive %v %v", r, err)
	}
	if r, err := c.ServerReady(ctx, &pb.ServerReadyRequest{}); err != nil || !r.GetReady() {
		t.Fatalf("ServerReady %v %v", r, err)
	}
	if r, err := c.ModelReady(ctx, &pb.ModelReadyRequest{Name: "fake", Version: "1"}); err != nil || !r.GetReady() {
		t.Fatalf("ModelReady %v %v", r, err)
	}
	if _, err := c.ModelReady(ctx, &pb.ModelReadyRequest{Name: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("ModelReady unknown: %v", err)
	}
	if _, err := c.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: "fake", Version: "2"}); status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), `serves version "1"`) {
		t.Fatalf("ModelMetadata unknown version: %v", err)
	}
	m, err := c.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: "fake"})
	if err != nil {
		t.Fatal(err)
	}
	if m.GetName() != "fake" || m.GetPlatform() != "fake" || m.GetProperties()["sha256"] != strings.Repeat("ab", 32) ||
		m.GetProperties()["labels.y"] != `["a","b","c"]` || len(m.GetInputs()) != 1 || m.GetInputs()[0].GetShape()[0] != -1 {
		t.Fatalf("ModelMetadata %v", m)
	}
	sm, err := c.ServerMetadata(ctx, &pb.ServerMetadataRequest{})
	if err != nil || sm.GetName() != server.Name || len(sm.GetExtensions()) == 0 {
		t.Fatalf("ServerMetadata %v %v", sm, err)
	}
	srv.SetReady(false)
	if r, err := c.ServerReady(ctx, &pb.ServerReadyRequest{}); err != nil || r.GetReady() {
		t.Fatalf("ServerReady while draining %v %v", r, err)
	}
}

func TestModelInferCodes(t *testing.T) {
	srv, c := serve(t, Options{MaxRecvMsgBytes: 4096})
	ctx := context.Background()
	r, err := c.ModelInfer(ctx, rawRequest("fake", []int64{1, 3}, f32raw(1, 2, -3)))
	if err != nil {
		t.Fatal(err)
	}
	if r.GetId() != "r" || len(r.GetRawOutputContents()) != 1 || string(r.GetRawOutputContents()[0]) != string(f32raw(2, 4, -6)) {
		t.Fatalf("response %v", r)
	}
	cases := []struct {
		name     string
		req      *pb.ModelInferRequest
		code     codes.Code
		contains string
	}{
		{"unknown model", rawRequest("nope", []int64{1, 3}, f32raw(1, 2, 3)), codes.NotFound, `model "nope" not found; this server serves "fake"`},
		{"short raw data", rawRequest("fake", []int64{1, 3}, f32raw(1, 2)), codes.InvalidArgument, "8 bytes of raw data, but the FP32 shape needs 3 elements of 4 bytes"},
		{"raw entries", &pb.ModelInferRequest{ModelName: "fake", Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FP32", Shape: []int64{1, 3}}}, RawInputContents: [][]byte{nil, nil}},
			codes.InvalidArgument, "raw_input_contents has 2 entries, the request has 1 inputs"},
		{"wrong contents field", &pb.ModelInferRequest{ModelName: "fake", Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FP32", Shape: []int64{1, 3},
			Contents: &pb.InferTensorContents{Fp64Contents: []float64{1, 2, 3}}}}}, codes.InvalidArgument, "FP32 data belongs in contents.fp32_contents, but contents.fp64_contents holds 3 values"},
		{"negative dimension", rawRequest("fake", []int64{-1, 3}, nil), codes.InvalidArgument, "negative dimension"},
		{"too large a message", rawRequest("fake", []int64{1, 3}, make([]byte, 5000)), codes.ResourceExhausted, "larger than max"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.ModelInfer(ctx, tc.req)
			if st := status.Convert(err); st.Code() != tc.code || !strings.Contains(st.Message(), tc.contains) {
				t.Errorf("got %v %q, want %v containing %q", st.Code(), st.Message(), tc.code, tc.contains)
			}
		})
	}
	srv.SetReady(false)
	if _, err := c.ModelInfer(ctx, rawRequest("fake", []int64{1, 3}, f32raw(1, 2, 3))); status.Code(err) != codes.Unavailable {
		t.Fatalf("while draining: %v, want Unavailable", err)
	}
}

// A client that pings more often than KeepaliveMinTime is sent GOAWAY (too_many_pings).
func TestKeepaliveEnforced(t *testing.T) {
	srv, err := server.New(server.Options{Models: []server.Model{{Config: testConfig(), Session: doubler{}}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registry: prometheus.NewRegistry(), MaxBodyBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := NewServer(srv, Options{KeepaliveMinTime: time.Hour})
	go func() { _ = gs.Serve(ln) }()
	defer gs.Stop()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(raw, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(raw, raw)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := fr.WritePing(false, [8]byte{byte(i)}); err != nil {
			break // the server may close first
		}
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY before %v", err)
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			if g.ErrCode != http2.ErrCodeEnhanceYourCalm || string(g.DebugData()) != "too_many_pings" {
				t.Fatalf("GOAWAY %v %q, want ENHANCE_YOUR_CALM too_many_pings", g.ErrCode, g.DebugData())
			}
			return
		}
	}
}

// FuzzDecodeRequest feeds arbitrary bytes, as a ModelInferRequest, to DecodeRequest: it must never
// panic, must fail only with *oip.Error, and what it accepts must fit the limits.
func FuzzDecodeRequest(f *testing.F) {
	p := func(m *pb.ModelInferRequest) []byte { b, _ := proto.Marshal(m); return b }
	seeds := [][]any{
		{p(rawRequest("fake", []int64{1, 3}, f32raw(1, 2, 3)))},
		{p(rawRequest("fake", []int64{1, 3}, f32raw(1, float32(math.NaN()), 3)))},
		{p(&pb.ModelInferRequest{ModelName: "m", Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FP32", Shape: []int64{2}, Contents: &pb.InferTensorContents{Fp32Contents: []float32{1, 2}}}},
			Outputs: []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "y", Parameters: map[string]*pb.InferParameter{"classification": {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: 2}}}}}})},
		{p(&pb.ModelInferRequest{Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "s", Datatype: "BYTES", Shape: []int64{1}, Contents: &pb.InferTensorContents{BytesContents: [][]byte{[]byte("hi")}}}},
			Parameters: map[string]*pb.InferParameter{"binary_data_output": {ParameterChoice: &pb.InferParameter_BoolParam{BoolParam: true}}}})},
		{p(&pb.ModelInferRequest{Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "i", Datatype: "INT8", Shape: []int64{2}, Contents: &pb.InferTensorContents{IntContents: []int32{-128, 300}}}}})},
		{p(&pb.ModelInferRequest{Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "h", Datatype: "FP16", Shape: []int64{1}}}, RawInputContents: [][]byte{{0, 0x7c}}})},
	}
	if *fuzzcorpus.Update {
		if err := fuzzcorpus.Write("FuzzDecodeRequest", seeds...); err != nil {
			f.Fatal(err)
		}
	}
	for _, s := range seeds {
		f.Add(s[0].([]byte))
	}
	lim := oip.Limits{
		MaxInputs:   4,
		MaxOutputs:  4,
		MaxRank:     4,
		MaxElements: 1 << 12,
		MaxString:   256,
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m pb.ModelInferRequest
		if proto.Unmarshal(b, &m) != nil {
			return
		}
		req, err := DecodeRequest(&m, nil, lim)
		if err != nil {
			if _, ok := err.(*oip.Error); !ok {
				t.Fatalf("error %T: %v", err, err)
			}
			return
		}
		if len(req.Inputs) == 0 || len(req.Inputs) > lim.MaxInputs || len(req.Outputs) > lim.MaxOutputs {
			t.Fatalf("accepted %d inputs, %d outputs", len(req.Inputs), len(req.Outputs))
		}
		for _, in := range req.Inputs {
			n := int64(1)
			for _, d := range in.Shape {
				if d < 0 {
					t.Fatalf("negative dimension %v", in.Shape)
				}
				n *= d
			}
			if len(in.Shape) > lim.MaxRank || n > lim.MaxElements || int64(in.Len()) != n || in.Name == "" {
				t.Fatalf("inconsistent tensor %+v", in)
			}
		}
	})
}

// FuzzUnmarshalInferRequest checks the aliasing decoder of the server's codec against
// proto.Unmarshal on any bytes: the same verdict, and equal messages when both accept.
func FuzzUnmarshalInferRequest(f *testing.F) {
	p := func(m *pb.ModelInferRequest) []byte { b, _ := proto.Marshal(m); return b }
	two := rawRequest("fake", []int64{1, 3}, f32raw(1, 2, 3))
	two.RawInputContents = append(two.RawInputContents, []byte{}, []byte("x"))
	seeds := [][]any{
		{p(rawRequest("fake", []int64{1, 3}, f32raw(1, 2, 3)))},
		{p(two)},
		{append(p(rawRequest("m", []int64{2}, f32raw(1, 2))), p(&pb.ModelInferRequest{Id: "later fields merge"})...)},
		{[]byte{0x3a, 0x05, 'a'}},        // raw_input_contents with a length past the end
		{[]byte{0x38, 0x01}},             // field 7 with the varint wire type
		{[]byte{0x0a, 0x02, 0xff, 0xfe}}, // model_name not UTF-8
	}
	if *fuzzcorpus.Update {
		if err := fuzzcorpus.Write("FuzzUnmarshalInferRequest", seeds...); err != nil {
			f.Fatal(err)
		}
	}
	for _, s := range seeds {
		f.Add(s[0].([]byte))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var want, got pb.ModelInferRequest
		errWant := proto.Unmarshal(b, &want)
		errGot := unmarshalInferRequest(b, &got)
		if (errWant == nil) != (errGot == nil) {
			t.Fatalf("proto.Unmarshal: %v; unmarshalInferRequest: %v", errWant, errGot)
		}
		if errWant == nil && !proto.Equal(&want, &got) {
			t.Fatalf("messages differ:\n%v\n%v", &want, &got)
		}
	})
}

// BenchmarkUnmarshal224 decodes a 224×224 FP32 ModelInferRequest from the wire into tensors, with
// grpc-go's protobuf codec and with the server's aliasing codec.
func BenchmarkUnmarshal224(b *testing.B) {
	m := rawRequest("fake", []int64{1, 1, 224, 224}, make([]byte, 4*224*224))
	wire, err := proto.Marshal(m)
	if err != nil {
		b.Fatal(err)
	}
	// Two buffers, as a message spread over several DATA frames arrives.
	half := len(wire) / 2
	data := mem.BufferSlice{mem.SliceBuffer(wire[:half]), mem.SliceBuffer(wire[half:])}
	ours := &codec{pool: mem.DefaultBufferPool()}
	for _, c := range []struct {
		name  string
		codec encoding.CodecV2
	}{{"grpc-proto", protoCodec}, {"aliasing", ours}} {
		b.Run(c.name, func(b *testing.B) {
			var bufs oip.Buffers
			b.SetBytes(int64(len(wire)))
			b.ReportAllocs()
			for b.Loop() {
				var r pb.ModelInferRequest
				if err := c.codec.Unmarshal(data, &r); err != nil {
					b.Fatal(err)
				}
				if _, err := DecodeRequest(&r, &bufs, oip.DefaultLimits); err != nil {
					b.Fatal(err)
				}
				ours.release(&r)
				bufs.Reset()
			}
		})
	}
}
