package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"testing"
)

// binaryInferBody is a request using the binary tensor data extension: the scan as raw
// little-endian FP32 after the JSON header; outputs asked as binary.
func binaryInferBody(id string, scan []float32) ([]byte, int) {
	raw := make([]byte, 0, 4*len(scan))
	for _, v := range scan {
		raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(v))
	}
	hdr := `{"id":"` + id + `","inputs":[{"name":"scan","datatype":"FP32","shape":[1,1,64,64],"parameters":{"binary_data_size":` +
		strconv.Itoa(len(raw)) + `}}],"outputs":[{"name":"probabilities","parameters":{"binary_data":true}},{"name":"logits"}]}`
	return append([]byte(hdr), raw...), len(hdr)
}

// The binary tensor data extension gives the same outputs, bit for bit, as the JSON path and a
// direct session.Run.
func TestIntegrationBinaryExtension(t *testing.T) {
	in := start(t)
	direct := newDirect(t)
	for name, x := range samples(t) {
		probs, logits := direct.run(t, x)
		body, n := binaryInferBody(name, x)
		req, _ := http.NewRequest(http.MethodPost, in.url+"/v2/models/"+modelName+"/infer", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("Inference-Header-Content-Length", strconv.Itoa(n))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", name, resp.StatusCode, out)
		}
		jl, err := strconv.Atoi(resp.Header.Get("Inference-Header-Content-Length"))
		if err != nil || jl > len(out) || resp.Header.Get("Content-Type") != "application/octet-stream" {
			t.Fatalf("%s: binary response headers %v", name, resp.Header)
		}
		var r inferResponse
		if err := json.Unmarshal(out[:jl], &r); err != nil {
			t.Fatalf("%s: JSON part: %v", name, err)
		}
		raw := out[jl:]
		if len(raw) != 4*len(probs) {
			t.Fatalf("%s: %d binary bytes, want %d", name, len(raw), 4*len(probs))
		}
		got := make([]float32, len(probs))
		for i := range got {
			got[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
		if !slices.Equal(got, probs) {
			t.Errorf("%s: binary probabilities %v, direct %v", name, got, probs)
		}
		if len(r.Outputs) != 2 || r.Outputs[0].Data != nil || !slices.Equal(float32s(t, r.Outputs[1].Data), logits) {
			t.Errorf("%s: JSON part %+v", name, r)
		}
	}
	// Binary data without the header is a protocol error.
	body, _ := binaryInferBody("x", make([]float32, 4096))
	resp, err := http.Post(in.url+"/v2/models/"+modelName+"/infer", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !bytes.Contains(msg, []byte("Inference-Header-Content-Length")) {
		t.Fatalf("binary body without the header: %d %s", resp.StatusCode, msg)
	}
}
