package oipgrpc

import (
	"math"

	"github.com/countersign/countersign/inference-server/oip"
	pb "github.com/countersign/countersign/inference-server/oipgrpc/inferencepb"
)

// DecodeRequest turns a ModelInferRequest (untrusted: protobuf has checked only its wire form)
// into the protocol-neutral request, with the same limits as the REST decoder. Inputs carry
// their data either all in raw_input_contents (one entry per input, in input order, little-endian
// as in the binary tensor data extension) or each in its contents field of the datatype; mixing
// the two is refused, as the protocol says. A request with raw inputs gets raw outputs
// (InferRequest.BinaryOutput). FP32 and FP16 memory comes from bufs (nil: allocate). Every
// failure is an *oip.Error that says what was wrong and what was expected.
func DecodeRequest(r *pb.ModelInferRequest, bufs *oip.Buffers, lim oip.Limits) (*oip.InferRequest, error) {
	if len(r.GetId()) > lim.MaxString {
		return nil, oip.Errorf("id is %d bytes, longer than the %d-byte limit", len(r.GetId()), lim.MaxString)
	}
	ins := r.GetInputs()
	if len(ins) == 0 {
		return nil, oip.Errorf("request has no inputs")
	}
	if len(ins) > lim.MaxInputs {
		return nil, oip.Errorf("too many inputs: %d (limit %d)", len(ins), lim.MaxInputs)
	}
	if len(r.GetOutputs()) > lim.MaxOutputs {
		return nil, oip.Errorf("too many outputs: %d (limit %d)", len(r.GetOutputs()), lim.MaxOutputs)
	}
	raw := r.GetRawInputContents()
	if len(raw) > 0 && len(raw) != len(ins) {
		return nil, oip.Errorf("raw_input_contents has %d entries, the request has %d inputs; give one entry per input, in input order", len(raw), len(ins))
	}
	params, err := parameters(r.GetParameters(), lim)
	if err != nil {
		return nil, err
	}
	req := &oip.InferRequest{ID: r.GetId(), Parameters: params, Inputs: make([]oip.Tensor, 0, len(ins)), BinaryOutput: len(raw) > 0}
	for i, in := range ins {
		name := in.GetName()
		switch {
		case name == "":
			return nil, oip.Errorf("input %d has no name", i)
		case len(name) > lim.MaxString:
			return nil, oip.Errorf("input %d: name longer than the %d-byte limit", i, lim.MaxString)
		case in.GetDatatype() == "":
			return nil, oip.Errorf("input %q: missing datatype", name)
		}
		var t oip.Tensor
		if len(raw) > 0 {
			if in.GetContents() != nil {
				return nil, oip.Errorf("input %q: has contents while the request uses raw_input_contents; send every input's data one way", name)
			}
			t, err = bufs.DecodeRaw(name, in.GetDatatype(), in.GetShape(), raw[i], lim)
		} else {
			t, err = contents(name, in.GetDatatype(), in.GetShape(), in.GetContents(), lim)
		}
		if err != nil {
			return nil, err
		}
		req.Inputs = append(req.Inputs, t)
	}
	for _, o := range r.GetOutputs() {
		ro := oip.RequestedOutput{Name: o.GetName()}
		if ro.Name == "" || len(ro.Name) > lim.MaxString {
			return nil, oip.Errorf("requested output without a name, or one longer than %d bytes", lim.MaxString)
		}
		for k, p := range o.GetParameters() {
			switch k {
			case "classification":
				n, ok := intParam(p)
				if !ok || n < 0 || n > math.MaxInt32 {
					return nil, oip.Errorf("output %q: parameter \"classification\" must be a non-negative integer", ro.Name)
				}
				ro.Classification = int(n)
			case "binary_data":
				// Output data is raw when the inputs are (see DecodeRequest); nothing to do.
			}
		}
		req.Outputs = append(req.Outputs, ro)
	}
	return req, nil
}

// parameters converts request parameters to the decoder's value types (string, float64, bool).
func parameters(p map[string]*pb.InferParameter, lim oip.Limits) (map[string]any, error) {
	if len(p) == 0 {
		return nil, nil
	}
	out := make(map[string]any, len(p))
	for k, v := range p {
		if len(k) > lim.MaxString {
			return nil, oip.Errorf("parameter name longer than the %d-byte limit", lim.MaxString)
		}
		switch c := v.GetParameterChoice().(type) {
		case *pb.InferParameter_BoolParam:
			out[k] = c.BoolParam
		case *pb.InferParameter_Int64Param:
			out[k] = float64(c.Int64Param)
		case *pb.InferParameter_Uint64Param:
			out[k] = float64(c.Uint64Param)
		case *pb.InferParameter_DoubleParam:
			out[k] = c.DoubleParam
		case *pb.InferParameter_StringParam:
			if len(c.StringParam) > lim.MaxString {
				return nil, oip.Errorf("parameter %q: value longer than the %d-byte limit", k, lim.MaxString)
			}
			out[k] = c.StringParam
		default:
			return nil, oip.Errorf("parameter %q: no value", k)
		}
	}
	if _, ok := out["binary_data_output"]; ok {
		if _, isBool := out["binary_data_output"].(bool); !isBool {
			return nil, oip.Errorf("parameter \"binary_data_output\" must be a boolean")
		}
	}
	return out, nil
}

func intParam(p *pb.InferParameter) (int64, bool) {
	switch c := p.GetParameterChoice().(type) {
	case *pb.InferParameter_Int64Param:
		return c.Int64Param, true
	case *pb.InferParameter_Uint64Param:
		return int64(c.Uint64Param), c.Uint64Param <= math.MaxInt64
	case *pb.InferParameter_DoubleParam:
		return int64(c.DoubleParam), c.DoubleParam == math.Trunc(c.DoubleParam) && math.Abs(c.DoubleParam) < 1<<53
	}
	return 0, false
}

// contentsField names, per datatype, the InferTensorContents field that carries its data.
func contentsField(datatype string) string {
	switch datatype {
	case oip.BOOL:
		return "bool_contents"
	case oip.INT8, oip.INT16, oip.INT32:
		return "int_contents"
	case oip.INT64:
		return "int64_contents"
	case oip.UINT8, oip.UINT16, oip.UINT32:
		return "uint_contents"
	case oip.UINT64:
		return "uint64_contents"
	case oip.FP32:
		return "fp32_contents"
	case oip.FP64:
		return "fp64_contents"
	case oip.BYTES:
		return "bytes_contents"
	}
	return ""
}

// contents decodes an input's typed contents: the field of its datatype must hold exactly the
// shape's element count, and no other field may hold anything.
func contents(name, datatype string, shape []int64, c *pb.InferTensorContents, lim oip.Limits) (oip.Tensor, error) {
	t := oip.Tensor{Name: name, Datatype: datatype, Shape: shape}
	want, err := oip.Elements(name, shape, lim)
	if err != nil {
		return t, err
	}
	field := contentsField(datatype)
	if field == "" {
		if datatype == oip.FP16 {
			return t, oip.Errorf("input %q: FP16 has no contents field; send its data in raw_input_contents", name)
		}
		return t, oip.Errorf("input %q: unknown datatype %q", name, datatype)
	}
	counts := map[string]int{
		"bool_contents":   len(c.GetBoolContents()),
		"int_contents":    len(c.GetIntContents()),
		"int64_contents":  len(c.GetInt64Contents()),
		"uint_contents":   len(c.GetUintContents()),
		"uint64_contents": len(c.GetUint64Contents()),
		"fp32_contents":   len(c.GetFp32Contents()),
		"fp64_contents":   len(c.GetFp64Contents()),
		"bytes_contents":  len(c.GetBytesContents()),
	}
	for f, n := range counts {
		if f != field && n > 0 {
			return t, oip.Errorf("input %q: %s data belongs in contents.%s, but contents.%s holds %d values", name, datatype, field, f, n)
		}
	}
	if n := counts[field]; int64(n) != want {
		return t, oip.Errorf("input %q: shape %v needs %d elements, contents.%s has %d", name, shape, want, field, n)
	}
	switch datatype {
	case oip.BOOL:
		t.Data = c.GetBoolContents()
	case oip.INT8:
		t.Data, err = narrow[int8](name, datatype, c.GetIntContents(), math.MinInt8, math.MaxInt8)
	case oip.INT16:
		t.Data, err = narrow[int16](name, datatype, c.GetIntContents(), math.MinInt16, math.MaxInt16)
	case oip.INT32:
		t.Data = c.GetIntContents()
	case oip.INT64:
		t.Data = c.GetInt64Contents()
	case oip.UINT8:
		t.Data, err = narrow[uint8](name, datatype, c.GetUintContents(), 0, math.MaxUint8)
	case oip.UINT16:
		t.Data, err = narrow[uint16](name, datatype, c.GetUintContents(), 0, math.MaxUint16)
	case oip.UINT32:
		t.Data = c.GetUintContents()
	case oip.UINT64:
		t.Data = c.GetUint64Contents()
	case oip.FP32:
		v := c.GetFp32Contents()
		t.Data, t.NonFinite = v, oip.AnyNonFinite32(v)
	case oip.FP64:
		v := c.GetFp64Contents()
		for _, x := range v {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				t.NonFinite = true
				break
			}
		}
		t.Data = v
	case oip.BYTES:
		v := c.GetBytesContents()
		s := make([]string, len(v))
		for i, b := range v {
			if len(b) > lim.MaxString {
				return t, oip.Errorf("input %q: BYTES element %d is %d bytes, longer than the %d-byte limit", name, i, len(b), lim.MaxString)
			}
			s[i] = string(b)
		}
		t.Data = s
	}
	return t, err
}

// narrow converts the protocol's wide integer contents to a narrower datatype, refusing values
// out of its range.
func narrow[T int8 | int16 | uint8 | uint16, W int32 | uint32](name, datatype string, v []W, lo, hi int64) ([]T, error) {
	out := make([]T, len(v))
	for i, x := range v {
		if int64(x) < lo || int64(x) > hi {
			return nil, oip.Errorf("input %q: element %d is %d, out of the %s range %d..%d", name, i, x, datatype, lo, hi)
		}
		out[i] = T(x)
	}
	return out, nil
}
