// Package oip implements the wire format of the Open Inference Protocol v2 REST API (the KServe
// and Triton "v2" protocol) for JSON tensors: a strict, bounded decoder for inference requests
// (untrusted bytes) and an allocation-light encoder for responses.
package oip

import "fmt"

// Datatype names of the protocol.
const (
	BOOL   = "BOOL"
	UINT8  = "UINT8"
	UINT16 = "UINT16"
	UINT32 = "UINT32"
	UINT64 = "UINT64"
	INT8   = "INT8"
	INT16  = "INT16"
	INT32  = "INT32"
	INT64  = "INT64"
	FP16   = "FP16"
	FP32   = "FP32"
	FP64   = "FP64"
	BYTES  = "BYTES"
)

// Tensor is a named tensor. Data holds the row-major elements in the Go type of the datatype:
// []bool, []uint8, []uint16, []uint32, []uint64, []int8, []int16, []int32, []int64, []float32
// (FP32 and FP16), []float64 or []string (BYTES).
type Tensor struct {
	Name     string
	Datatype string
	Shape    []int64
	Data     any
	// NonFinite is set by the decoder when the data held a NaN or an infinity (written as the
	// bare tokens NaN, Infinity or -Infinity, which JSON itself cannot express).
	NonFinite bool
}

// Len returns the number of elements in t.Data.
func (t *Tensor) Len() int { return dataLen(t.Data) }

func dataLen(d any) int {
	switch v := d.(type) {
	case []bool:
		return len(v)
	case []uint8:
		return len(v)
	case []uint16:
		return len(v)
	case []uint32:
		return len(v)
	case []uint64:
		return len(v)
	case []int8:
		return len(v)
	case []int16:
		return len(v)
	case []int32:
		return len(v)
	case []int64:
		return len(v)
	case []float32:
		return len(v)
	case []float64:
		return len(v)
	case []string:
		return len(v)
	}
	return -1
}

// RequestedOutput is one entry of a request's "outputs".
type RequestedOutput struct {
	Name string
	// Classification > 0 asks for the top-k classes of this output instead of its raw values
	// (the classification extension): a BYTES tensor of "score:index[:label]" strings.
	Classification int
	// Binary asks for this output's data as raw bytes after the JSON response (the binary
	// tensor data extension).
	Binary bool
}

// InferRequest is a decoded inference request.
type InferRequest struct {
	ID         string
	Parameters map[string]any // string, float64 or bool values
	Inputs     []Tensor
	Outputs    []RequestedOutput
	// BinaryOutput asks for every output's data as raw bytes (parameter binary_data_output).
	BinaryOutput bool
}

// InferResponse is an inference response.
type InferResponse struct {
	ModelName    string
	ModelVersion string
	ID           string
	Outputs      []Tensor
	// Binary marks, per output, data to send as raw bytes after the JSON (nil: none).
	Binary []bool
}

// Limits bound what the decoder accepts beyond the body size.
type Limits struct {
	MaxInputs   int   // inputs per request
	MaxOutputs  int   // requested outputs per request
	MaxRank     int   // dimensions per tensor
	MaxElements int64 // elements per tensor
	MaxString   int   // bytes per string (names, ids, BYTES elements)
}

// DefaultLimits are generous for image models and still bounded.
var DefaultLimits = Limits{
	MaxInputs:   32,
	MaxOutputs:  32,
	MaxRank:     8,
	MaxElements: 1 << 24,
	MaxString:   1 << 16,
}

// Error is a protocol error: the request was malformed or does not fit the model. Its message is
// safe to return to the client.
type Error struct{ Msg string }

func (e *Error) Error() string { return e.Msg }

func errorf(format string, args ...any) error { return &Error{Msg: fmt.Sprintf(format, args...)} }
