package modelrepo

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeModel(t *testing.T, root, name string, model []byte, digest string) {
	t.Helper()
	dir := filepath.Join(root, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := `{"name":"` + name + `","sha256":"` + digest + `","max_batch_size":4,
		"inputs":[{"name":"x","datatype":"FP32","shape":[-1,2]}],
		"outputs":[{"name":"y","datatype":"FP32","shape":[-1,2],"labels":["a","b"]}]}`
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "model.onnx"), model, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLoad(t *testing.T) {
	root := t.TempDir()
	writeModel(t, root, "b-model", []byte("model b"), Digest([]byte("model b")))
	writeModel(t, root, "a-model", []byte("model a"), Digest([]byte("model a")))
	if err := os.MkdirAll(filepath.Join(root, "not-a-model"), 0o755); err != nil {
		t.Fatal(err)
	}
	ms, err := Load(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Name != "a-model" || string(ms[1].Bytes) != "model b" || ms[0].Version != "1" || ms[0].Platform != "onnxruntime_onnx" {
		t.Fatalf("loaded %+v", ms)
	}
	if d := Digests(ms); d["a-model"] != Digest([]byte("model a")) {
		t.Fatalf("digests %v", d)
	}
}

// A model whose bytes differ from the pinned digest is refused, and so is the whole repository.
func TestLoadRefusesDigestMismatch(t *testing.T) {
	root := t.TempDir()
	writeModel(t, root, "good", []byte("good"), Digest([]byte("good")))
	writeModel(t, root, "tampered", []byte("tampered bytes"), Digest([]byte("original bytes")))
	_, err := Load(root)
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), "tampered") {
		t.Fatalf("err = %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	root := t.TempDir()
	if _, err := Load(root); err == nil {
		t.Error("empty repository accepted")
	}
	if _, err := Load(filepath.Join(root, "missing")); err == nil {
		t.Error("missing repository accepted")
	}
	writeModel(t, root, "m", []byte("x"), Digest([]byte("x")))
	if err := os.Rename(filepath.Join(root, "m"), filepath.Join(root, "other")); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(root); err == nil || !strings.Contains(err.Error(), "must match") {
		t.Errorf("folder/name mismatch: %v", err)
	}
}

func TestValidate(t *testing.T) {
	ok := func() Config {
		return Config{
			Name:         "m",
			Version:      "1",
			Model:        "model.onnx",
			SHA256:       strings.Repeat("0", 64),
			MaxBatchSize: 2,
			Inputs:       []TensorSpec{{Name: "x", Datatype: "FP32", Shape: []int64{-1, 3}}},
			Outputs:      []TensorSpec{{Name: "y", Datatype: "FP32", Shape: []int64{-1, 2}, Labels: []string{"a", "b"}}},
		}
	}
	c := ok()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(c *Config){
		"name":           func(c *Config) { c.Name = "../x" },
		"version":        func(c *Config) { c.Version = "v1" },
		"model":          func(c *Config) { c.Model = "../model.onnx" },
		"sha256":         func(c *Config) { c.SHA256 = "ABC" },
		"max_batch_size": func(c *Config) { c.MaxBatchSize = -1 },
		"inputs":         func(c *Config) { c.Inputs = nil },
		"datatype":       func(c *Config) { c.Inputs[0].Datatype = "FLOAT" },
		"shape[1]":       func(c *Config) { c.Inputs[0].Shape[1] = 0 },
		"shape[0]":       func(c *Config) { c.Inputs[0].Shape[0] = 4 },
		"labels":         func(c *Config) { c.Outputs[0].Labels = []string{"a"} },
		"duplicate":      func(c *Config) { c.Outputs = append(c.Outputs, c.Outputs[0]) },
	}
	for want, mutate := range cases {
		c := ok()
		mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v", want, err)
		}
	}
	if _, err := ParseConfig([]byte(`{"name":"m","surprise":1}`)); err == nil || !strings.Contains(err.Error(), "surprise") {
		t.Errorf("unknown field: %v", err)
	}
}
