// Package demomodel generates the demo chest-scan classifier: a synthetic image set, a small CNN
// trained on it in pure Go, the ONNX file, its model-repository config, a model card and sample
// scans. Generation is deterministic: the same code writes the same bytes.
//
// The model is a demonstration of the serving and attestation path, not a clinical model.
package demomodel

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"strings"

	"github.com/countersign/countersign/inference-server/onnxpb"
)

// Name is the model's name in the model repository.
const Name = "chest-scan-classifier"

// Default settings of the committed model. Changing any of them changes the committed bytes.
var (
	DefaultTrain = TrainConfig{
		Seed:      20240604,
		PerClass:  300,
		Epochs:    8,
		BatchSize: 16,
		LR:        0.01,
		Beta1:     0.9,
		Beta2:     0.999,
	}
	// TestSeed draws the held-out set; TestPerClass scans per class.
	TestSeed     uint64 = 777001
	TestPerClass        = 200
	// SampleSeed draws the committed sample scans; SamplesPerClass per class.
	SampleSeed      uint64 = 4242
	SamplesPerClass        = 2
)

// Files are the generated files, relative to the model repository (e.g. "chest-scan-classifier/model.onnx").
type Files map[string][]byte

// Generate trains the model and returns every file of its model-repository folder.
func Generate() (Files, error) {
	files, _, err := Build()
	return files, err
}

// Build is Generate that also returns the trained network.
func Build() (Files, *Net, error) {
	net := Train(DefaultTrain)
	model := net.ONNX()
	sum := sha256.Sum256(model)
	digest := hex.EncodeToString(sum[:])

	testX, testY := Dataset(TestSeed, TestPerClass)
	acc, conf := net.Accuracy(testX, testY)
	trainX, trainY := Dataset(DefaultTrain.Seed+1, DefaultTrain.PerClass)
	trainAcc, _ := net.Accuracy(trainX, trainY)

	cfg, err := ConfigJSON(digest)
	if err != nil {
		return nil, nil, err
	}
	files := Files{
		Name + "/model.onnx":    model,
		Name + "/config.json":   cfg,
		Name + "/MODEL_CARD.md": modelCard(digest, acc, trainAcc, conf),
	}
	r := &rng{s: SampleSeed}
	for i := range SamplesPerClass {
		for c, class := range Classes {
			img := Scan(r, c)
			b, err := EncodePNG(img)
			if err != nil {
				return nil, nil, err
			}
			files[fmt.Sprintf("%s/samples/%s-%d.png", Name, class, i+1)] = b
		}
	}
	return files, net, nil
}

// EncodePNG writes a scan as an 8-bit greyscale PNG.
func EncodePNG(img []float32) ([]byte, error) {
	g := image.NewGray(image.Rect(0, 0, Size, Size))
	for i, v := range img {
		g.Pix[i] = uint8(int(float32(v*255) + 0.5))
	}
	var buf bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestCompression}
	if err := enc.Encode(&buf, g); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// DecodePNG reads a greyscale PNG of Size×Size into model input values k/255.
func DecodePNG(b []byte) ([]float32, error) {
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	if img.Bounds().Dx() != Size || img.Bounds().Dy() != Size {
		return nil, fmt.Errorf("scan is %dx%d, want %dx%d", img.Bounds().Dx(), img.Bounds().Dy(), Size, Size)
	}
	out := make([]float32, Size*Size)
	for y := range Size {
		for x := range Size {
			gv := color.GrayModel.Convert(img.At(img.Bounds().Min.X+x, img.Bounds().Min.Y+y)).(color.Gray)
			out[y*Size+x] = float32(gv.Y) / 255
		}
	}
	return out, nil
}

// ONNX encodes the network as an ONNX model (IR 8, opset 17) with a symbolic batch dimension.
func (n *Net) ONNX() []byte {
	batch := onnxpb.Dim{Param: "batch"}
	nc := int64(len(Classes))
	m := onnxpb.Model{
		IRVersion:       8,
		ProducerName:    "countersign-modelgen",
		ProducerVersion: "1",
		Domain:          "org.countersign.demo",
		ModelVersion:    1,
		DocString:       "Demonstration chest-scan classifier trained on synthetic images. Not a clinical model.",
		Opsets:          []onnxpb.Opset{{Domain: "", Version: 17}},
		Metadata:        [][2]string{{"labels", strings.Join(Classes, ",")}},
		Graph: onnxpb.Graph{
			Name: Name,
			Initializers: []onnxpb.Tensor{
				{Name: "input.mean", Data: []float32{inputMean}},
				{Name: "input.scale", Data: []float32{inputScale}},
				{Name: "conv1.weight", Dims: []int64{c1, 1, k1, k1}, Data: n.W1},
				{Name: "conv1.bias", Dims: []int64{c1}, Data: n.B1},
				{Name: "conv2.weight", Dims: []int64{c2, c1, k2, k2}, Data: n.W2},
				{Name: "conv2.bias", Dims: []int64{c2}, Data: n.B2},
				{Name: "fc.weight", Dims: []int64{nc, nFeat}, Data: n.W3},
				{Name: "fc.bias", Dims: []int64{nc}, Data: n.B3},
			},
			Nodes: []onnxpb.Node{
				{Name: "center", OpType: "Sub", Inputs: []string{"scan", "input.mean"}, Outputs: []string{"centered"}},
				{Name: "normalise", OpType: "Mul", Inputs: []string{"centered", "input.scale"}, Outputs: []string{"normalised"}},
				{
					Name:    "conv1",
					OpType:  "Conv",
					Inputs:  []string{"normalised", "conv1.weight", "conv1.bias"},
					Outputs: []string{"conv1.out"},
					Attrs:   []onnxpb.Attr{onnxpb.IntsAttr("kernel_shape", k1, k1), onnxpb.IntsAttr("pads", p1, p1, p1, p1), onnxpb.IntsAttr("strides", s1, s1)},
				},
				{Name: "relu1", OpType: "Relu", Inputs: []string{"conv1.out"}, Outputs: []string{"relu1.out"}},
				{
					Name:    "pool1",
					OpType:  "MaxPool",
					Inputs:  []string{"relu1.out"},
					Outputs: []string{"pool1.out"},
					Attrs:   []onnxpb.Attr{onnxpb.IntsAttr("kernel_shape", 2, 2), onnxpb.IntsAttr("strides", 2, 2)},
				},
				{
					Name:    "conv2",
					OpType:  "Conv",
					Inputs:  []string{"pool1.out", "conv2.weight", "conv2.bias"},
					Outputs: []string{"conv2.out"},
					Attrs:   []onnxpb.Attr{onnxpb.IntsAttr("kernel_shape", k2, k2), onnxpb.IntsAttr("pads", p2, p2, p2, p2), onnxpb.IntsAttr("strides", 1, 1)},
				},
				{Name: "relu2", OpType: "Relu", Inputs: []string{"conv2.out"}, Outputs: []string{"relu2.out"}},
				{
					Name:    "pool2",
					OpType:  "MaxPool",
					Inputs:  []string{"relu2.out"},
					Outputs: []string{"pool2.out"},
					Attrs:   []onnxpb.Attr{onnxpb.IntsAttr("kernel_shape", pool2, pool2), onnxpb.IntsAttr("strides", pool2, pool2)},
				},
				{
					Name:    "flatten",
					OpType:  "Flatten",
					Inputs:  []string{"pool2.out"},
					Outputs: []string{"features"},
					Attrs:   []onnxpb.Attr{onnxpb.IntAttr("axis", 1)},
				},
				{
					Name:    "fc",
					OpType:  "Gemm",
					Inputs:  []string{"features", "fc.weight", "fc.bias"},
					Outputs: []string{"logits"},
					Attrs:   []onnxpb.Attr{onnxpb.IntAttr("transB", 1)},
				},
				{
					Name:    "softmax",
					OpType:  "Softmax",
					Inputs:  []string{"logits"},
					Outputs: []string{"probabilities"},
					Attrs:   []onnxpb.Attr{onnxpb.IntAttr("axis", -1)},
				},
			},
			Inputs: []onnxpb.ValueInfo{{Name: "scan", ElemType: onnxpb.DataTypeFloat, Dims: []onnxpb.Dim{batch, {Value: 1}, {Value: Size}, {Value: Size}}}},
			Outputs: []onnxpb.ValueInfo{
				{Name: "probabilities", ElemType: onnxpb.DataTypeFloat, Dims: []onnxpb.Dim{batch, {Value: nc}}},
				{Name: "logits", ElemType: onnxpb.DataTypeFloat, Dims: []onnxpb.Dim{batch, {Value: nc}}},
			},
		},
	}
	return m.Marshal()
}

// ConfigJSON returns the model-repository config for the demo model with the given digest.
func ConfigJSON(digest string) ([]byte, error) { return configJSON(Name, Size, digest) }

func modelCard(digest string, acc, trainAcc float64, conf [][]int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# Model card: %s\n\n", Name)
	b.WriteString("**This is a demonstration model, not a clinical model.** It was trained on synthetic images\n")
	b.WriteString("that only caricature chest radiographs. It must never be used to inform any diagnosis.\n\n")
	b.WriteString("## What it is\n\n")
	b.WriteString("A small convolutional network that classifies single-channel 64×64 synthetic \"chest scans\" into\n")
	fmt.Fprintf(&b, "%d classes: %s. It exists so that Countersign's inference server has a real ONNX model to\n", len(Classes), "`"+strings.Join(Classes, "`, `")+"`")
	b.WriteString("serve and the attestation chain has a model digest to name.\n\n")
	b.WriteString("- Input `scan`: FP32 `[batch, 1, 64, 64]`, pixel values in [0, 1] (8-bit grey / 255).\n")
	b.WriteString("- Outputs `probabilities` (softmax) and `logits`: FP32 `[batch, 3]`, in the class order above.\n")
	b.WriteString("- Graph: (scan − 0.3) × 5 → Conv 4×5×5 stride 2 → ReLU → MaxPool 2 → Conv 8×3×3 → ReLU → MaxPool 4 → Flatten → Gemm → Softmax (ONNX IR 8, opset 17).\n")
	fmt.Fprintf(&b, "- SHA-256 of `model.onnx`: `%s`\n\n", digest)
	b.WriteString("## Data\n\n")
	b.WriteString("Synthetic, drawn by `inference-server/demomodel` from fixed seeds: a torso, two dark lung fields\n")
	b.WriteString("with ribs, a heart shadow and noise. `opacity` adds one or two large soft bright blobs inside a\n")
	b.WriteString("lung; `nodule` adds one to three small sharp round spots; `normal` adds neither.\n\n")
	b.WriteString("## Training\n\n")
	t := DefaultTrain
	fmt.Fprintf(&b, "Pure Go, one goroutine, float32, Adam (β1 %.3g, β2 %.4g), learning rate %.2g (×0.3 for the last third),\n", t.Beta1, t.Beta2, t.LR)
	fmt.Fprintf(&b, "batch %d, %d epochs over %d scans per class (seed %d). Regenerate with `make model`; the output is\n", t.BatchSize, t.Epochs, t.PerClass, t.Seed)
	b.WriteString("bit-for-bit identical (a test checks the committed files).\n\n")
	b.WriteString("## Evaluation (held-out synthetic set)\n\n")
	fmt.Fprintf(&b, "%d scans per class drawn from a separate seed (%d).\n\n", TestPerClass, TestSeed)
	fmt.Fprintf(&b, "- Accuracy: **%.1f%%** (training set: %.1f%%)\n\n", 100*acc, 100*trainAcc)
	b.WriteString("Confusion matrix (rows: true class, columns: predicted):\n\n")
	b.WriteString("| true \\ predicted |")
	for _, c := range Classes {
		fmt.Fprintf(&b, " %s |", c)
	}
	b.WriteString("\n|---|")
	for range Classes {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	for i, row := range conf {
		fmt.Fprintf(&b, "| %s |", Classes[i])
		for _, v := range row {
			fmt.Fprintf(&b, " %d |", v)
		}
		b.WriteString("\n")
	}
	b.WriteString("\n## Limits\n\n")
	b.WriteString("Accuracy on synthetic data says nothing about real images. The classes, shapes and intensities\n")
	b.WriteString("are invented. Use it to exercise the serving path, batching and attestation, nothing else.\n")
	return []byte(b.String())
}
