package oipgrpc

import (
	"sync"

	"google.golang.org/grpc/encoding"
	gproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/countersign/countersign/inference-server/oipgrpc/inferencepb"
)

// codec is the server's gRPC codec: protobuf, except that a ModelInferRequest's
// raw_input_contents alias the received message (one pooled buffer) instead of each being copied
// into a fresh allocation, as protobuf's decoder does with every bytes field. A 224×224 FP32 scan
// is 200 KB: without this, each call allocates and clears that much and copies it twice more
// before the tensor decode copies it into pooled tensor memory. The buffer goes back to the pool
// when the handler calls release, right after the request is decoded into tensors (which never
// alias the raw bytes: DecodeRaw copies).
type codec struct {
	pool mem.BufferPool
	held sync.Map // *pb.ModelInferRequest → mem.Buffer
}

var protoCodec = encoding.GetCodecV2(gproto.Name)

func (*codec) Name() string { return gproto.Name }

func (*codec) Marshal(v any) (mem.BufferSlice, error) { return protoCodec.Marshal(v) }

func (c *codec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*pb.ModelInferRequest)
	if !ok {
		return protoCodec.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(c.pool)
	if err := unmarshalInferRequest(buf.ReadOnlyData(), r); err != nil {
		buf.Free()
		return err
	}
	c.held.Store(r, buf)
	return nil
}

// release returns the buffer r's raw_input_contents alias to the pool and drops them from r.
func (c *codec) release(r *pb.ModelInferRequest) {
	if b, ok := c.held.LoadAndDelete(r); ok {
		r.RawInputContents = nil
		b.(mem.Buffer).Free()
	}
}

// rawInputContents is the field number of ModelInferRequest.raw_input_contents.
const rawInputContents = 7

// unmarshalInferRequest is proto.Unmarshal for a ModelInferRequest whose raw_input_contents
// alias b. It walks the top-level fields: each raw_input_contents entry is taken as a slice of
// b; every other field is copied, in order, into a small remainder that proto.Unmarshal decodes
// (so those fields get protobuf's own validation). FuzzUnmarshalInferRequest checks that it
// accepts what proto.Unmarshal accepts and yields an equal message.
func unmarshalInferRequest(b []byte, r *pb.ModelInferRequest) error {
	var raws [][]byte
	var rest []byte
	for off := 0; off < len(b); {
		num, typ, n := protowire.ConsumeTag(b[off:])
		if n < 0 {
			return proto.Unmarshal(b, r) // protobuf's own error for the malformed input
		}
		m := protowire.ConsumeFieldValue(num, typ, b[off+n:])
		if m < 0 {
			return proto.Unmarshal(b, r)
		}
		if num == rawInputContents && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b[off+n:])
			raws = append(raws, v[:len(v):len(v)])
		} else {
			rest = append(rest, b[off:off+n+m]...)
		}
		off += n + m
	}
	if err := proto.Unmarshal(rest, r); err != nil {
		return err
	}
	r.RawInputContents = append(r.RawInputContents, raws...)
	return nil
}
