package ortsession_test

import (
	"path/filepath"
	"strings"
	"testing"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/countersign/countersign/inference-server/demomodel"
	"github.com/countersign/countersign/inference-server/internal/testort"
	"github.com/countersign/countersign/inference-server/modelrepo"
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
