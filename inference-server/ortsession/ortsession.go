// Package ortsession runs models with ONNX Runtime through github.com/yalue/onnxruntime_go
// (v1.27.0, built against the ORT 1.24.1 C API). It implements server.Session on a shared
// DynamicAdvancedSession, which ONNX Runtime allows to Run concurrently.
package ortsession

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/countersign/countersign/inference-server/modelrepo"
	"github.com/countersign/countersign/inference-server/oip"
)

// Version is the ONNX Runtime release this package is built for.
const Version = "1.24.1"

// LibraryPath returns where the fetched library lives: $ONNXRUNTIME_LIB if set, else
// $COUNTERSIGN_CACHE/onnxruntime/1.24.1/libonnxruntime.so.1, else the same under
// <repoRoot>/.cache (repoRoot may be empty to skip that fallback).
func LibraryPath(repoRoot string) string {
	if p := os.Getenv("ONNXRUNTIME_LIB"); p != "" {
		return p
	}
	rel := filepath.Join("onnxruntime", Version, "libonnxruntime.so.1")
	if c := os.Getenv("COUNTERSIGN_CACHE"); c != "" {
		return filepath.Join(c, rel)
	}
	if repoRoot == "" {
		return ""
	}
	return filepath.Join(repoRoot, ".cache", rel)
}

var (
	initMu   sync.Mutex
	initPath string
)

// Init loads the ONNX Runtime shared library and creates the process-wide environment. ONNX
// Runtime has one environment per process, so Init may be called again only with the same path.
func Init(libPath string) error {
	initMu.Lock()
	defer initMu.Unlock()
	if ort.IsInitialized() {
		if libPath != initPath {
			return fmt.Errorf("onnxruntime already initialised from %s, not %s", initPath, libPath)
		}
		return nil
	}
	if _, err := os.Stat(libPath); err != nil {
		return fmt.Errorf("onnxruntime library: %w (run `make onnxruntime`, or set --onnxruntime-lib / ONNXRUNTIME_LIB)", err)
	}
	ort.SetSharedLibraryPath(libPath)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		return fmt.Errorf("onnxruntime %s: %w", libPath, err)
	}
	if v := ort.GetVersion(); v != Version {
		_ = ort.DestroyEnvironment()
		return fmt.Errorf("onnxruntime %s is version %s; this build needs %s", libPath, v, Version)
	}
	initPath = libPath
	return nil
}

// Options tune sessions.
type Options struct {
	IntraOpThreads int // 0: ONNX Runtime's default (one per core)
	InterOpThreads int // 0: default
}

// Session is a loaded model.
type Session struct {
	s      *ort.DynamicAdvancedSession
	inputs []modelrepo.TensorSpec
	nOut   int
}

// New creates a session for a verified model. It checks that the ONNX graph's inputs and outputs
// match the config (names, element types, ranks, fixed dimensions), so the config cannot claim a
// different interface than the model has. The session is built from m.Bytes, the exact bytes
// whose digest was checked.
func New(m *modelrepo.Model, o Options) (*Session, error) {
	if !ort.IsInitialized() {
		return nil, errors.New("onnxruntime is not initialised (call ortsession.Init)")
	}
	ins, outs, err := ort.GetInputOutputInfoWithONNXData(m.Bytes)
	if err != nil {
		return nil, fmt.Errorf("model %s: reading ONNX inputs and outputs: %w", m.Name, err)
	}
	if err := match("input", m.Inputs, ins); err != nil {
		return nil, fmt.Errorf("model %s: %w", m.Name, err)
	}
	if err := match("output", m.Outputs, outs); err != nil {
		return nil, fmt.Errorf("model %s: %w", m.Name, err)
	}
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return nil, err
	}
	defer opts.Destroy()
	if o.IntraOpThreads > 0 {
		if err := opts.SetIntraOpNumThreads(o.IntraOpThreads); err != nil {
			return nil, err
		}
	}
	if o.InterOpThreads > 0 {
		if err := opts.SetInterOpNumThreads(o.InterOpThreads); err != nil {
			return nil, err
		}
	}
	names := func(ts []modelrepo.TensorSpec) []string {
		out := make([]string, len(ts))
		for i, t := range ts {
			out[i] = t.Name
		}
		return out
	}
	s, err := ort.NewDynamicAdvancedSessionWithONNXData(m.Bytes, names(m.Inputs), names(m.Outputs), opts)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", m.Name, err)
	}
	return &Session{s: s, inputs: m.Inputs, nOut: len(m.Outputs)}, nil
}

// Close releases the session.
func (s *Session) Close() error { return s.s.Destroy() }

var elemTypes = map[string]ort.TensorElementDataType{
	oip.BOOL:   ort.TensorElementDataTypeBool,
	oip.UINT8:  ort.TensorElementDataTypeUint8,
	oip.UINT16: ort.TensorElementDataTypeUint16,
	oip.UINT32: ort.TensorElementDataTypeUint32,
	oip.UINT64: ort.TensorElementDataTypeUint64,
	oip.INT8:   ort.TensorElementDataTypeInt8,
	oip.INT16:  ort.TensorElementDataTypeInt16,
	oip.INT32:  ort.TensorElementDataTypeInt32,
	oip.INT64:  ort.TensorElementDataTypeInt64,
	oip.FP32:   ort.TensorElementDataTypeFloat,
	oip.FP64:   ort.TensorElementDataTypeDouble,
	oip.FP16:   ort.TensorElementDataTypeFloat16,
	oip.BYTES:  ort.TensorElementDataTypeString,
}

func match(kind string, specs []modelrepo.TensorSpec, infos []ort.InputOutputInfo) error {
	if len(specs) != len(infos) {
		return fmt.Errorf("config lists %d %ss, the ONNX graph has %d", len(specs), kind, len(infos))
	}
	byName := map[string]ort.InputOutputInfo{}
	for _, in := range infos {
		byName[in.Name] = in
	}
	for _, sp := range specs {
		in, ok := byName[sp.Name]
		if !ok {
			return fmt.Errorf("config %s %q is not in the ONNX graph", kind, sp.Name)
		}
		if in.OrtValueType != ort.ONNXTypeTensor {
			return fmt.Errorf("%s %q is not a tensor in the ONNX graph", kind, sp.Name)
		}
		if want := elemTypes[sp.Datatype]; in.DataType != want {
			return fmt.Errorf("%s %q: config says %s, the ONNX graph has element type %v", kind, sp.Name, sp.Datatype, in.DataType)
		}
		if len(in.Dimensions) != len(sp.Shape) {
			return fmt.Errorf("%s %q: config shape %v, ONNX graph shape %v", kind, sp.Name, sp.Shape, in.Dimensions)
		}
		for i, d := range in.Dimensions {
			// ONNX reports symbolic dimensions as -1 (or 0); a fixed ONNX dimension must be the
			// config's, and a config may only leave a dimension variable if ONNX does too.
			onnxVar := d <= 0
			if onnxVar != (sp.Shape[i] == -1) || (!onnxVar && d != sp.Shape[i]) {
				return fmt.Errorf("%s %q: config shape %v, ONNX graph shape %v", kind, sp.Name, sp.Shape, in.Dimensions)
			}
		}
	}
	return nil
}

// Run implements server.Session. ONNX Runtime does not take a context: a started run completes.
func (s *Session) Run(_ context.Context, inputs []oip.Tensor) ([]oip.Tensor, error) {
	if len(inputs) != len(s.inputs) {
		return nil, fmt.Errorf("got %d inputs, model has %d", len(inputs), len(s.inputs))
	}
	in := make([]ort.Value, len(inputs))
	defer func() {
		for _, v := range in {
			if v != nil {
				_ = v.Destroy()
			}
		}
	}()
	for i, t := range inputs {
		v, err := toValue(t)
		if err != nil {
			return nil, fmt.Errorf("input %q: %w", t.Name, err)
		}
		in[i] = v
	}
	out := make([]ort.Value, s.nOut)
	defer func() {
		for _, v := range out {
			if v != nil {
				_ = v.Destroy()
			}
		}
	}()
	if err := s.s.Run(in, out); err != nil {
		return nil, err
	}
	res := make([]oip.Tensor, len(out))
	for i, v := range out {
		t, err := fromValue(v)
		if err != nil {
			return nil, err
		}
		res[i] = t
	}
	return res, nil
}

func newTensor[T ort.TensorData](shape []int64, data []T) (ort.Value, error) {
	if len(data) == 0 {
		return nil, errors.New("empty tensors are not supported")
	}
	return ort.NewTensor(ort.NewShape(shape...), data)
}

func toValue(t oip.Tensor) (ort.Value, error) {
	switch d := t.Data.(type) {
	case []float32:
		if t.Datatype == oip.FP16 {
			return nil, errors.New("FP16 inputs are not supported")
		}
		return newTensor(t.Shape, d)
	case []float64:
		return newTensor(t.Shape, d)
	case []int8:
		return newTensor(t.Shape, d)
	case []int16:
		return newTensor(t.Shape, d)
	case []int32:
		return newTensor(t.Shape, d)
	case []int64:
		return newTensor(t.Shape, d)
	case []uint8:
		return newTensor(t.Shape, d)
	case []uint16:
		return newTensor(t.Shape, d)
	case []uint32:
		return newTensor(t.Shape, d)
	case []uint64:
		return newTensor(t.Shape, d)
	case []bool:
		return newTensor(t.Shape, d)
	}
	return nil, fmt.Errorf("datatype %s is not supported by this runtime", t.Datatype)
}

// fromValue converts an output; onnxruntime_go has already copied its data into Go memory.
func fromValue(v ort.Value) (oip.Tensor, error) {
	shape := []int64(v.GetShape())
	switch t := v.(type) {
	case *ort.Tensor[float32]:
		return oip.Tensor{Datatype: oip.FP32, Shape: shape, Data: t.GetData()}, nil
	case *ort.Tensor[float64]:
		return oip.Tensor{Datatype: oip.FP64, Shape: shape, Data: t.GetData()}, nil
	case *ort.Tensor[int8]:
		return oip.Tensor{Datatype: oip.INT8, Shape: shape, Data: t.GetData()}, nil
	case *ort.Tensor[int16]:
		return oip.Tensor{Datatype: oip.INT16, Shape: shape, Data: t.GetData()}, nil
	case *ort.Tensor[int32]:
		return oip.Tensor{Datatype: oip.INT32, Shape: shape, Data: t.GetData()}, nil
	case *ort.Tensor[int64]:
		return oip.Tensor{Datatype: oip.INT64, Shape: shape, Data: t.GetData()}, nil
	case *ort.Tensor[uint8]:
		return oip.Tensor{Datatype: oip.UINT8, Shape: shape, Data: t.GetData()}, nil
	case *ort.Tensor[uint16]:
		return oip.Tensor{Datatype: oip.UINT16, Shape: shape, Data: t.GetData()}, nil
	case *ort.Tensor[uint32]:
		return oip.Tensor{Datatype: oip.UINT32, Shape: shape, Data: t.GetData()}, nil
	case *ort.Tensor[uint64]:
		return oip.Tensor{Datatype: oip.UINT64, Shape: shape, Data: t.GetData()}, nil
	case *ort.Tensor[bool]:
		return oip.Tensor{Datatype: oip.BOOL, Shape: shape, Data: t.GetData()}, nil
	}
	return oip.Tensor{}, fmt.Errorf("output of type %T is not supported", v)
}
