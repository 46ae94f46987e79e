package oip

import (
	"encoding/binary"
	"math"
	"unsafe"
)

// The binary tensor data extension (KServe / Triton): the body is the JSON request of
// Inference-Header-Content-Length bytes followed by raw tensor bytes. An input whose parameters
// carry "binary_data_size": N takes the next N bytes, in input order, instead of "data".
// Elements are little-endian in row-major order; BOOL is one byte (0 or 1); BYTES elements are
// each a little-endian u32 length followed by that many bytes.

// HeaderContentLength is the HTTP header that gives the length of the JSON part.
const HeaderContentLength = "Inference-Header-Content-Length"

// elementSize is the byte size of one element of a fixed-size datatype (0 for BYTES).
func elementSize(datatype string) (int, bool) {
	switch datatype {
	case BOOL, UINT8, INT8:
		return 1, true
	case UINT16, INT16, FP16:
		return 2, true
	case UINT32, INT32, FP32:
		return 4, true
	case UINT64, INT64, FP64:
		return 8, true
	case BYTES:
		return 0, true
	}
	return 0, false
}

// decodeBinary turns raw little-endian bytes into the Go slice of the datatype. want is the
// element count the shape implies.
func decodeBinary(datatype string, raw []byte, want int, maxString int, bufs *Buffers) (any, bool, error) {
	size, ok := elementSize(datatype)
	if !ok {
		return nil, false, errorf("unknown datatype %q", datatype)
	}
	if size > 0 && len(raw) != want*size {
		return nil, false, errorf("%d bytes of raw data, but the %s shape needs %d elements of %d bytes (%d bytes)",
			len(raw), datatype, want, size, want*size)
	}
	le := binary.LittleEndian
	nonFinite := false
	switch datatype {
	case BOOL:
		out := make([]bool, want)
		for i, b := range raw {
			if b > 1 {
				return nil, false, errorf("BOOL element %d is byte %d, expected 0 or 1", i, b)
			}
			out[i] = b == 1
		}
		return out, false, nil
	case UINT8:
		return append([]uint8(nil), raw...), false, nil
	case INT8:
		out := make([]int8, want)
		for i, b := range raw {
			out[i] = int8(b)
		}
		return out, false, nil
	case UINT16:
		out := make([]uint16, want)
		for i := range out {
			out[i] = le.Uint16(raw[2*i:])
		}
		return out, false, nil
	case INT16:
		out := make([]int16, want)
		for i := range out {
			out[i] = int16(le.Uint16(raw[2*i:]))
		}
		return out, false, nil
	case UINT32:
		out := make([]uint32, want)
		for i := range out {
			out[i] = le.Uint32(raw[4*i:])
		}
		return out, false, nil
	case INT32:
		out := make([]int32, want)
		for i := range out {
			out[i] = int32(le.Uint32(raw[4*i:]))
		}
		return out, false, nil
	case UINT64:
		out := make([]uint64, want)
		for i := range out {
			out[i] = le.Uint64(raw[8*i:])
		}
		return out, false, nil
	case INT64:
		out := make([]int64, want)
		for i := range out {
			out[i] = int64(le.Uint64(raw[8*i:]))
		}
		return out, false, nil
	case FP16:
		out := bufs.float32s(want)[:want]
		for i := range out {
			out[i] = halfToFloat(le.Uint16(raw[2*i:]))
			nonFinite = nonFinite || isNonFinite32(out[i])
		}
		return out, nonFinite, nil
	case FP32:
		out := bufs.float32s(want)[:want]
		if littleEndian {
			// The wire's layout is the machine's: one copy, then one pass over the bits.
			copy(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(out))), len(raw)), raw)
		} else {
			for i := range out {
				out[i] = math.Float32frombits(le.Uint32(raw[4*i:]))
			}
		}
		return out, anyNonFinite32(out), nil
	case FP64:
		out := make([]float64, want)
		for i := range out {
			out[i] = math.Float64frombits(le.Uint64(raw[8*i:]))
			nonFinite = nonFinite || math.IsNaN(out[i]) || math.IsInf(out[i], 0)
		}
		return out, nonFinite, nil
	}
	// BYTES: u32 length-prefixed elements.
	out := make([]string, 0, want)
	for off := 0; off < len(raw); {
		if len(out) == want {
			return nil, false, errorf("BYTES binary data holds more than the %d elements the shape needs", want)
		}
		if len(raw)-off < 4 {
			return nil, false, errorf("BYTES element %d: truncated length prefix", len(out))
		}
		n := int(le.Uint32(raw[off:]))
		off += 4
		if n > maxString || n > len(raw)-off {
			return nil, false, errorf("BYTES element %d: length %d exceeds the data left or the %d-byte limit", len(out), n, maxString)
		}
		out = append(out, string(raw[off:off+n]))
		off += n
	}
	if len(out) != want {
		return nil, false, errorf("BYTES binary data holds %d elements, the shape needs %d", len(out), want)
	}
	return out, false, nil
}

func isNonFinite32(f float32) bool { return f != f || f > math.MaxFloat32 || f < -math.MaxFloat32 }

// littleEndian reports whether the machine stores integers little-endian, as the wire does.
var littleEndian = func() bool { x := uint16(1); return *(*byte)(unsafe.Pointer(&x)) == 1 }()

// anyNonFinite32 reports whether v holds a NaN or an infinity (exponent bits all ones), without
// a branch per element: adding 1 to an all-ones exponent field carries into the sign bit's
// position, and two elements are checked per 64-bit word (a carry cannot cross from the low
// element into the high one).
func anyNonFinite32(v []float32) bool {
	u := unsafe.Slice((*uint32)(unsafe.Pointer(unsafe.SliceData(v))), len(v))
	var acc uint64
	i := 0
	for ; i+1 < len(u); i += 2 {
		w := uint64(u[i]) | uint64(u[i+1])<<32
		acc |= (w & 0x7f8000007f800000) + 0x0080000000800000
	}
	if i < len(u) {
		acc |= uint64(u[i]&0x7f800000) + 0x00800000
	}
	return acc&0x8000000080000000 != 0
}

// halfToFloat converts an IEEE 754 binary16 to float32.
func halfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0 && frac == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: normalise
		e := uint32(127 - 15 + 1)
		for frac&0x400 == 0 {
			frac <<= 1
			e--
		}
		frac &= 0x3ff
		return math.Float32frombits(sign | e<<23 | frac<<13)
	case exp == 0x1f:
		return math.Float32frombits(sign | 0xff<<23 | frac<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | frac<<13)
}

// AppendBinary appends t's data as raw little-endian bytes (BYTES as u32 length-prefixed).
func AppendBinary(b []byte, t *Tensor) []byte {
	le := binary.LittleEndian
	switch v := t.Data.(type) {
	case []bool:
		for _, x := range v {
			if x {
				b = append(b, 1)
			} else {
				b = append(b, 0)
			}
		}
	case []uint8:
		b = append(b, v...)
	case []int8:
		for _, x := range v {
			b = append(b, byte(x))
		}
	case []uint16:
		for _, x := range v {
			b = le.AppendUint16(b, x)
		}
	case []int16:
		for _, x := range v {
			b = le.AppendUint16(b, uint16(x))
		}
	case []uint32:
		for _, x := range v {
			b = le.AppendUint32(b, x)
		}
	case []int32:
		for _, x := range v {
			b = le.AppendUint32(b, uint32(x))
		}
	case []uint64:
		for _, x := range v {
			b = le.AppendUint64(b, x)
		}
	case []int64:
		for _, x := range v {
			b = le.AppendUint64(b, uint64(x))
		}
	case []float32:
		for _, x := range v {
			b = le.AppendUint32(b, math.Float32bits(x))
		}
	case []float64:
		for _, x := range v {
			b = le.AppendUint64(b, math.Float64bits(x))
		}
	case []string:
		for _, x := range v {
			b = le.AppendUint32(b, uint32(len(x)))
			b = append(b, x...)
		}
	}
	return b
}

// CanAppendBinary reports whether AppendBinary can write t: every datatype but FP16, whose data
// this package holds as float32.
func CanAppendBinary(t *Tensor) bool { return t.Datatype != FP16 && t.Len() >= 0 }

// BinarySize is the number of bytes AppendBinary writes for t.
func BinarySize(t *Tensor) int {
	if v, ok := t.Data.([]string); ok {
		n := 0
		for _, x := range v {
			n += 4 + len(x)
		}
		return n
	}
	var size int
	switch t.Data.(type) {
	case []bool, []uint8, []int8:
		size = 1
	case []uint16, []int16:
		size = 2
	case []uint32, []int32, []float32:
		size = 4
	case []uint64, []int64, []float64:
		size = 8
	}
	return size * t.Len()
}

// Elements checks a tensor shape against the limits (rank, element count) and returns its
// element count. Dimensions must be non-negative.
func Elements(name string, shape []int64, lim Limits) (int64, error) {
	if len(shape) > lim.MaxRank {
		return 0, errorf("input %q: shape has more than %d dimensions", name, lim.MaxRank)
	}
	for _, v := range shape {
		if v < 0 {
			return 0, errorf("input %q: shape %v has a negative dimension; want non-negative integers", name, shape)
		}
	}
	return (&decoder{lim: lim}).elements(name, shape)
}

// DecodeRaw decodes one input's raw bytes: little-endian elements in row-major order, BOOL one
// byte each, BYTES elements each a little-endian u32 length and that many bytes (the layout of
// the binary tensor data extension and of the gRPC protocol's raw_input_contents). The shape is
// checked against lim; FP32 and FP16 data memory comes from b (nil: allocate). Every failure is an
// *Error naming the input.
func (b *Buffers) DecodeRaw(name, datatype string, shape []int64, raw []byte, lim Limits) (Tensor, error) {
	t := Tensor{Name: name, Datatype: datatype, Shape: shape}
	want, err := Elements(name, shape, lim)
	if err != nil {
		return t, err
	}
	data, nonFinite, err := decodeBinary(datatype, raw, int(want), lim.MaxString, b)
	if err != nil {
		return t, errorf("input %q: %s", name, err.Error())
	}
	t.Data, t.NonFinite = data, nonFinite
	return t, nil
}

// AnyNonFinite32 reports whether v holds a NaN or an infinity.
func AnyNonFinite32(v []float32) bool { return anyNonFinite32(v) }

// Errorf returns an *Error: a protocol error whose message is safe to return to the client.
func Errorf(format string, args ...any) error { return errorf(format, args...) }
