package demomodel

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/countersign/countersign/inference-server/onnxpb"
)

// The benchmark model: a CNN over 224×224 single-channel scans whose run costs milliseconds on
// one core, as real diagnostic models do, so that the server's per-request overhead can be
// weighed against a realistic amount of compute (the demo model runs in about 20 µs). Its
// weights are deterministic pseudo-random numbers (He-style uniform, from the package's integer
// PRNG), not trained: its outputs mean nothing. It is generated on demand (by the benchmark,
// or by `modelgen -model bench`) and not committed.
//
//	scan [1×224×224] → (scan − 0.3) × 5
//	→ Conv 32×(3×3) stride 2 → ReLU → [32×112×112]
//	→ Conv 64×(3×3) stride 2 → ReLU → [64×56×56]
//	→ Conv 128×(3×3) stride 2 → ReLU → [128×28×28]
//	→ Conv 256×(3×3) stride 2 → ReLU → [256×14×14]
//	→ GlobalAveragePool → Flatten (256) → Gemm → logits [3] → Softmax → probabilities [3]
//
// About 177 million multiply-adds per scan (a tenth of a ResNet-18 at this size).
const (
	BenchName = "chest-scan-bench-224"
	BenchSize = 224
	benchSeed = 20250224
)

// benchChannels are the output channels of the benchmark model's convolutions.
var benchChannels = []int64{32, 64, 128, 256}

// BenchModel returns the model-repository files of the benchmark model: model.onnx, config.json
// and MODEL_CARD.md under BenchName/. The same code writes the same bytes.
func BenchModel() (Files, error) {
	r := &rng{s: benchSeed}
	uniform := func(n int, limit float32) []float32 {
		w := make([]float32, n)
		for i := range w {
			w[i] = r.between(-limit, limit)
		}
		return w
	}
	// He-style limits sqrt(6/fanIn), precomputed: fan-in 9, 288, 576, 1152 (and 256 for fc).
	limits := []float32{0.8165, 0.1443, 0.1021, 0.0722}
	batch := onnxpb.Dim{Param: "batch"}
	nc := int64(len(Classes))
	inits := []onnxpb.Tensor{
		{Name: "input.mean", Data: []float32{inputMean}},
		{Name: "input.scale", Data: []float32{inputScale}},
	}
	nodes := []onnxpb.Node{
		{Name: "center", OpType: "Sub", Inputs: []string{"scan", "input.mean"}, Outputs: []string{"centered"}},
		{Name: "normalise", OpType: "Mul", Inputs: []string{"centered", "input.scale"}, Outputs: []string{"x0"}},
	}
	in := int64(1)
	for i, out := range benchChannels {
		w := fmt.Sprintf("conv%d.weight", i+1)
		b := fmt.Sprintf("conv%d.bias", i+1)
		inits = append(inits,
			onnxpb.Tensor{Name: w, Dims: []int64{out, in, 3, 3}, Data: uniform(int(out*in*9), limits[i])},
			onnxpb.Tensor{Name: b, Dims: []int64{out}, Data: make([]float32, out)})
		x, conv, y := fmt.Sprintf("x%d", i), fmt.Sprintf("conv%d.out", i+1), fmt.Sprintf("x%d", i+1)
		nodes = append(nodes,
			onnxpb.Node{
				Name:    fmt.Sprintf("conv%d", i+1),
				OpType:  "Conv",
				Inputs:  []string{x, w, b},
				Outputs: []string{conv},
				Attrs:   []onnxpb.Attr{onnxpb.IntsAttr("kernel_shape", 3, 3), onnxpb.IntsAttr("pads", 1, 1, 1, 1), onnxpb.IntsAttr("strides", 2, 2)},
			},
			onnxpb.Node{Name: fmt.Sprintf("relu%d", i+1), OpType: "Relu", Inputs: []string{conv}, Outputs: []string{y}})
		in = out
	}
	last := fmt.Sprintf("x%d", len(benchChannels))
	inits = append(inits,
		onnxpb.Tensor{Name: "fc.weight", Dims: []int64{nc, in}, Data: uniform(int(nc*in), 0.1531)},
		onnxpb.Tensor{Name: "fc.bias", Dims: []int64{nc}, Data: make([]float32, nc)})
	nodes = append(nodes,
		onnxpb.Node{Name: "gap", OpType: "GlobalAveragePool", Inputs: []string{last}, Outputs: []string{"pooled"}},
		onnxpb.Node{
			Name:    "flatten",
			OpType:  "Flatten",
			Inputs:  []string{"pooled"},
			Outputs: []string{"features"},
			Attrs:   []onnxpb.Attr{onnxpb.IntAttr("axis", 1)},
		},
		onnxpb.Node{
			Name:    "fc",
			OpType:  "Gemm",
			Inputs:  []string{"features", "fc.weight", "fc.bias"},
			Outputs: []string{"logits"},
			Attrs:   []onnxpb.Attr{onnxpb.IntAttr("transB", 1)},
		},
		onnxpb.Node{
			Name:    "softmax",
			OpType:  "Softmax",
			Inputs:  []string{"logits"},
			Outputs: []string{"probabilities"},
			Attrs:   []onnxpb.Attr{onnxpb.IntAttr("axis", -1)},
		})
	m := onnxpb.Model{
		IRVersion:       8,
		ProducerName:    "countersign-modelgen",
		ProducerVersion: "1",
		Domain:          "org.countersign.bench",
		ModelVersion:    1,
		DocString:       "Benchmark CNN with untrained pseudo-random weights: its outputs mean nothing. Not a clinical model.",
		Opsets:          []onnxpb.Opset{{Domain: "", Version: 17}},
		Metadata:        [][2]string{{"labels", strings.Join(Classes, ",")}},
		Graph: onnxpb.Graph{
			Name:         BenchName,
			Initializers: inits,
			Nodes:        nodes,
			Inputs:       []onnxpb.ValueInfo{{Name: "scan", ElemType: onnxpb.DataTypeFloat, Dims: []onnxpb.Dim{batch, {Value: 1}, {Value: BenchSize}, {Value: BenchSize}}}},
			Outputs: []onnxpb.ValueInfo{
				{Name: "probabilities", ElemType: onnxpb.DataTypeFloat, Dims: []onnxpb.Dim{batch, {Value: nc}}},
				{Name: "logits", ElemType: onnxpb.DataTypeFloat, Dims: []onnxpb.Dim{batch, {Value: nc}}},
			},
		},
	}
	model := m.Marshal()
	sum := sha256.Sum256(model)
	digest := hex.EncodeToString(sum[:])
	cfg, err := configJSON(BenchName, BenchSize, digest)
	if err != nil {
		return nil, err
	}
	card := "# Model card: " + BenchName + "\n\n" +
		"**A benchmark model, not a classifier.** Its weights are deterministic pseudo-random numbers, not\n" +
		"trained: its outputs mean nothing. It exists to measure the inference server against a model whose\n" +
		"run costs milliseconds, as real diagnostic models do (the demo model runs in about 20 µs).\n\n" +
		"- Input `scan`: FP32 `[batch, 1, 224, 224]`. Outputs `probabilities`, `logits`: FP32 `[batch, 3]`.\n" +
		"- Graph: (scan − 0.3) × 5 → 4 × (Conv 3×3 stride 2 → ReLU) with 32, 64, 128, 256 channels →\n" +
		"  GlobalAveragePool → Flatten → Gemm → Softmax (ONNX IR 8, opset 17); about 177 million\n" +
		"  multiply-adds per scan.\n" +
		"- SHA-256 of `model.onnx`: `" + digest + "`\n\n" +
		"Generated by `inference-server/demomodel.BenchModel` (`go run ./inference-server/cmd/modelgen -model bench`).\n"
	return Files{
		BenchName + "/model.onnx":    model,
		BenchName + "/config.json":   cfg,
		BenchName + "/MODEL_CARD.md": []byte(card),
	}, nil
}

// BenchScan scales a Size×Size scan up to BenchSize×BenchSize (nearest neighbour), so the
// benchmark model gets pixel values of the same form (k/255) as the demo's scans.
func BenchScan(scan []float32) []float32 {
	out := make([]float32, BenchSize*BenchSize)
	for y := range BenchSize {
		for x := range BenchSize {
			out[y*BenchSize+x] = scan[(y*Size/BenchSize)*Size+x*Size/BenchSize]
		}
	}
	return out
}

// configJSON returns a model-repository config for a model with the demo's interface (a
// side×side scan in, probabilities and logits out). The layout is the one modelrepo reads; it is
// spelled out here rather than imported so that the generator does not depend on the server.
func configJSON(name string, side int64, digest string) ([]byte, error) {
	type tensor struct {
		Name           string   `json:"name"`
		Datatype       string   `json:"datatype"`
		Shape          []int64  `json:"shape"`
		Labels         []string `json:"labels,omitempty"`
		AllowNonFinite bool     `json:"allow_non_finite,omitempty"`
	}
	cfg := struct {
		Name         string   `json:"name"`
		Version      string   `json:"version"`
		Platform     string   `json:"platform"`
		Model        string   `json:"model"`
		SHA256       string   `json:"sha256"`
		MaxBatchSize int      `json:"max_batch_size"`
		Inputs       []tensor `json:"inputs"`
		Outputs      []tensor `json:"outputs"`
	}{
		Name:         name,
		Version:      "1",
		Platform:     "onnxruntime_onnx",
		Model:        "model.onnx",
		SHA256:       digest,
		MaxBatchSize: 32,
		Inputs:       []tensor{{Name: "scan", Datatype: "FP32", Shape: []int64{-1, 1, side, side}}},
		Outputs: []tensor{
			{Name: "probabilities", Datatype: "FP32", Shape: []int64{-1, int64(len(Classes))}, Labels: Classes},
			{Name: "logits", Datatype: "FP32", Shape: []int64{-1, int64(len(Classes))}, Labels: Classes},
		},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
