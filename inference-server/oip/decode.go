package oip

import (
	"encoding/binary"
	"errors"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// Buffers lets a server reuse the memory of decoded FP32 and FP16 tensor data (an image's
// pixels: the only large allocation of a request) from one request to the next instead of
// leaving it to the garbage collector. The zero value is ready to use; a nil *Buffers allocates
// afresh. One Buffers serves one request at a time: the tensors a decode returns share its
// memory until Reset, after which they must no longer be used.
type Buffers struct {
	f32  [][]float32
	next int
}

// maxKeptFloats bounds what a Buffers keeps across Reset (4 MiB a slice), so one huge request does
// not pin its memory in a pool for good.
const maxKeptFloats = 1 << 20

// Reset makes the memory of earlier decodes available again.
func (b *Buffers) Reset() {
	for i, s := range b.f32[:b.next] {
		if cap(s) > maxKeptFloats {
			b.f32[i] = nil
		}
	}
	b.next = 0
}

// float32s returns an empty slice with capacity n.
func (b *Buffers) float32s(n int) []float32 {
	if b == nil {
		return make([]float32, 0, n)
	}
	if b.next < len(b.f32) && cap(b.f32[b.next]) >= n {
		s := b.f32[b.next][:0:n]
		b.next++
		return s
	}
	s := make([]float32, 0, n)
	if b.next < len(b.f32) {
		b.f32[b.next] = s
	} else {
		b.f32 = append(b.f32, s)
	}
	b.next++
	return s
}

// DecodeInferRequest is the package's DecodeInferRequest, taking FP32 and FP16 data memory from b.
func (b *Buffers) DecodeInferRequest(body []byte, lim Limits) (*InferRequest, error) {
	return decodeInferRequest(&decoder{b: body, lim: lim, bufs: b})
}

// DecodeInferRequestBinary is the package's DecodeInferRequestBinary, taking FP32 and FP16 data
// memory from b.
func (b *Buffers) DecodeInferRequestBinary(body []byte, jsonLen int, lim Limits) (*InferRequest, error) {
	if jsonLen < 0 || jsonLen > len(body) {
		return nil, errorf("%s is %d, but the body has %d bytes", HeaderContentLength, jsonLen, len(body))
	}
	d := &decoder{
		b:      body[:jsonLen],
		lim:    lim,
		bin:    body[jsonLen:],
		binary: true,
		bufs:   b,
	}
	req, err := decodeInferRequest(d)
	if err != nil {
		return nil, err
	}
	if left := len(d.bin) - d.binOff; left != 0 {
		return nil, errorf("%d bytes of binary data follow the JSON request but no input's binary_data_size accounts for them", left)
	}
	return req, nil
}

func decodeInferRequest(d *decoder) (*InferRequest, error) {
	lim := d.lim
	req := &InferRequest{}
	d.ws()
	err := d.object(func(key string) error {
		switch key {
		case "id":
			s, err := d.str()
			req.ID = s
			return err
		case "parameters":
			p, err := d.params()
			req.Parameters = p
			return err
		case "inputs":
			if req.Inputs != nil {
				return errorf("duplicate field \"inputs\"")
			}
			req.Inputs = []Tensor{}
			return d.array(func() error {
				if len(req.Inputs) >= lim.MaxInputs {
					return errorf("too many inputs (limit %d)", lim.MaxInputs)
				}
				t, err := d.input()
				if err != nil {
					return err
				}
				req.Inputs = append(req.Inputs, t)
				return nil
			})
		case "outputs":
			if req.Outputs != nil {
				return errorf("duplicate field \"outputs\"")
			}
			req.Outputs = []RequestedOutput{}
			return d.array(func() error {
				if len(req.Outputs) >= lim.MaxOutputs {
					return errorf("too many outputs (limit %d)", lim.MaxOutputs)
				}
				o, err := d.output()
				if err != nil {
					return err
				}
				req.Outputs = append(req.Outputs, o)
				return nil
			})
		default:
			return d.skip(0)
		}
	})
	if err != nil {
		return nil, err
	}
	d.ws()
	if d.i != len(d.b) {
		return nil, d.fail("unexpected data after the request object")
	}
	if len(req.Inputs) == 0 {
		return nil, errorf("request has no inputs")
	}
	bo, err := boolParam(req.Parameters, "binary_data_output")
	if err != nil {
		return nil, err
	}
	req.BinaryOutput = bo
	return req, nil
}

// boolParam reads an optional boolean parameter.
func boolParam(p map[string]any, key string) (bool, error) {
	v, ok := p[key]
	if !ok {
		return false, nil
	}
	b, isBool := v.(bool)
	if !isBool {
		return false, errorf("parameter %q must be a boolean", key)
	}
	return b, nil
}

type decoder struct {
	// The binary tensor data extension: bin holds the bytes after the JSON part, binOff how
	// many the inputs decoded so far took.
	bin    []byte
	binOff int
	binary bool

	b    []byte
	i    int
	lim  Limits
	bufs *Buffers // memory for FP32/FP16 data; nil: allocate
	// For tensor data: the declared shape and the depth of the first scalar (-1: none yet).
	shape     []int64
	leafDepth int
	last      int // start of the last number parsed by float
}

func (d *decoder) fail(msg string) error {
	return errorf("invalid JSON at byte %d: %s", d.i, msg)
}

func (d *decoder) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *decoder) peek() byte {
	if d.i < len(d.b) {
		return d.b[d.i]
	}
	return 0
}

// object parses {"key": value, ...}, calling fn with d positioned at each value. Keys must be
// unique.
func (d *decoder) object(fn func(key string) error) error {
	d.ws()
	if d.peek() != '{' {
		return d.fail("expected an object")
	}
	d.i++
	d.ws()
	if d.peek() == '}' {
		d.i++
		return nil
	}
	var seen [16]string
	n := 0
	for {
		d.ws()
		if d.peek() != '"' {
			return d.fail("expected a string key")
		}
		key, err := d.str()
		if err != nil {
			return err
		}
		for _, k := range seen[:min(n, len(seen))] {
			if k == key {
				return errorf("duplicate field %q", key)
			}
		}
		if n < len(seen) {
			seen[n] = key
		}
		n++
		d.ws()
		if d.peek() != ':' {
			return d.fail("expected ':'")
		}
		d.i++
		d.ws()
		if err := fn(key); err != nil {
			return err
		}
		d.ws()
		switch d.peek() {
		case ',':
			d.i++
		case '}':
			d.i++
			return nil
		default:
			return d.fail("expected ',' or '}'")
		}
	}
}

// array parses [v, ...], calling fn with d positioned at each element.
func (d *decoder) array(fn func() error) error {
	d.ws()
	if d.peek() != '[' {
		return d.fail("expected an array")
	}
	d.i++
	d.ws()
	if d.peek() == ']' {
		d.i++
		return nil
	}
	for {
		d.ws()
		if err := fn(); err != nil {
			return err
		}
		d.ws()
		switch d.peek() {
		case ',':
			d.i++
		case ']':
			d.i++
			return nil
		default:
			return d.fail("expected ',' or ']'")
		}
	}
}

// str parses a JSON string.
func (d *decoder) str() (string, error) {
	d.ws()
	if d.peek() != '"' {
		return "", d.fail("expected a string")
	}
	d.i++
	start := d.i
	// Fast path: no escapes.
	for d.i < len(d.b) {
		c := d.b[d.i]
		if c == '"' {
			s := d.b[start:d.i]
			d.i++
			if len(s) > d.lim.MaxString {
				return "", errorf("string longer than %d bytes", d.lim.MaxString)
			}
			if !utf8.Valid(s) {
				return "", d.fail("invalid UTF-8 in string")
			}
			return string(s), nil
		}
		if c == '\\' {
			break
		}
		if c < 0x20 {
			return "", d.fail("control character in string")
		}
		d.i++
	}
	buf := append([]byte(nil), d.b[start:d.i]...)
	for d.i < len(d.b) {
		if len(buf) > d.lim.MaxString {
			return "", errorf("string longer than %d bytes", d.lim.MaxString)
		}
		c := d.b[d.i]
		switch {
		case c == '"':
			d.i++
			if !utf8.Valid(buf) {
				return "", d.fail("invalid UTF-8 in string")
			}
			return string(buf), nil
		case c < 0x20:
			return "", d.fail("control character in string")
		case c != '\\':
			buf = append(buf, c)
			d.i++
			continue
		}
		d.i++
		if d.i >= len(d.b) {
			break
		}
		e := d.b[d.i]
		d.i++
		switch e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, ok := d.hex4()
			if !ok {
				return "", d.fail("bad \\u escape")
			}
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if d.i+1 < len(d.b) && d.b[d.i] == '\\' && d.b[d.i+1] == 'u' {
					d.i += 2
					if r2, ok = d.hex4(); !ok {
						return "", d.fail("bad \\u escape")
					}
				}
				r = utf16.DecodeRune(r, r2)
			}
			buf = utf8.AppendRune(buf, r)
		default:
			return "", d.fail("bad escape")
		}
	}
	return "", d.fail("unterminated string")
}

func (d *decoder) hex4() (rune, bool) {
	if d.i+4 > len(d.b) {
		return 0, false
	}
	var r rune
	for _, c := range d.b[d.i : d.i+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	d.i += 4
	return r, true
}

// number scans a JSON number and returns its text.
func (d *decoder) number() ([]byte, error) {
	start := d.i
	if d.peek() == '-' {
		d.i++
	}
	switch c := d.peek(); {
	case c == '0':
		d.i++
	case c >= '1' && c <= '9':
		for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
			d.i++
		}
	default:
		return nil, d.fail("expected a number")
	}
	if d.peek() == '.' {
		d.i++
		n := d.i
		for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
			d.i++
		}
		if d.i == n {
			return nil, d.fail("expected a digit after '.'")
		}
	}
	if c := d.peek(); c == 'e' || c == 'E' {
		d.i++
		if c := d.peek(); c == '+' || c == '-' {
			d.i++
		}
		n := d.i
		for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
			d.i++
		}
		if d.i == n {
			return nil, d.fail("expected a digit in the exponent")
		}
	}
	if d.i-start > 64 {
		return nil, d.fail("number too long")
	}
	return d.b[start:d.i], nil
}

// pow10 holds the powers of ten that float64 represents exactly.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// eightDigits converts eight ASCII digits, loaded little-endian (the first digit in the low
// byte), to their value, in three multiplications (the SWAR method of simdjson and fast_float).
func eightDigits(v uint64) uint64 {
	v -= 0x3030303030303030
	v = (v * 10) + (v >> 8)
	v = ((v & 0x000000FF000000FF) * (100 + (1000000 << 32))) + (((v >> 16) & 0x000000FF000000FF) * (1 + (10000 << 32)))
	return v >> 32 & 0xFFFFFFFF
}

// Statuses of scanFloat.
const (
	numOK          = iota
	numNotNumber   // no number starts here
	numNoFracDigit // '.' not followed by a digit
	numNoExpDigit  // 'e' not followed by a digit
	numTooLong     // more than 64 bytes
	numRange       // out of range for the bit size
)

// float scans a JSON number and converts it to a float of the given bit size, correctly rounded
// (see scanFloat). d.last marks where the number began, for error messages.
func (d *decoder) float(bits int) (float64, error) {
	start := d.i
	d.last = start
	v, end, st := scanFloat(d.b, d.i, bits)
	d.i = end
	switch st {
	case numOK:
		return v, nil
	case numNotNumber:
		return 0, d.fail("expected a number")
	case numNoFracDigit:
		return 0, d.fail("expected a digit after '.'")
	case numNoExpDigit:
		return 0, d.fail("expected a digit in the exponent")
	case numTooLong:
		return 0, d.fail("number too long")
	}
	return 0, errorf("%s is out of range for FP%d", d.b[start:end], bits)
}

// scanFloat scans the JSON number at b[i:] and converts it to a float of the given bit size,
// correctly rounded. It returns the value, the index where scanning stopped (after the number,
// or where it went wrong) and a status. It works on a slice and an index rather than on the
// decoder so that the compiler keeps both in registers: this is the inner loop of every FP32
// request.
//
// Short decimals take Clinger's fast path (an exact integer mantissa times an exact power of ten
// is one correctly rounded IEEE operation); for float32 the float64 result is then rounded again,
// which is exact unless it lies exactly halfway between two float32 values. Everything else goes
// to strconv.ParseFloat.
func scanFloat(b []byte, i, bits int) (float64, int, int) {
	start := i
	neg := false
	if i < len(b) && b[i] == '-' {
		neg = true
		i++
	}
	var mant uint64
	nd, exp10 := 0, 0 // significant digits kept in mant; decimal exponent of mant
	exact := true
	if i >= len(b) {
		return 0, i, numNotNumber
	}
	switch c := b[i]; {
	case c == '0':
		i++
	case c >= '1' && c <= '9':
		for ; i < len(b); i++ {
			c := b[i] - '0'
			if c > 9 {
				break
			}
			if nd < 19 {
				mant = mant*10 + uint64(c)
				nd++
			} else {
				exact = false // more digits than the fast path keeps
				exp10++
			}
		}
	default:
		return 0, i, numNotNumber
	}
	if i < len(b) && b[i] == '.' {
		i++
		fs := i
		// Eight digits at a time while they fit the mantissa (fractions of image data have
		// about nine). Leading zeros count as digits here, which only sends the rare number
		// with many of them to the exact path below.
		for nd <= 19-8 && len(b)-i >= 8 {
			v := binary.LittleEndian.Uint64(b[i:])
			if ((v+0x4646464646464646)|(v-0x3030303030303030))&0x8080808080808080 != 0 {
				break // not eight digits
			}
			mant = mant*100000000 + eightDigits(v)
			nd += 8
			exp10 -= 8
			i += 8
		}
		for ; i < len(b); i++ {
			c := b[i] - '0'
			if c > 9 {
				break
			}
			if nd < 19 {
				if mant != 0 || c != 0 { // leading zeros only move the exponent
					mant = mant*10 + uint64(c)
					nd++
				}
				exp10--
			} else {
				exact = false
			}
		}
		if i == fs {
			return 0, i, numNoFracDigit
		}
	}
	if i < len(b) && b[i]|0x20 == 'e' {
		i++
		eneg := false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			eneg = b[i] == '-'
			i++
		}
		es, e := i, 0
		for ; i < len(b); i++ {
			c := b[i] - '0'
			if c > 9 {
				break
			}
			if e < 10000 {
				e = e*10 + int(c)
			}
		}
		if i == es {
			return 0, i, numNoExpDigit
		}
		if eneg {
			e = -e
		}
		exp10 += e
	}
	if i-start > 64 {
		return 0, i, numTooLong
	}
	if exact && mant <= 1<<53 && exp10 >= -22 && exp10 <= 22 {
		f := float64(mant)
		if exp10 < 0 {
			f /= pow10[-exp10]
		} else {
			f *= pow10[exp10]
		}
		if neg {
			f = -f
		}
		if bits == 64 || f == 0 {
			return f, i, numOK
		}
		a := math.Abs(f)
		if a >= 0x1p-126 && a <= math.MaxFloat32 && math.Float64bits(f)&(1<<29-1) != 1<<28 {
			return float64(float32(f)), i, numOK
		}
	}
	s := b[start:i]
	v, err := strconv.ParseFloat(unsafe.String(&s[0], len(s)), bits)
	if err != nil {
		return 0, i, numRange
	}
	return v, i, numOK
}

// literal consumes the given word if it is next.
func (d *decoder) literal(w string) bool {
	if len(d.b)-d.i >= len(w) && string(d.b[d.i:d.i+len(w)]) == w {
		d.i += len(w)
		return true
	}
	return false
}

// maxDepth bounds nesting while skipping unknown values.
const maxDepth = 32

// skip consumes any JSON value.
func (d *decoder) skip(depth int) error {
	if depth > maxDepth {
		return d.fail("nested too deeply")
	}
	d.ws()
	switch c := d.peek(); {
	case c == '{':
		return d.object(func(string) error { return d.skip(depth + 1) })
	case c == '[':
		return d.array(func() error { return d.skip(depth + 1) })
	case c == '"':
		_, err := d.str()
		return err
	case c == 't':
		if d.literal("true") {
			return nil
		}
	case c == 'f':
		if d.literal("false") {
			return nil
		}
	case c == 'n':
		if d.literal("null") {
			return nil
		}
	case c == '-' || (c >= '0' && c <= '9'):
		_, err := d.number()
		return err
	}
	return d.fail("expected a value")
}

// skipData consumes tensor data: nested arrays of JSON scalars or the tokens NaN, Infinity and
// -Infinity. The datatype-specific parse runs later over the same bytes.
func (d *decoder) skipData(depth int) error {
	if depth > maxDepth {
		return d.fail("nested too deeply")
	}
	d.ws()
	switch c := d.peek(); {
	case c == '[':
		return d.array(func() error { return d.skipData(depth + 1) })
	case c == 'N' && d.literal("NaN"), c == 'I' && d.literal("Infinity"), c == '-' && d.literal("-Infinity"):
		return nil
	case c == '{':
		return d.fail("tensor data must be arrays of scalars")
	}
	return d.skip(depth)
}

// params parses a parameters object: values are strings, numbers or booleans.
func (d *decoder) params() (map[string]any, error) {
	p := map[string]any{}
	err := d.object(func(key string) error {
		if len(p) >= 64 {
			return errorf("too many parameters")
		}
		d.ws()
		switch c := d.peek(); {
		case c == '"':
			s, err := d.str()
			p[key] = s
			return err
		case c == 't' || c == 'f':
			if d.literal("true") {
				p[key] = true
				return nil
			}
			if d.literal("false") {
				p[key] = false
				return nil
			}
		case c == '-' || (c >= '0' && c <= '9'):
			n, err := d.number()
			if err != nil {
				return err
			}
			f, err := strconv.ParseFloat(string(n), 64)
			if err != nil {
				return errorf("parameter %q: %s", key, n)
			}
			p[key] = f
			return nil
		}
		return errorf("parameter %q: value must be a string, number or boolean", key)
	})
	return p, err
}

// output parses one requested output.
func (d *decoder) output() (RequestedOutput, error) {
	var o RequestedOutput
	var params map[string]any
	err := d.object(func(key string) error {
		switch key {
		case "name":
			s, err := d.str()
			o.Name = s
			return err
		case "parameters":
			p, err := d.params()
			params = p
			return err
		default:
			return d.skip(0)
		}
	})
	if err != nil {
		return o, err
	}
	if o.Name == "" {
		return o, errorf("requested output without a name")
	}
	bd, err := boolParam(params, "binary_data")
	if err != nil {
		return o, errorf("output %q: %s", o.Name, err.Error())
	}
	o.Binary = bd
	if v, ok := params["classification"]; ok {
		f, isNum := v.(float64)
		if !isNum || f != math.Trunc(f) || f < 1 || f > 1<<20 {
			return o, errorf("output %q: parameter \"classification\" must be a positive integer", o.Name)
		}
		o.Classification = int(f)
	}
	return o, nil
}

// input parses one input tensor. Its data is located first and parsed once the datatype and
// shape are known (they may come after it).
func (d *decoder) input() (Tensor, error) {
	var t Tensor
	dataStart, dataEnd := -1, -1
	var params map[string]any
	shapeSeen := false
	var parsed any // data parsed in place (datatype and shape came first)
	var parsedNonFinite bool
	var parseErr error
	err := d.object(func(key string) error {
		switch key {
		case "name":
			s, err := d.str()
			t.Name = s
			return err
		case "datatype":
			s, err := d.str()
			t.Datatype = s
			return err
		case "shape":
			shapeSeen = true
			t.Shape = []int64{}
			return d.array(func() error {
				if len(t.Shape) >= d.lim.MaxRank {
					return errorf("shape has more than %d dimensions", d.lim.MaxRank)
				}
				n, err := d.number()
				if err != nil {
					return err
				}
				v, err := strconv.ParseInt(string(n), 10, 64)
				if err != nil || v < 0 {
					return errorf("shape dimension %s: want a non-negative integer", n)
				}
				t.Shape = append(t.Shape, v)
				return nil
			})
		case "parameters":
			p, err := d.params()
			params = p
			return err
		case "data":
			dataStart = d.i
			if shapeSeen && t.Datatype != "" && t.Name != "" {
				// Common order (name, datatype, shape, data): parse in one pass.
				want, err := d.elements(t.Name, t.Shape)
				if err != nil {
					return err
				}
				dd := &decoder{
					b:         d.b,
					i:         d.i,
					lim:       d.lim,
					bufs:      d.bufs,
					shape:     t.Shape,
					leafDepth: -1,
				}
				parsed, parsedNonFinite, parseErr = dd.data(t.Datatype, int(want))
				if parseErr != nil {
					return errorf("input %q: %s", t.Name, parseErr.Error())
				}
				d.i = dd.i
				dataEnd = d.i
				return nil
			}
			if err := d.skipData(0); err != nil {
				return err
			}
			dataEnd = d.i
			return nil
		default:
			return d.skip(0)
		}
	})
	if err != nil {
		return t, err
	}
	if t.Name == "" {
		return t, errorf("input without a name")
	}
	if t.Datatype == "" {
		return t, errorf("input %q: missing datatype", t.Name)
	}
	if !shapeSeen {
		return t, errorf("input %q: missing shape", t.Name)
	}
	want, err := d.elements(t.Name, t.Shape)
	if err != nil {
		return t, err
	}
	if size, ok := params["binary_data_size"]; ok {
		return d.binaryInput(t, size, dataStart >= 0, want)
	}
	if dataStart < 0 {
		return t, errorf("input %q: missing data", t.Name)
	}
	data, nonFinite := parsed, parsedNonFinite
	if data == nil {
		dd := &decoder{
			b:         d.b[:dataEnd],
			i:         dataStart,
			lim:       d.lim,
			bufs:      d.bufs,
			shape:     t.Shape,
			leafDepth: -1,
		}
		data, nonFinite, err = dd.data(t.Datatype, int(want))
		if err != nil {
			return t, errorf("input %q: %s", t.Name, err.Error())
		}
	}
	t.Data, t.NonFinite = data, nonFinite
	if n := int64(dataLen(data)); n != want {
		return t, errorf("input %q: shape %v needs %d elements, data has %d", t.Name, t.Shape, want, n)
	}
	return t, nil
}

// binaryInput takes an input's data from the binary part of the body.
func (d *decoder) binaryInput(t Tensor, size any, hasData bool, want int64) (Tensor, error) {
	if !d.binary {
		return t, errorf("input %q: binary_data_size needs the %s header (the binary tensor data extension)", t.Name, HeaderContentLength)
	}
	if hasData {
		return t, errorf("input %q: has both data and binary_data_size; send one", t.Name)
	}
	f, isNum := size.(float64)
	if !isNum || f != math.Trunc(f) || f < 0 {
		return t, errorf("input %q: binary_data_size must be a non-negative integer", t.Name)
	}
	left := len(d.bin) - d.binOff
	if f > float64(left) {
		return t, errorf("input %q: binary_data_size is %v bytes, only %d bytes of binary data are left", t.Name, f, left)
	}
	n := int(f)
	data, nonFinite, err := decodeBinary(t.Datatype, d.bin[d.binOff:d.binOff+n], int(want), d.lim.MaxString, d.bufs)
	if err != nil {
		return t, errorf("input %q: %s", t.Name, err.Error())
	}
	d.binOff += n
	t.Data, t.NonFinite = data, nonFinite
	return t, nil
}

// elements returns the element count of a shape, bounded by the limits.
func (d *decoder) elements(name string, shape []int64) (int64, error) {
	want := int64(1)
	for _, v := range shape {
		if v > d.lim.MaxElements || (v > 0 && want > d.lim.MaxElements/v) {
			return 0, errorf("input %q: shape %v has more than %d elements", name, shape, d.lim.MaxElements)
		}
		want *= v
	}
	return want, nil
}

// data parses tensor data of a datatype, flattening nested arrays. want is the element count the
// shape implies; parsing stops with an error once the data holds more.
func (d *decoder) data(datatype string, want int) (any, bool, error) {
	var (
		nonFinite bool
		count     int
	)
	// leaf parses one scalar element; it is set per datatype below.
	var leaf func() error
	tooMany := func() error { return errorf("data has more elements than the shape's %d", want) }
	switch datatype {
	case FP32, FP16, FP64:
		bits := 64
		limit := math.MaxFloat64
		if datatype != FP64 {
			bits = 32
			if datatype == FP16 {
				limit = 65504
			}
		}
		var f32 []float32
		var f64 []float64
		if bits == 32 {
			f32 = d.bufs.float32s(want)
		} else {
			f64 = make([]float64, 0, want)
		}
		leaf = func() error {
			if count >= want {
				return tooMany()
			}
			var v float64
			switch c := d.peek(); {
			case c == 'N' && d.literal("NaN"):
				v, nonFinite = math.NaN(), true
			case c == 'I' && d.literal("Infinity"):
				v, nonFinite = math.Inf(1), true
			case c == '-' && d.literal("-Infinity"):
				v, nonFinite = math.Inf(-1), true
			default:
				var err error
				if v, err = d.float(bits); err != nil {
					return err
				}
				if math.Abs(v) > limit {
					return errorf("%s is out of range for %s", d.b[d.last:d.i], datatype)
				}
			}
			if bits == 32 {
				f32 = append(f32, float32(v))
			} else {
				f64 = append(f64, v)
			}
			count++
			return nil
		}
		var err error
		if bits == 32 && d.flatNumbers() {
			// Fast path for the common flat FP32 array of plain numbers: no per-element closures.
			err = d.flatFloat32(want, &f32, limit)
			if err == errNotPlain {
				err = d.flatten(0, leaf)
			}
		} else {
			err = d.flatten(0, leaf)
		}
		if bits == 32 {
			return f32, nonFinite, err
		}
		return f64, nonFinite, err
	case INT8:
		v, err := integers[int8](d, datatype, want)
		return v, false, err
	case INT16:
		v, err := integers[int16](d, datatype, want)
		return v, false, err
	case INT32:
		v, err := integers[int32](d, datatype, want)
		return v, false, err
	case INT64:
		v, err := integers[int64](d, datatype, want)
		return v, false, err
	case UINT8:
		v, err := integers[uint8](d, datatype, want)
		return v, false, err
	case UINT16:
		v, err := integers[uint16](d, datatype, want)
		return v, false, err
	case UINT32:
		v, err := integers[uint32](d, datatype, want)
		return v, false, err
	case UINT64:
		v, err := integers[uint64](d, datatype, want)
		return v, false, err
	case BOOL:
		vals := make([]bool, 0, want)
		leaf = func() error {
			if count >= want {
				return tooMany()
			}
			switch {
			case d.literal("true"):
				vals = append(vals, true)
			case d.literal("false"):
				vals = append(vals, false)
			default:
				return d.fail("expected true or false")
			}
			count++
			return nil
		}
		err := d.flatten(0, leaf)
		return vals, false, err
	case BYTES:
		vals := make([]string, 0, min(want, 1024))
		leaf = func() error {
			if count >= want {
				return tooMany()
			}
			s, err := d.str()
			if err != nil {
				return err
			}
			vals = append(vals, s)
			count++
			return nil
		}
		err := d.flatten(0, leaf)
		return vals, false, err
	}
	return nil, false, errorf("unknown datatype %q", datatype)
}

// integer is the element type of an INT or UINT datatype.
type integer interface {
	int8 | int16 | int32 | int64 | uint8 | uint16 | uint32 | uint64
}

// integers parses the data of an integer datatype (T is its Go type), flattening nested
// arrays: each element a JSON integer within T's range, at most want of them.
func integers[T integer](d *decoder, datatype string, want int) ([]T, error) {
	var zero T
	bits := int(unsafe.Sizeof(zero)) * 8
	signed := ^zero < 0
	vals := make([]T, 0, want)
	err := d.flatten(0, func() error {
		if len(vals) >= want {
			return errorf("data has more elements than the shape's %d", want)
		}
		n, err := d.number()
		if err != nil {
			return err
		}
		s := unsafe.String(&n[0], len(n))
		var v T
		if signed {
			i, perr := strconv.ParseInt(s, 10, bits)
			v, err = T(i), perr
		} else {
			u, perr := strconv.ParseUint(s, 10, bits)
			v, err = T(u), perr
		}
		if err != nil {
			return errorf("%s is not a valid %s", n, datatype)
		}
		vals = append(vals, v)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return vals, nil
}

// errNotPlain makes flatFloat32 hand over to the general path.
var errNotPlain = errors.New("not a plain flat array")

// flatNumbers reports whether the data at d is an array whose first element is a plain number.
func (d *decoder) flatNumbers() bool {
	j := d.i
	for j < len(d.b) && (d.b[j] == ' ' || d.b[j] == '\t' || d.b[j] == '\n' || d.b[j] == '\r') {
		j++
	}
	if j >= len(d.b) || d.b[j] != '[' {
		return false
	}
	j++
	for j < len(d.b) && (d.b[j] == ' ' || d.b[j] == '\t' || d.b[j] == '\n' || d.b[j] == '\r') {
		j++
	}
	return j < len(d.b) && (d.b[j] == '-' || (d.b[j] >= '0' && d.b[j] <= '9'))
}

// flatFloat32 parses a flat array of plain numbers, the common form of image tensors, in one
// tight loop over a local slice and index. On anything else (a nested array, NaN, Infinity, a
// malformed or out-of-range number, more elements than want) it rewinds and returns
// errNotPlain, and the general path parses the data again and reports the error precisely.
func (d *decoder) flatFloat32(want int, out *[]float32, limit float64) error {
	b, i := d.b, d.i
	vals := *out
	rewind := func() error { *out = vals[:0]; return errNotPlain }
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	i++ // '[', checked by flatNumbers
	for {
		for i < len(b) && isSpace(b[i]) {
			i++
		}
		if len(vals) >= want {
			return rewind()
		}
		v, end, st := scanFloat(b, i, 32)
		if st != numOK || v > limit || v < -limit {
			return rewind()
		}
		vals = append(vals, float32(v))
		i = end
		for i < len(b) && isSpace(b[i]) {
			i++
		}
		if i >= len(b) {
			return rewind()
		}
		switch b[i] {
		case ',':
			i++
		case ']':
			d.i = i + 1
			*out = vals
			return nil
		default:
			return rewind()
		}
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// flatten walks tensor data, calling leaf at each scalar. Data is either a flat array of all
// elements or arrays nested exactly as the shape says (every level as long as its dimension).
func (d *decoder) flatten(depth int, leaf func() error) error {
	d.ws()
	if d.peek() != '[' {
		if depth == 0 {
			return d.fail("data must be an array")
		}
		if d.leafDepth < 0 {
			d.leafDepth = depth
			if depth != 1 && depth != len(d.shape) {
				return errorf("nested data must be flat or follow the shape %v", d.shape)
			}
		}
		if depth != d.leafDepth {
			return errorf("nested data must be flat or follow the shape %v", d.shape)
		}
		return leaf()
	}
	if depth >= d.lim.MaxRank || depth >= max(len(d.shape), 1) {
		return d.fail("data nested deeper than the shape")
	}
	n := int64(0)
	err := d.array(func() error { n++; return d.flatten(depth+1, leaf) })
	if err != nil {
		return err
	}
	if depth > 0 && n != d.shape[depth] {
		return errorf("nested data: an array at depth %d has %d elements, shape %v says %d", depth, n, d.shape, d.shape[depth])
	}
	if depth == 0 && d.leafDepth > 1 && n != d.shape[0] {
		return errorf("nested data: the outer array has %d elements, shape %v says %d", n, d.shape, d.shape[0])
	}
	return nil
}
