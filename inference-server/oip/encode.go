package oip

import (
	"math"
	"strconv"
	"unicode/utf8"
)

// AppendInferResponse appends the JSON encoding of r to b. Non-finite floats, which JSON cannot
// express, are written as null. Outputs marked in r.Binary are written with
// "parameters":{"binary_data_size":N} and no data, and their bytes follow the JSON in output
// order: jsonLen is the length of the JSON part (the Inference-Header-Content-Length), equal to
// the appended length when nothing is binary.
func AppendInferResponse(b []byte, r *InferResponse) (out []byte, jsonLen int) {
	start := len(b)
	b = append(b, `{"model_name":`...)
	b = AppendString(b, r.ModelName)
	if r.ModelVersion != "" {
		b = append(b, `,"model_version":`...)
		b = AppendString(b, r.ModelVersion)
	}
	if r.ID != "" {
		b = append(b, `,"id":`...)
		b = AppendString(b, r.ID)
	}
	b = append(b, `,"outputs":[`...)
	for i := range r.Outputs {
		if i > 0 {
			b = append(b, ',')
		}
		if i < len(r.Binary) && r.Binary[i] {
			b = appendBinaryHeader(b, &r.Outputs[i])
		} else {
			b = appendTensor(b, &r.Outputs[i])
		}
	}
	b = append(b, "]}"...)
	jsonLen = len(b) - start
	for i := range r.Outputs {
		if i < len(r.Binary) && r.Binary[i] {
			b = AppendBinary(b, &r.Outputs[i])
		}
	}
	return b, jsonLen
}

// appendTensorHead appends {"name":..,"datatype":..,"shape":[..], leaving the shape array open.
func appendTensorHead(b []byte, t *Tensor) []byte {
	b = append(b, `{"name":`...)
	b = AppendString(b, t.Name)
	b = append(b, `,"datatype":`...)
	b = AppendString(b, t.Datatype)
	b = append(b, `,"shape":[`...)
	for i, v := range t.Shape {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, v, 10)
	}
	return b
}

func appendBinaryHeader(b []byte, t *Tensor) []byte {
	b = appendTensorHead(b, t)
	n := BinarySize(t)
	b = append(b, `],"parameters":{"binary_data_size":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, "}}"...)
}

func appendTensor(b []byte, t *Tensor) []byte {
	b = appendTensorHead(b, t)
	b = append(b, `],"data":[`...)
	switch v := t.Data.(type) {
	case []float32:
		for i, x := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendFloat(b, float64(x), 32)
		}
	case []float64:
		for i, x := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendFloat(b, x, 64)
		}
	case []bool:
		for i, x := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendBool(b, x)
		}
	case []string:
		for i, x := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = AppendString(b, x)
		}
	case []int8:
		b = appendInts(b, v)
	case []int16:
		b = appendInts(b, v)
	case []int32:
		b = appendInts(b, v)
	case []int64:
		b = appendInts(b, v)
	case []uint8:
		b = appendUints(b, v)
	case []uint16:
		b = appendUints(b, v)
	case []uint32:
		b = appendUints(b, v)
	case []uint64:
		b = appendUints(b, v)
	}
	return append(b, "]}"...)
}

func appendFloat(b []byte, f float64, bits int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, bits)
}

func appendInts[T int8 | int16 | int32 | int64](b []byte, v []T) []byte {
	for i, x := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(x), 10)
	}
	return b
}

func appendUints[T uint8 | uint16 | uint32 | uint64](b []byte, v []T) []byte {
	for i, x := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, uint64(x), 10)
	}
	return b
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// AppendError appends the protocol's error body {"error": msg}.
func AppendError(b []byte, msg string) []byte {
	b = append(b, `{"error":`...)
	b = AppendString(b, msg)
	return append(b, '}')
}
