package oip

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

func BenchmarkDecodeScan(b *testing.B) {
	body := scanBody()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := DecodeInferRequest(body, DefaultLimits); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeScanBuffers decodes the same request reusing the tensor memory, as the server
// does.
func BenchmarkDecodeScanBuffers(b *testing.B) {
	body := scanBody()
	b.SetBytes(int64(len(body)))
	var bufs Buffers
	for b.Loop() {
		if _, err := bufs.DecodeInferRequest(body, DefaultLimits); err != nil {
			b.Fatal(err)
		}
		bufs.Reset()
	}
}

// BenchmarkDecodeInt32 decodes 4096 INT32 elements (the generic integer path).
func BenchmarkDecodeInt32(b *testing.B) {
	r := rand.New(rand.NewPCG(2, 2))
	var sb strings.Builder
	sb.WriteString(`{"inputs":[{"name":"x","datatype":"INT32","shape":[4096],"data":[`)
	for i := range 4096 {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(strconv.Itoa(int(r.Int32()) - 1<<30))
	}
	sb.WriteString(`]}]}`)
	body := []byte(sb.String())
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := DecodeInferRequest(body, DefaultLimits); err != nil {
			b.Fatal(err)
		}
	}
}

// scanBody is a 64×64 FP32 scan as a JSON request (43 KB): 8-bit pixels scaled to [0, 1], from
// a fixed-seed generator (a repeating ramp would let the branch predictor learn the digits).
func scanBody() []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	var sb strings.Builder
	sb.WriteString(`{"inputs":[{"name":"scan","datatype":"FP32","shape":[1,1,64,64],"data":[`)
	for i := range 4096 {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(strconv.FormatFloat(float64(float32(rng.IntN(256))/255), 'g', -1, 32))
	}
	sb.WriteString(`]}]}`)
	return []byte(sb.String())
}
