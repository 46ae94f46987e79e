package oip

import (
	"strconv"
	"strings"
	"testing"
)

func BenchmarkDecodeScan(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"inputs":[{"name":"scan","datatype":"FP32","shape":[1,1,64,64],"data":[`)
	for i := range 4096 {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(strconv.FormatFloat(float64(float32(i%256)/255), 'g', -1, 32))
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
