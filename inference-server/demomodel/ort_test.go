package demomodel_test

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"slices"
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

// The benchmark model is deterministic, passes the model repository's and the session's checks,
// and runs in ONNX Runtime on an upscaled sample scan, batched or not.
func TestBenchModelRuns(t *testing.T) {
	testort.Lib(t)
	files, err := demomodel.BenchModel()
	if err != nil {
		t.Fatal(err)
	}
	again, _ := demomodel.BenchModel()
	dir := t.TempDir()
	for name, b := range files {
		if !bytes.Equal(b, again[name]) {
			t.Errorf("%s differs between two generations", name)
		}
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m, err := modelrepo.LoadModel(filepath.Join(dir, demomodel.BenchName))
	if err != nil {
		t.Fatal(err)
	}
	s, err := ortsession.New(m, ortsession.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	png, err := os.ReadFile(filepath.Join(testort.ModelRepository(), demomodel.Name, "samples", "nodule-1.png"))
	if err != nil {
		t.Fatal(err)
	}
	x, err := demomodel.DecodePNG(png)
	if err != nil {
		t.Fatal(err)
	}
	big := demomodel.BenchScan(x)
	const side = demomodel.BenchSize
	one, err := s.Run(context.Background(), []oip.Tensor{{Name: "scan", Datatype: oip.FP32, Shape: []int64{1, 1, side, side}, Data: big}})
	if err != nil {
		t.Fatal(err)
	}
	two, err := s.Run(context.Background(), []oip.Tensor{{Name: "scan", Datatype: oip.FP32, Shape: []int64{2, 1, side, side}, Data: append(slices.Clone(big), big...)}})
	if err != nil {
		t.Fatal(err)
	}
	p1, p2 := one[0].Data.([]float32), two[0].Data.([]float32)
	sum := float32(0)
	for c := range p1 {
		sum += p1[c]
		if d := math.Abs(float64(p1[c] - p2[c])); d > 1e-5 || math.Abs(float64(p1[c]-p2[c+len(p1)])) > 1e-5 {
			t.Errorf("class %d: single %v, batched %v and %v", c, p1[c], p2[c], p2[c+len(p1)])
		}
	}
	if len(p1) != len(demomodel.Classes) || math.Abs(float64(sum-1)) > 1e-5 {
		t.Errorf("probabilities %v", p1)
	}
}
