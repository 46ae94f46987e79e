package ortsession_test

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/countersign/countersign/inference-server/demomodel"
	"github.com/countersign/countersign/inference-server/internal/testort"
	"github.com/countersign/countersign/inference-server/modelrepo"
	"github.com/countersign/countersign/inference-server/oip"
	"github.com/countersign/countersign/inference-server/ortsession"
)

func loadDemo(t *testing.T) *modelrepo.Model {
	t.Helper()
	m, err := modelrepo.LoadModel(filepath.Join(testort.ModelRepository(), demomodel.Name))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// The ONNX graph that modelgen encodes must compute what the Go network computes.
func TestDemoModelMatchesGoNetwork(t *testing.T) {
	testort.Lib(t)
	m := loadDemo(t)
	s, err := ortsession.New(m, ortsession.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	net := demomodel.Train(demomodel.DefaultTrain)
	samples, _ := filepath.Glob(filepath.Join(m.Dir, "samples", "*.png"))
	if len(samples) == 0 {
		t.Fatal("no sample scans")
	}
	correct := 0
	for _, p := range samples {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
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
				t.Errorf("%s: ORT probability[%d] = %v, Go network %v", filepath.Base(p), c, got[c], want[c])
			}
			if got[c] > got[best] {
				best = c
			}
		}
		if strings.HasPrefix(filepath.Base(p), demomodel.Classes[best]+"-") {
			correct++
		}
		t.Logf("%s: %v", filepath.Base(p), got)
	}
	if correct < len(samples)-1 {
		t.Errorf("only %d of %d samples classified as their file name says", correct, len(samples))
	}
}

func TestConfigMustMatchGraph(t *testing.T) {
	testort.Lib(t)
	m := loadDemo(t)
	bad := *m
	bad.Inputs = []modelrepo.TensorSpec{{Name: "scan", Datatype: "FP64", Shape: []int64{-1, 1, 64, 64}}}
	if _, err := ortsession.New(&bad, ortsession.Options{}); err == nil || !strings.Contains(err.Error(), "FP64") {
		t.Fatalf("datatype mismatch: err = %v", err)
	}
	bad = *m
	bad.Inputs = []modelrepo.TensorSpec{{Name: "scan", Datatype: "FP32", Shape: []int64{-1, 1, 32, 64}}}
	if _, err := ortsession.New(&bad, ortsession.Options{}); err == nil || !strings.Contains(err.Error(), "shape") {
		t.Fatalf("shape mismatch: err = %v", err)
	}
	bad = *m
	bad.Outputs = []modelrepo.TensorSpec{{Name: "scores", Datatype: "FP32", Shape: []int64{-1, 3}}, m.Outputs[1]}
	if _, err := ortsession.New(&bad, ortsession.Options{}); err == nil || !strings.Contains(err.Error(), "scores") {
		t.Fatalf("name mismatch: err = %v", err)
	}
}

func TestVersion(t *testing.T) {
	testort.Lib(t)
	if v := ort.GetVersion(); v != ortsession.Version {
		t.Fatalf("library version %s, want %s", v, ortsession.Version)
	}
}
