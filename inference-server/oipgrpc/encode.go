package oipgrpc

import (
	"fmt"

	"github.com/countersign/countersign/inference-server/oip"
	pb "github.com/countersign/countersign/inference-server/oipgrpc/inferencepb"
)

// EncodeResponse turns a response into a ModelInferResponse. Outputs marked binary (a request with
// raw inputs) go into raw_output_contents, the others into their contents field. It copies all
// data, so the response does not refer to resp's memory.
func EncodeResponse(resp *oip.InferResponse) (*pb.ModelInferResponse, error) {
	out := &pb.ModelInferResponse{ModelName: resp.ModelName, ModelVersion: resp.ModelVersion, Id: resp.ID,
		Outputs: make([]*pb.ModelInferResponse_InferOutputTensor, len(resp.Outputs))}
	raw := len(resp.Binary) > 0 && resp.Binary[0]
	if raw {
		out.RawOutputContents = make([][]byte, len(resp.Outputs))
	}
	for i := range resp.Outputs {
		t := &resp.Outputs[i]
		ot := &pb.ModelInferResponse_InferOutputTensor{Name: t.Name, Datatype: t.Datatype, Shape: append([]int64(nil), t.Shape...)}
		out.Outputs[i] = ot
		if raw {
			if !oip.CanAppendBinary(t) {
				return nil, fmt.Errorf("output %q: %s cannot be sent raw", t.Name, t.Datatype)
			}
			out.RawOutputContents[i] = oip.AppendBinary(make([]byte, 0, oip.BinarySize(t)), t)
			continue
		}
		c, err := typedContents(t)
		if err != nil {
			return nil, err
		}
		ot.Contents = c
	}
	return out, nil
}

func typedContents(t *oip.Tensor) (*pb.InferTensorContents, error) {
	c := &pb.InferTensorContents{}
	switch v := t.Data.(type) {
	case []bool:
		c.BoolContents = append([]bool(nil), v...)
	case []int8:
		c.IntContents = widen[int32](v)
	case []int16:
		c.IntContents = widen[int32](v)
	case []int32:
		c.IntContents = append([]int32(nil), v...)
	case []int64:
		c.Int64Contents = append([]int64(nil), v...)
	case []uint8:
		c.UintContents = widen[uint32](v)
	case []uint16:
		c.UintContents = widen[uint32](v)
	case []uint32:
		c.UintContents = append([]uint32(nil), v...)
	case []uint64:
		c.Uint64Contents = append([]uint64(nil), v...)
	case []float32:
		if t.Datatype == oip.FP16 {
			return nil, fmt.Errorf("output %q: FP16 has no contents field; ask with raw_input_contents to get raw outputs", t.Name)
		}
		c.Fp32Contents = append([]float32(nil), v...)
	case []float64:
		c.Fp64Contents = append([]float64(nil), v...)
	case []string:
		c.BytesContents = make([][]byte, len(v))
		for i, s := range v {
			c.BytesContents[i] = []byte(s)
		}
	default:
		return nil, fmt.Errorf("output %q: unsupported data %T", t.Name, t.Data)
	}
	return c, nil
}

func widen[W int32 | uint32, T int8 | int16 | uint8 | uint16](v []T) []W {
	out := make([]W, len(v))
	for i, x := range v {
		out[i] = W(x)
	}
	return out
}
