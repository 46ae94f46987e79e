package oip

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/countersign/countersign/internal/fuzzcorpus"
)

// binaryBody builds a binary-extension request: JSON header, then the raw parts.
func binaryBody(header string, parts ...[]byte) ([]byte, int) {
	return append([]byte(header), bytes.Join(parts, nil)...), len(header)
}

func f32(vs ...float32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

func TestDecodeBinary(t *testing.T) {
	hdr := `{"id":"7","inputs":[` +
		`{"name":"scan","datatype":"FP32","shape":[1,3],"parameters":{"binary_data_size":12}},` +
		`{"name":"ids","datatype":"INT64","shape":[2],"data":[5,-6]},` +
		`{"name":"s","datatype":"BYTES","shape":[2],"parameters":{"binary_data_size":13}},` +
		`{"name":"m","datatype":"BOOL","shape":[2],"parameters":{"binary_data_size":2}},` +
		`{"name":"h","datatype":"FP16","shape":[2],"parameters":{"binary_data_size":4}}]}`
	strs := append(binary.LittleEndian.AppendUint32(nil, 2), "ab"...)
	strs = append(append(strs, binary.LittleEndian.AppendUint32(nil, 3)...), "xyz"...)
	half := binary.LittleEndian.AppendUint16(binary.LittleEndian.AppendUint16(nil, 0x3c00), 0xc000) // 1, -2
	body, n := binaryBody(hdr, f32(0.5, -1, 3.25), strs, []byte{1, 0}, half)
	req, err := DecodeInferRequestBinary(body, n, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	got := []any{req.Inputs[0].Data, req.Inputs[1].Data, req.Inputs[2].Data, req.Inputs[3].Data, req.Inputs[4].Data}
	want := []any{[]float32{0.5, -1, 3.25}, []int64{5, -6}, []string{"ab", "xyz"}, []bool{true, false}, []float32{1, -2}}
	for i := range want {
		if g, _ := json.Marshal(got[i]); string(g) != mustJSON(t, want[i]) {
			t.Errorf("input %d: got %s, want %s", i, g, mustJSON(t, want[i]))
		}
	}
	// The same tensor sent as JSON and as binary decodes to the same data.
	js, err := DecodeInferRequest([]byte(`{"inputs":[{"name":"scan","datatype":"FP32","shape":[1,3],"data":[0.5,-1,3.25]}]}`), DefaultLimits)
	if err != nil || mustJSON(t, js.Inputs[0].Data) != mustJSON(t, req.Inputs[0].Data) {
		t.Fatalf("JSON and binary decode differ: %v", err)
	}
	// NaN in binary FP32 is flagged like the JSON NaN token.
	body, n = binaryBody(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"parameters":{"binary_data_size":4}}]}`, f32(float32(math.NaN())))
	if req, err := DecodeInferRequestBinary(body, n, DefaultLimits); err != nil || !req.Inputs[0].NonFinite {
		t.Fatalf("NaN not flagged: %v", err)
	}
}

func TestDecodeBinaryErrors(t *testing.T) {
	one := func(dt, shape string, size int) string {
		return `{"inputs":[{"name":"x","datatype":"` + dt + `","shape":` + shape + `,"parameters":{"binary_data_size":` + strconv.Itoa(size) + `}}]}`
	}
	cases := map[string]struct {
		header string
		raw    []byte
		want   string
	}{
		"size too small for shape": {one("FP32", "[2]", 4), f32(1), "needs 2 elements"},
		"size beyond the body":     {one("FP32", "[2]", 8), f32(1), "only 4 bytes"},
		"bytes left over":          {one("FP32", "[1]", 4), f32(1, 2), "4 bytes of binary data"},
		"data and binary":          {`{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1],"parameters":{"binary_data_size":4}}]}`, f32(1), "both data and binary_data_size"},
		"negative size":            {one("FP32", "[1]", -4), f32(1), "non-negative integer"},
		"bool not 0 or 1":          {one("BOOL", "[1]", 1), []byte{7}, "expected 0 or 1"},
		"BYTES truncated prefix":   {one("BYTES", "[1]", 2), []byte{1, 0}, "truncated length prefix"},
		"BYTES length past end":    {one("BYTES", "[1]", 5), append(binary.LittleEndian.AppendUint32(nil, 9), 'a'), "exceeds"},
		"BYTES too many":           {one("BYTES", "[1]", 10), append(append(binary.LittleEndian.AppendUint32(nil, 1), 'a'), append(binary.LittleEndian.AppendUint32(nil, 1), 'b')...), "more than the 1 elements"},
		"BYTES too few":            {one("BYTES", "[2]", 5), append(binary.LittleEndian.AppendUint32(nil, 1), 'a'), "holds 1 elements"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			body, n := binaryBody(tc.header, tc.raw)
			_, err := DecodeInferRequestBinary(body, n, DefaultLimits)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error %T is not *Error", err)
			}
		})
	}
	if _, err := DecodeInferRequestBinary([]byte("{}"), 5, DefaultLimits); err == nil {
		t.Fatal("header length beyond the body accepted")
	}
}

func TestEncodeBinary(t *testing.T) {
	r := &InferResponse{ModelName: "m", Outputs: []Tensor{
		{Name: "p", Datatype: FP32, Shape: []int64{1, 2}, Data: []float32{0.25, 0.75}},
		{Name: "c", Datatype: BYTES, Shape: []int64{1}, Data: []string{"0.75:1:opacity"}},
	}, Binary: []bool{true, false}}
	out, n := AppendInferResponse(nil, r)
	wantJSON := `{"model_name":"m","outputs":[{"name":"p","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":8}},{"name":"c","datatype":"BYTES","shape":[1],"data":["0.75:1:opacity"]}]}`
	if string(out[:n]) != wantJSON {
		t.Fatalf("JSON part\n got %s\nwant %s", out[:n], wantJSON)
	}
	if !bytes.Equal(out[n:], f32(0.25, 0.75)) {
		t.Fatalf("binary part %x", out[n:])
	}
	// Binary outputs round-trip through the request decoder's binary path.
	for _, tt := range []Tensor{
		{Name: "a", Datatype: INT16, Shape: []int64{2}, Data: []int16{-3, 300}},
		{Name: "b", Datatype: UINT64, Shape: []int64{1}, Data: []uint64{math.MaxUint64}},
		{Name: "c", Datatype: BYTES, Shape: []int64{2}, Data: []string{"", "é"}},
		{Name: "d", Datatype: FP64, Shape: []int64{1}, Data: []float64{math.Pi}},
		{Name: "e", Datatype: BOOL, Shape: []int64{3}, Data: []bool{true, false, true}},
	} {
		raw := AppendBinary(nil, &tt)
		if len(raw) != BinarySize(&tt) {
			t.Fatalf("%s: BinarySize %d, wrote %d", tt.Name, BinarySize(&tt), len(raw))
		}
		hdr := `{"inputs":[{"name":"` + tt.Name + `","datatype":"` + tt.Datatype + `","shape":[` + strconv.Itoa(len(mustSlice(tt.Data))) + `],"parameters":{"binary_data_size":` + strconv.Itoa(len(raw)) + `}}]}`
		body, n := binaryBody(hdr, raw)
		req, err := DecodeInferRequestBinary(body, n, DefaultLimits)
		if err != nil || mustJSON(t, req.Inputs[0].Data) != mustJSON(t, tt.Data) {
			t.Fatalf("%s: round trip: %v", tt.Name, err)
		}
	}
}

func mustSlice(d any) []any {
	b, _ := json.Marshal(d)
	var out []any
	_ = json.Unmarshal(b, &out)
	return out
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// FuzzDecodeInferRequestBinary: arbitrary JSON headers and binary tails never panic, fail only
// with *Error, and what is accepted is consistent with its shape.
func FuzzDecodeInferRequestBinary(f *testing.F) {
	seeds := [][]any{
		{`{"inputs":[{"name":"x","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}}]}`, f32(1, 2)},
		{`{"inputs":[{"name":"s","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":5}}]}`, append(binary.LittleEndian.AppendUint32(nil, 1), 'a')},
		{`{"inputs":[{"name":"b","datatype":"BOOL","shape":[2],"parameters":{"binary_data_size":2}}]}`, []byte{0, 1}},
		{`{"inputs":[{"name":"h","datatype":"FP16","shape":[1],"parameters":{"binary_data_size":2}}]}`, []byte{0, 0x7c}},
		{`{"inputs":[{"name":"x","datatype":"INT8","shape":[0],"parameters":{"binary_data_size":0}}],"parameters":{"binary_data_output":true}}`, []byte{}},
		// FP32 is copied whole and checked for NaN and infinities two elements at a time: an odd
		// count with the NaN last, and an infinity in the high half of a pair.
		{`{"inputs":[{"name":"x","datatype":"FP32","shape":[3],"parameters":{"binary_data_size":12}}]}`, f32(1, 2, float32(math.NaN()))},
		{`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":8}}]}`, f32(-0.5, float32(math.Inf(-1)))},
	}
	if *fuzzcorpus.Update {
		if err := fuzzcorpus.Write("FuzzDecodeInferRequestBinary", seeds...); err != nil {
			f.Fatal(err)
		}
	}
	for _, s := range seeds {
		f.Add(s[0].(string), s[1].([]byte))
	}
	lim := Limits{
		MaxInputs:   4,
		MaxOutputs:  4,
		MaxRank:     4,
		MaxElements: 1 << 12,
		MaxString:   256,
	}
	f.Fuzz(func(t *testing.T, header string, raw []byte) {
		body := append([]byte(header), raw...)
		req, err := DecodeInferRequestBinary(body, len(header), lim)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error %T: %v", err, err)
			}
			return
		}
		for _, in := range req.Inputs {
			n := int64(1)
			for _, d := range in.Shape {
				n *= d
			}
			if int64(in.Len()) != n {
				t.Fatalf("tensor %q has %d elements for shape %v", in.Name, in.Len(), in.Shape)
			}
			if v, ok := in.Data.([]float32); ok && in.Datatype == FP32 {
				want := false
				for _, x := range v {
					want = want || isNonFinite32(x)
				}
				if in.NonFinite != want {
					t.Fatalf("tensor %q: NonFinite %v, elements say %v", in.Name, in.NonFinite, want)
				}
			}
			// What was decoded encodes back to exactly its binary size.
			if in.Datatype != FP16 && len(AppendBinary(nil, &in)) != BinarySize(&in) {
				t.Fatalf("tensor %q: binary size mismatch", in.Name)
			}
		}
	})
}

// anyNonFinite32 agrees with an element-by-element check, whatever the length and the position
// of a NaN or an infinity.
func TestAnyNonFinite32(t *testing.T) {
	specials := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), math.Float32frombits(0x7f800001), math.Float32frombits(0xffffffff)}
	finite := []float32{0, -0, 1, math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32, math.Float32frombits(0x7f7fffff), math.Float32frombits(0x807fffff)}
	for n := 0; n < 9; n++ {
		v := make([]float32, n)
		for i := range v {
			v[i] = finite[i%len(finite)]
		}
		if anyNonFinite32(v) {
			t.Fatalf("finite %v reported non-finite", v)
		}
		for pos := range n {
			for _, s := range specials {
				w := append([]float32(nil), v...)
				w[pos] = s
				if !anyNonFinite32(w) {
					t.Fatalf("%v: the non-finite element %d was missed", w, pos)
				}
			}
		}
	}
	r := uint32(7)
	for range 100000 {
		r ^= r << 13
		r ^= r >> 17
		r ^= r << 5
		f := math.Float32frombits(r)
		if anyNonFinite32([]float32{0, f}) != isNonFinite32(f) || anyNonFinite32([]float32{f}) != isNonFinite32(f) {
			t.Fatalf("%#x: disagrees with isNonFinite32", r)
		}
	}
}

func BenchmarkDecodeScanBinary(b *testing.B) {
	raw := make([]byte, 0, 4*4096)
	for i := range 4096 {
		raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(float32(i%256)/255))
	}
	hdr := `{"inputs":[{"name":"scan","datatype":"FP32","shape":[1,1,64,64],"parameters":{"binary_data_size":16384}}]}`
	body := append([]byte(hdr), raw...)
	b.SetBytes(int64(len(body)))
	var bufs Buffers
	for b.Loop() {
		if _, err := bufs.DecodeInferRequestBinary(body, len(hdr), DefaultLimits); err != nil {
			b.Fatal(err)
		}
		bufs.Reset()
	}
}
