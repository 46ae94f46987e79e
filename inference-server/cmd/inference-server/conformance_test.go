package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/countersign/countersign/inference-server/oip"
	pb "github.com/countersign/countersign/inference-server/oipgrpc/inferencepb"
)

// The conformance suite: one table of inference cases, each sent through every wire form the
// server speaks (REST with JSON tensors, REST with the binary tensor data extension, gRPC with
// typed contents, gRPC with raw_input_contents) to one real server (real ONNX Runtime). Every
// wire form must give the same outcome; successful ones must give the same output tensors, bit
// for bit, and equal a direct ONNX Runtime run where the case says so.

// outcome is what a wire form made of a case: the protocol-neutral class of the result, the
// error message, and the output tensors.
type outcome struct {
	kind    string // "ok", "invalid", "not found", "unavailable", or the raw status for others
	msg     string
	outputs []oip.Tensor
}

// wireForm sends one case to a running server.
type wireForm struct {
	name string
	send func(t *testing.T, c *confCase) outcome
}

type confCase struct {
	name            string
	model, version  string
	id              string
	inputs          []oip.Tensor
	outputs         []oip.RequestedOutput
	want            string // outcome kind
	contains        string // in the error message (every wire form)
	direct          [][]float32
	wantOutputNames []string
}

func scanTensor(name string, scans ...[]float32) oip.Tensor {
	var all []float32
	for _, s := range scans {
		all = append(all, s...)
	}
	return oip.Tensor{Name: name, Datatype: oip.FP32, Shape: []int64{int64(len(scans)), 1, 64, 64}, Data: all}
}

func confCases(t *testing.T) []confCase {
	s := samples(t)
	x, y := s["normal-1"], s["opacity-1"]
	nan := slices.Clone(x)
	nan[17] = float32(math.NaN())
	var big [][]float32
	for range 33 {
		big = append(big, x)
	}
	f64 := oip.Tensor{Name: "scan", Datatype: oip.FP64, Shape: []int64{1, 1, 64, 64}, Data: make([]float64, 4096)}
	return []confCase{
		{
			name:            "one scan",
			id:              "a",
			inputs:          []oip.Tensor{scanTensor("scan", x)},
			want:            "ok",
			direct:          [][]float32{x},
			wantOutputNames: []string{"probabilities", "logits"},
		},
		{
			name:            "batch of two, version given",
			version:         "1",
			inputs:          []oip.Tensor{scanTensor("scan", x, y)},
			want:            "ok",
			direct:          [][]float32{x, y},
			wantOutputNames: []string{"probabilities", "logits"},
		},
		{
			name:            "one output requested",
			inputs:          []oip.Tensor{scanTensor("scan", y)},
			outputs:         []oip.RequestedOutput{{Name: "logits"}},
			want:            "ok",
			wantOutputNames: []string{"logits"},
		},
		{
			name:            "classification top 2",
			inputs:          []oip.Tensor{scanTensor("scan", y)},
			outputs:         []oip.RequestedOutput{{Name: "probabilities", Classification: 2}},
			want:            "ok",
			wantOutputNames: []string{"probabilities"},
		},
		{
			name:     "unknown model",
			model:    "nope",
			inputs:   []oip.Tensor{scanTensor("scan", x)},
			want:     "not found",
			contains: `model "nope" not found`,
		},
		{
			name:     "unknown version",
			version:  "2",
			inputs:   []oip.Tensor{scanTensor("scan", x)},
			want:     "not found",
			contains: `has no version "2"`,
		},
		{name: "wrong datatype", inputs: []oip.Tensor{f64}, want: "invalid", contains: "datatype FP64, model expects FP32"},
		{name: "shape mismatch", inputs: []oip.Tensor{{Name: "scan", Datatype: oip.FP32, Shape: []int64{1, 1, 32, 128}, Data: x}}, want: "invalid", contains: "does not match the model's [-1 1 64 64]"},
		{name: "element count", inputs: []oip.Tensor{{Name: "scan", Datatype: oip.FP32, Shape: []int64{2, 1, 64, 64}, Data: x}}, want: "invalid", contains: "needs 8192 elements"},
		{name: "unknown input", inputs: []oip.Tensor{scanTensor("image", x)}, want: "invalid", contains: `has no input "image"`},
		{name: "input given twice", inputs: []oip.Tensor{scanTensor("scan", x), scanTensor("scan", x)}, want: "invalid", contains: `input "scan" given twice`},
		{name: "no inputs", inputs: []oip.Tensor{}, want: "invalid", contains: "request has no inputs"},
		{
			name:     "unknown output",
			inputs:   []oip.Tensor{scanTensor("scan", x)},
			outputs:  []oip.RequestedOutput{{Name: "heatmap"}},
			want:     "invalid",
			contains: `has no output "heatmap"`,
		},
		{name: "NaN", inputs: []oip.Tensor{scanTensor("scan", nan)}, want: "invalid", contains: "NaN or infinite values are not allowed"},
		{name: "batch too large", inputs: []oip.Tensor{scanTensor("scan", big...)}, want: "invalid", contains: "batch of 33 exceeds the model's max_batch_size 32"},
	}
}

func TestIntegrationConformanceRESTAndGRPC(t *testing.T) {
	in := start(t, "--grpc-listen", "127.0.0.1:0")
	conn, err := grpc.NewClient(in.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	gc := pb.NewGRPCInferenceServiceClient(conn)
	forms := []wireForm{
		{"REST JSON", func(t *testing.T, c *confCase) outcome { return restInfer(t, in.url, c, false) }},
		{"REST binary", func(t *testing.T, c *confCase) outcome { return restInfer(t, in.url, c, true) }},
		{"gRPC contents", func(t *testing.T, c *confCase) outcome { return grpcInfer(t, gc, c, false) }},
		{"gRPC raw", func(t *testing.T, c *confCase) outcome { return grpcInfer(t, gc, c, true) }},
	}
	direct := newDirect(t)
	for _, c := range confCases(t) {
		t.Run(c.name, func(t *testing.T) {
			if c.model == "" {
				c.model = modelName
			}
			var first outcome
			for i, f := range forms {
				got := f.send(t, &c)
				if got.kind != c.want || !strings.Contains(got.msg, c.contains) {
					t.Errorf("%s: %s %q, want %s containing %q", f.name, got.kind, got.msg, c.want, c.contains)
					continue
				}
				if c.want != "ok" {
					continue
				}
				var names []string
				for _, o := range got.outputs {
					names = append(names, o.Name)
				}
				if !slices.Equal(names, c.wantOutputNames) {
					t.Errorf("%s: outputs %v, want %v", f.name, names, c.wantOutputNames)
				}
				if i == 0 {
					first = got
					continue
				}
				if d := diffTensors(first.outputs, got.outputs); d != "" {
					t.Errorf("%s differs from %s: %s", f.name, forms[0].name, d)
				}
			}
			if c.direct != nil && len(first.outputs) == 2 {
				probs, logits := direct.run(t, c.direct...)
				want := []oip.Tensor{
					{Name: "probabilities", Datatype: oip.FP32, Shape: []int64{int64(len(c.direct)), 3}, Data: probs},
					{Name: "logits", Datatype: oip.FP32, Shape: []int64{int64(len(c.direct)), 3}, Data: logits},
				}
				if d := diffTensors(want, first.outputs); d != "" {
					t.Errorf("server outputs differ from a direct ONNX Runtime run: %s", d)
				}
			}
		})
	}
}

// diffTensors compares tensors exactly: names, datatypes, shapes and data byte for byte.
func diffTensors(a, b []oip.Tensor) string {
	if len(a) != len(b) {
		return fmt.Sprintf("%d outputs against %d", len(a), len(b))
	}
	for i := range a {
		x, y := &a[i], &b[i]
		if x.Name != y.Name || x.Datatype != y.Datatype || !slices.Equal(x.Shape, y.Shape) {
			return fmt.Sprintf("output %d: %s %s %v against %s %s %v", i, x.Name, x.Datatype, x.Shape, y.Name, y.Datatype, y.Shape)
		}
		if !bytes.Equal(oip.AppendBinary(nil, x), oip.AppendBinary(nil, y)) {
			return fmt.Sprintf("output %q: data %v against %v", x.Name, x.Data, y.Data)
		}
	}
	return ""
}

func kindOfHTTP(status int) string {
	switch status {
	case 200:
		return "ok"
	case 400:
		return "invalid"
	case 404:
		return "not found"
	case 503:
		return "unavailable"
	}
	return "HTTP " + strconv.Itoa(status)
}

func kindOfGRPC(c codes.Code) string {
	switch c {
	case codes.OK:
		return "ok"
	case codes.InvalidArgument:
		return "invalid"
	case codes.NotFound:
		return "not found"
	case codes.Unavailable:
		return "unavailable"
	}
	return c.String()
}

// jsonData writes tensor data as a JSON array (NaN and infinities as the bare tokens the
// server's decoder accepts).
func jsonData(t *testing.T, d any) string {
	var b []byte
	switch v := d.(type) {
	case []float32:
		b = append(b, '[')
		for i, f := range v {
			if i > 0 {
				b = append(b, ',')
			}
			if math.IsNaN(float64(f)) {
				b = append(b, "NaN"...)
				continue
			}
			b = strconv.AppendFloat(b, float64(f), 'g', -1, 32)
		}
		return string(append(b, ']'))
	default:
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(j)
	}
}

func restInfer(t *testing.T, base string, c *confCase, binary bool) outcome {
	t.Helper()
	var js strings.Builder
	var raw []byte
	fmt.Fprintf(&js, `{"id":%q,`, c.id)
	if binary {
		js.WriteString(`"parameters":{"binary_data_output":true},`)
	}
	js.WriteString(`"inputs":[`)
	for i, in := range c.inputs {
		if i > 0 {
			js.WriteByte(',')
		}
		shape, _ := json.Marshal(in.Shape)
		fmt.Fprintf(&js, `{"name":%q,"datatype":%q,"shape":%s,`, in.Name, in.Datatype, shape)
		if binary {
			n := len(raw)
			raw = oip.AppendBinary(raw, &in)
			fmt.Fprintf(&js, `"parameters":{"binary_data_size":%d}}`, len(raw)-n)
		} else {
			fmt.Fprintf(&js, `"data":%s}`, jsonData(t, in.Data))
		}
	}
	js.WriteString("]")
	if c.outputs != nil {
		js.WriteString(`,"outputs":[`)
		for i, o := range c.outputs {
			if i > 0 {
				js.WriteByte(',')
			}
			fmt.Fprintf(&js, `{"name":%q`, o.Name)
			if o.Classification > 0 {
				fmt.Fprintf(&js, `,"parameters":{"classification":%d}`, o.Classification)
			}
			js.WriteString("}")
		}
		js.WriteString("]")
	}
	js.WriteString("}")
	url := base + "/v2/models/" + c.model
	if c.version != "" {
		url += "/versions/" + c.version
	}
	req, err := http.NewRequest(http.MethodPost, url+"/infer", bytes.NewReader(append([]byte(js.String()), raw...)))
	if err != nil {
		t.Fatal(err)
	}
	if binary {
		req.Header.Set(oip.HeaderContentLength, strconv.Itoa(js.Len()))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	jsonLen := len(body)
	if v := resp.Header.Get(oip.HeaderContentLength); v != "" {
		if jsonLen, err = strconv.Atoi(v); err != nil || jsonLen > len(body) {
			t.Fatalf("bad %s %q", oip.HeaderContentLength, v)
		}
	}
	var r struct {
		ID      string `json:"id"`
		Error   string `json:"error"`
		Outputs []struct {
			Name       string            `json:"name"`
			Datatype   string            `json:"datatype"`
			Shape      []int64           `json:"shape"`
			Parameters map[string]any    `json:"parameters"`
			Data       []json.RawMessage `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(body[:jsonLen], &r); err != nil {
		t.Fatalf("response is not JSON: %q", body[:jsonLen])
	}
	o := outcome{kind: kindOfHTTP(resp.StatusCode), msg: r.Error}
	if o.kind != "ok" {
		return o
	}
	if r.ID != c.id {
		t.Errorf("REST: id %q, want %q", r.ID, c.id)
	}
	rest := body[jsonLen:]
	for _, out := range r.Outputs {
		ten := oip.Tensor{Name: out.Name, Datatype: out.Datatype, Shape: out.Shape}
		if size, ok := out.Parameters["binary_data_size"].(float64); ok {
			n := int(size)
			d, err := (*oip.Buffers)(nil).DecodeRaw(out.Name, out.Datatype, out.Shape, rest[:n], oip.DefaultLimits)
			if err != nil {
				t.Fatal(err)
			}
			ten.Data, rest = d.Data, rest[n:]
		} else if out.Datatype == oip.BYTES {
			var s []string
			for _, d := range out.Data {
				var v string
				if err := json.Unmarshal(d, &v); err != nil {
					t.Fatal(err)
				}
				s = append(s, v)
			}
			ten.Data = s
		} else {
			ten.Data = float32s(t, out.Data)
		}
		o.outputs = append(o.outputs, ten)
	}
	if len(rest) != 0 {
		t.Errorf("REST: %d bytes of binary data left over", len(rest))
	}
	return o
}

func grpcInfer(t *testing.T, c pb.GRPCInferenceServiceClient, cs *confCase, raw bool) outcome {
	t.Helper()
	req := &pb.ModelInferRequest{ModelName: cs.model, ModelVersion: cs.version, Id: cs.id}
	for _, in := range cs.inputs {
		pin := &pb.ModelInferRequest_InferInputTensor{Name: in.Name, Datatype: in.Datatype, Shape: in.Shape}
		if raw {
			req.RawInputContents = append(req.RawInputContents, oip.AppendBinary(nil, &in))
		} else {
			switch v := in.Data.(type) {
			case []float32:
				pin.Contents = &pb.InferTensorContents{Fp32Contents: v}
			case []float64:
				pin.Contents = &pb.InferTensorContents{Fp64Contents: v}
			default:
				t.Fatalf("no contents for %T", v)
			}
		}
		req.Inputs = append(req.Inputs, pin)
	}
	for _, o := range cs.outputs {
		ro := &pb.ModelInferRequest_InferRequestedOutputTensor{Name: o.Name}
		if o.Classification > 0 {
			ro.Parameters = map[string]*pb.InferParameter{"classification": {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: int64(o.Classification)}}}
		}
		req.Outputs = append(req.Outputs, ro)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := c.ModelInfer(ctx, req)
	st := status.Convert(err)
	o := outcome{kind: kindOfGRPC(st.Code()), msg: st.Message()}
	if err != nil {
		return o
	}
	if resp.GetId() != cs.id || resp.GetModelName() != modelName || resp.GetModelVersion() != "1" {
		t.Errorf("gRPC: response id %q model %q version %q", resp.GetId(), resp.GetModelName(), resp.GetModelVersion())
	}
	if raw != (len(resp.GetRawOutputContents()) > 0) {
		t.Errorf("gRPC: raw inputs %v but %d raw outputs", raw, len(resp.GetRawOutputContents()))
	}
	for i, out := range resp.GetOutputs() {
		ten := oip.Tensor{Name: out.GetName(), Datatype: out.GetDatatype(), Shape: out.GetShape()}
		switch {
		case raw:
			d, err := (*oip.Buffers)(nil).DecodeRaw(out.GetName(), out.GetDatatype(), out.GetShape(), resp.GetRawOutputContents()[i], oip.DefaultLimits)
			if err != nil {
				t.Fatal(err)
			}
			ten.Data = d.Data
		case out.GetDatatype() == oip.BYTES:
			var s []string
			for _, b := range out.GetContents().GetBytesContents() {
				s = append(s, string(b))
			}
			ten.Data = s
		default:
			ten.Data = out.GetContents().GetFp32Contents()
		}
		o.outputs = append(o.outputs, ten)
	}
	return o
}

// On shutdown the gRPC endpoint lets an in-flight call finish (here one waiting in the batching
// queue for up to a second) and refuses new ones; run returns cleanly.
func TestIntegrationGRPCGracefulShutdown(t *testing.T) {
	in := start(t, "--grpc-listen", "127.0.0.1:0", "--batch-max-size", "8", "--batch-max-delay", "1s")
	conn, err := grpc.NewClient(in.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	gc := pb.NewGRPCInferenceServiceClient(conn)
	x := samples(t)["nodule-1"]
	scan := scanTensor("scan", x)
	req := &pb.ModelInferRequest{ModelName: modelName, Id: "drain",
		Inputs:           []*pb.ModelInferRequest_InferInputTensor{{Name: "scan", Datatype: oip.FP32, Shape: scan.Shape}},
		RawInputContents: [][]byte{oip.AppendBinary(nil, &scan)}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := gc.ModelInfer(ctx, req); err != nil { // warm: the connection is up
		t.Fatal(err)
	}
	type result struct {
		r   *pb.ModelInferResponse
		err error
	}
	done := make(chan result, 1)
	go func() { r, err := gc.ModelInfer(ctx, req); done <- result{r, err} }()
	time.Sleep(300 * time.Millisecond) // the call waits in the batching queue
	in.cancel()
	res := <-done
	if res.err != nil || res.r.GetId() != "drain" || len(res.r.GetRawOutputContents()) != 2 {
		t.Fatalf("in-flight call: %v %v", res.r, res.err)
	}
	select {
	case err := <-in.done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		in.done <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after draining")
	}
	short, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	if _, err := gc.ModelInfer(short, req); status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("call after shutdown: %v, want UNAVAILABLE", err)
	}
}
