package demomodel_test

import (
	"context"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/countersign/countersign/inference-server/demomodel"
	"github.com/countersign/countersign/inference-server/internal/testort"
	"github.com/countersign/countersign/inference-server/modelrepo"
	"github.com/countersign/countersign/inference-server/oip"
	"github.com/countersign/countersign/inference-server/ortsession"
)

// The ONNX graph that the generator encodes computes what the Go network computes, in ONNX
// Runtime, on every committed sample scan.
func TestONNXMatchesGoNetwork(t *testing.T) {
	if testing.Short() {
		t.Skip("trains the model")
	}
	testort.Lib(t)
	m, err := modelrepo.LoadModel(filepath.Join(testort.ModelRepository(), demomodel.Name))
	if err != nil {
		t.Fatal(err)
	}
	s, err := ortsession.New(m, ortsession.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	files, net, err := demomodel.BuildOnce()
	if err != nil {
		t.Fatal(err)
	}
	correct, n := 0, 0
	for name, b := range files {
		if !strings.HasSuffix(name, ".png") {
			continue
		}
		n++
		x, err := demomodel.DecodePNG(b)
		if err != nil {
			t.Fatal(err)
		}
		out, err := s.Run(context.Background(), []oip.Tensor{{Name: "scan", Datatype: oip.FP32, Shape: []int64{1, 1, 64, 64}, Data: x}})
		if err != nil {
			t.Fatal(err)
		}
		got := out[0].Data.([]float32)
		want := net.Predict(x)
		best := 0
		for c := range got {
			if d := math.Abs(float64(got[c] - want[c])); d > 1e-4 {
				t.Errorf("%s: ORT probability[%d] = %v, Go network %v", name, c, got[c], want[c])
			}
			if got[c] > got[best] {
				best = c
			}
		}
		if strings.HasPrefix(filepath.Base(name), demomodel.Classes[best]+"-") {
			correct++
		}
	}
	if n == 0 || correct < n-1 {
		t.Errorf("%d of %d samples classified as their file name says", correct, n)
	}
}
