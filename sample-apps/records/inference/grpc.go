package inference

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/countersign/countersign/inference-server/oipgrpc/inferencepb"
)

// GRPC is a Client over the Open Inference Protocol v2 gRPC service (ModelInfer with
// raw_input_contents). Like OIP it is an unmodified app's client: plaintext HTTP/2 (h2c) to a
// loopback address, where a sidecar can sit; it sends the receipt request as metadata and keeps
// a receipt from the response headers or trailers.
type GRPC struct {
	Client  pb.GRPCInferenceServiceClient
	Model   string
	Timeout time.Duration // of one call; 0: the caller's context only
}

// DialGRPC returns a connection to addr (host:port) with insecure (h2c) credentials and the
// response size bounded by MaxResponseBytes. It connects lazily; close it when done.
func DialGRPC(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxResponseBytes)))
}

// receiptKey and wantReceiptKey are the HTTP headers of the REST client as gRPC metadata keys.
var (
	receiptKey     = strings.ToLower(ReceiptHeader)
	wantReceiptKey = strings.ToLower(WantReceiptHeader)
)

// Diagnose implements Client. Result.Body is the response message as received (EncodingGRPC).
func (c *GRPC) Diagnose(ctx context.Context, id string, t []float32, side int) (*Result, error) {
	if len(t) != side*side {
		return nil, fmt.Errorf("tensor of %d values, expected %d", len(t), side*side)
	}
	raw := make([]byte, 0, 4*len(t))
	for _, v := range t {
		raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(v))
	}
	req := &pb.ModelInferRequest{
		ModelName:        c.Model,
		Id:               id,
		Inputs:           []*pb.ModelInferRequest_InferInputTensor{{Name: "scan", Datatype: "FP32", Shape: []int64{1, 1, int64(side), int64(side)}}},
		RawInputContents: [][]byte{raw},
		Outputs: []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "probabilities",
			Parameters: map[string]*pb.InferParameter{"classification": {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: 3}}}}},
	}
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	ctx = metadata.AppendToOutgoingContext(ctx, wantReceiptKey, "inline")
	var header, trailer metadata.MD
	rc := &rawCodec{CodecV2: encoding.GetCodecV2(grpcproto.Name)}
	resp, err := c.Client.ModelInfer(ctx, req, grpc.Header(&header), grpc.Trailer(&trailer), grpc.ForceCodecV2(rc))
	if err != nil {
		st := status.Convert(err)
		e := &Error{Msg: fmt.Sprintf("inference server answered %s: %s", st.Code(), st.Message())}
		if r := first(header, trailer, "countersign-reject"); r != "" {
			e.Reject = r
		}
		return nil, e
	}
	res, err := parseGRPC(resp)
	if err != nil {
		return nil, &Error{Msg: err.Error()}
	}
	// The response body as the sidecar's receipt covers it: the gRPC message as on the wire (an
	// uncompressed length-prefixed message), not a re-encoding of the decoded one.
	res.Body = binary.BigEndian.AppendUint32([]byte{0}, uint32(len(rc.got)))
	res.Body = append(res.Body, rc.got...)
	res.Encoding = EncodingGRPC
	res.Receipt = first(header, trailer, receiptKey)
	return res, nil
}

// rawCodec is the proto codec that also keeps the bytes of the message it decodes (one call's).
type rawCodec struct {
	encoding.CodecV2
	got []byte
}

func (c *rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	c.got = data.Materialize()
	return c.CodecV2.Unmarshal(data, v)
}

func first(header, trailer metadata.MD, key string) string {
	if v := header.Get(key); len(v) > 0 {
		return v[0]
	}
	if v := trailer.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// parseGRPC reads the "probabilities" output, a classification: BYTES elements
// "score:index:label", raw (each a little-endian u32 length and its bytes) or in bytes_contents.
func parseGRPC(resp *pb.ModelInferResponse) (*Result, error) {
	body, err := protojson.Marshal(resp)
	if err != nil {
		return nil, err
	}
	for i, o := range resp.GetOutputs() {
		if o.GetName() != "probabilities" {
			continue
		}
		if o.GetDatatype() != "BYTES" {
			return nil, fmt.Errorf("probabilities output is %s, not a classification (BYTES)", o.GetDatatype())
		}
		var items []string
		if raws := resp.GetRawOutputContents(); len(raws) > 0 {
			if i >= len(raws) {
				return nil, errors.New("raw_output_contents has no entry for the probabilities output")
			}
			for b := raws[i]; len(b) > 0; {
				if len(b) < 4 || int(binary.LittleEndian.Uint32(b)) > len(b)-4 {
					return nil, errors.New("probabilities output: malformed raw BYTES element")
				}
				n := int(binary.LittleEndian.Uint32(b))
				items, b = append(items, string(b[4:4+n])), b[4+n:]
			}
		} else {
			for _, b := range o.GetContents().GetBytesContents() {
				items = append(items, string(b))
			}
		}
		if len(items) == 0 {
			return nil, errors.New("probabilities output is empty")
		}
		res := &Result{Model: resp.GetModelName(), ModelVersion: resp.GetModelVersion(), Body: body}
		if err := res.classify(items); err != nil {
			return nil, err
		}
		return res, nil
	}
	return nil, errors.New("response has no probabilities output")
}
