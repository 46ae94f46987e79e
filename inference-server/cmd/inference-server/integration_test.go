package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/countersign/countersign/internal/syncbuf"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/countersign/countersign/inference-server/demomodel"
	"github.com/countersign/countersign/inference-server/internal/testort"
	"github.com/countersign/countersign/inference-server/modelrepo"
)

const modelName = demomodel.Name

// instance is a running inference server (the real run function, real ONNX Runtime, loopback).
type instance struct {
	url    string
	grpc   string // gRPC address, with --grpc-listen
	cancel context.CancelFunc
	done   chan error
	stderr *syncbuf.Buffer
}

func start(t testing.TB, args ...string) *instance {
	t.Helper()
	lib := testort.Lib(t)
	base := []string{"--listen", "127.0.0.1:0", "--model-repository", testort.ModelRepository(), "--onnxruntime-lib", lib, "--log-level", "warn"}
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{cancel: cancel, done: make(chan error, 1), stderr: &syncbuf.Buffer{}}
	ready := make(chan listening, 1)
	go func() {
		in.done <- runWithReady(ctx, append(base, args...), io.Discard, in.stderr, func(string) string { return "" }, ready)
	}()
	select {
	case at := <-ready:
		in.url, in.grpc = "http://"+at.HTTP, at.GRPC
	case err := <-in.done:
		cancel()
		t.Fatalf("server did not start: %v\n%s", err, in.stderr)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("server did not start in 30s")
	}
	t.Cleanup(func() { in.stop(t) })
	return in
}

func (in *instance) stop(t testing.TB) {
	in.cancel()
	select {
	case err := <-in.done:
		if err != nil {
			t.Errorf("run returned %v", err)
		}
		in.done <- nil // later stop calls return at once
	case <-time.After(30 * time.Second):
		t.Error("server did not stop in 30s")
	}
}

// sample loads the committed sample scans.
func samples(t testing.TB) map[string][]float32 {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(testort.ModelRepository(), modelName, "samples", "*.png"))
	if len(paths) == 0 {
		t.Fatal("no sample scans")
	}
	out := map[string][]float32{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		x, err := demomodel.DecodePNG(b)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(filepath.Base(p), ".png")] = x
	}
	return out
}

func formatFloats(x []float32) string {
	b := make([]byte, 0, len(x)*12)
	for i, v := range x {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendFloat(b, float64(v), 'g', -1, 32)
	}
	return string(b)
}

// inferBody builds a request for rows scans stacked along the batch dimension.
func inferBody(id string, scans ...[]float32) string {
	var all []float32
	for _, s := range scans {
		all = append(all, s...)
	}
	return fmt.Sprintf(`{"id":%q,"inputs":[{"name":"scan","datatype":"FP32","shape":[%d,1,64,64],"data":[%s]}]}`, id, len(scans), formatFloats(all))
}

type inferResponse struct {
	ModelName    string `json:"model_name"`
	ModelVersion string `json:"model_version"`
	ID           string `json:"id"`
	Outputs      []struct {
		Name     string            `json:"name"`
		Datatype string            `json:"datatype"`
		Shape    []int64           `json:"shape"`
		Data     []json.RawMessage `json:"data"`
	} `json:"outputs"`
	Error string `json:"error"`
}

func post(t testing.TB, c *http.Client, url, body string) (int, inferResponse) {
	t.Helper()
	resp, err := c.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r inferResponse
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("response is not JSON: %q", raw)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	return resp.StatusCode, r
}

// float32s parses an output's data exactly (the server writes the shortest representation
// that round-trips to float32).
func float32s(t testing.TB, data []json.RawMessage) []float32 {
	t.Helper()
	out := make([]float32, len(data))
	for i, d := range data {
		f, err := strconv.ParseFloat(string(d), 32)
		if err != nil {
			t.Fatalf("data[%d] = %s: %v", i, d, err)
		}
		out[i] = float32(f)
	}
	return out
}

// directRun runs the model with onnxruntime_go directly (not through ortsession or the server).
type directRun struct {
	s *ort.DynamicAdvancedSession
}

func newDirect(t testing.TB) *directRun {
	t.Helper()
	testort.Lib(t)
	m, err := modelrepo.LoadModel(filepath.Join(testort.ModelRepository(), modelName))
	if err != nil {
		t.Fatal(err)
	}
	opts, err := ort.NewSessionOptions()
	if err != nil {
		t.Fatal(err)
	}
	defer opts.Destroy()
	if err := opts.SetIntraOpNumThreads(1); err != nil {
		t.Fatal(err)
	}
	s, err := ort.NewDynamicAdvancedSessionWithONNXData(m.Bytes, []string{"scan"}, []string{"probabilities", "logits"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Destroy() })
	return &directRun{s: s}
}

// run returns probabilities and logits for one or more scans.
func (d *directRun) run(t testing.TB, scans ...[]float32) ([]float32, []float32) {
	t.Helper()
	var all []float32
	for _, s := range scans {
		all = append(all, s...)
	}
	in, err := ort.NewTensor(ort.NewShape(int64(len(scans)), 1, 64, 64), all)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Destroy()
	out := []ort.Value{nil, nil}
	if err := d.s.Run([]ort.Value{in}, out); err != nil {
		t.Fatal(err)
	}
	defer out[0].Destroy()
	defer out[1].Destroy()
	return slices.Clone(out[0].(*ort.Tensor[float32]).GetData()), slices.Clone(out[1].(*ort.Tensor[float32]).GetData())
}

func getJSON(t testing.TB, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, m
}

func TestIntegrationProtocol(t *testing.T) {
	in := start(t)
	digest := modelrepo.Digest(mustRead(t, filepath.Join(testort.ModelRepository(), modelName, "model.onnx")))
	for _, c := range []struct {
		path   string
		status int
		check  func(map[string]any) bool
	}{
		{"/v2/health/live", 200, func(m map[string]any) bool { return m["live"] == true }},
		{"/v2/health/ready", 200, func(m map[string]any) bool { return m["ready"] == true }},
		{"/v2", 200, func(m map[string]any) bool {
			return m["name"] == "countersign-inference-server" && fmt.Sprint(m["extensions"]) == "[classification model_sha256]"
		}},
		{"/v2/models/" + modelName, 200, func(m map[string]any) bool {
			b, _ := json.Marshal(m["inputs"])
			o, _ := json.Marshal(m["outputs"])
			return m["name"] == modelName && m["sha256"] == digest && fmt.Sprint(m["versions"]) == "[1]" &&
				m["platform"] == "onnxruntime_onnx" &&
				string(b) == `[{"datatype":"FP32","name":"scan","shape":[-1,1,64,64]}]` &&
				string(o) == `[{"datatype":"FP32","name":"probabilities","shape":[-1,3]},{"datatype":"FP32","name":"logits","shape":[-1,3]}]`
		}},
		{"/v2/models/" + modelName + "/versions/1", 200, func(m map[string]any) bool { return m["sha256"] == digest }},
		{"/v2/models/" + modelName + "/versions/7", 404, func(m map[string]any) bool { return m["error"] != nil }},
		{"/v2/models/" + modelName + "/ready", 200, func(m map[string]any) bool { return m["ready"] == true && m["name"] == modelName }},
		{"/v2/models/" + modelName + "/versions/1/ready", 200, func(m map[string]any) bool { return m["ready"] == true }},
		{"/v2/models/unknown", 404, func(m map[string]any) bool { return strings.Contains(fmt.Sprint(m["error"]), "unknown") }},
		{"/v2/models/unknown/ready", 404, func(m map[string]any) bool { return m["error"] != nil }},
	} {
		status, m := getJSON(t, in.url+c.path)
		if status != c.status || !c.check(m) {
			t.Errorf("GET %s: %d %v, want %d", c.path, status, m, c.status)
		}
	}
	// /metrics is Prometheus text.
	resp, err := http.Get(in.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(b, []byte("# TYPE countersign_inference_requests_total counter")) || !bytes.Contains(b, []byte("go_goroutines")) {
		t.Errorf("/metrics: %.300s", b)
	}
}

func mustRead(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Outputs through the server equal a direct session.Run on the same input, bit for bit.
func TestIntegrationOutputsMatchDirectRun(t *testing.T) {
	in := start(t)
	direct := newDirect(t)
	scans := samples(t)
	for name, x := range scans {
		probs, logits := direct.run(t, x)
		status, r := post(t, http.DefaultClient, in.url+"/v2/models/"+modelName+"/infer", inferBody(name, x))
		if status != 200 {
			t.Fatalf("%s: %d %s", name, status, r.Error)
		}
		if r.ID != name || r.ModelName != modelName || r.ModelVersion != "1" || len(r.Outputs) != 2 {
			t.Fatalf("%s: response %+v", name, r)
		}
		if o := r.Outputs[0]; o.Name != "probabilities" || o.Datatype != "FP32" || !slices.Equal(o.Shape, []int64{1, 3}) || !slices.Equal(float32s(t, o.Data), probs) {
			t.Errorf("%s: probabilities %+v, direct %v", name, o, probs)
		}
		if o := r.Outputs[1]; o.Name != "logits" || !slices.Equal(float32s(t, o.Data), logits) {
			t.Errorf("%s: logits %+v, direct %v", name, o, logits)
		}
	}
	// A batch of all samples in one request equals the per-sample direct runs.
	var names []string
	for n := range scans {
		names = append(names, n)
	}
	slices.Sort(names)
	var batch [][]float32
	var want []float32
	for _, n := range names {
		batch = append(batch, scans[n])
		p, _ := direct.run(t, scans[n])
		want = append(want, p...)
	}
	status, r := post(t, http.DefaultClient, in.url+"/v2/models/"+modelName+"/versions/1/infer", inferBody("batch", batch...))
	if status != 200 || !slices.Equal(r.Outputs[0].Shape, []int64{int64(len(names)), 3}) {
		t.Fatalf("batch: %d %+v", status, r)
	}
	assertClose(t, "batch request", float32s(t, r.Outputs[0].Data), want)

	// Requested output with classification: top-2 "score:index:label", as KServe/Triton define it.
	x := scans["opacity-1"]
	probs, _ := direct.run(t, x)
	body := strings.TrimSuffix(inferBody("c", x), "}") + `,"outputs":[{"name":"probabilities","parameters":{"classification":2}}]}`
	status, r = post(t, http.DefaultClient, in.url+"/v2/models/"+modelName+"/infer", body)
	if status != 200 || len(r.Outputs) != 1 || r.Outputs[0].Datatype != "BYTES" || !slices.Equal(r.Outputs[0].Shape, []int64{1, 2}) {
		t.Fatalf("classification: %d %+v", status, r)
	}
	var top []string
	for _, d := range r.Outputs[0].Data {
		var s string
		_ = json.Unmarshal(d, &s)
		top = append(top, s)
	}
	best := 0
	for i := range probs {
		if probs[i] > probs[best] {
			best = i
		}
	}
	wantTop := strconv.FormatFloat(float64(probs[best]), 'f', 6, 64) + ":" + strconv.Itoa(best) + ":" + demomodel.Classes[best]
	if top[0] != wantTop || !strings.HasSuffix(top[0], ":opacity") {
		t.Errorf("classification %v, want first %q", top, wantTop)
	}
}

// assertClose compares batched results with per-item ones. ONNX Runtime's kernels compute each
// item of a batch independently here, so the results are expected to be identical; a tolerance of
// a few float32 ulps is allowed in case a kernel blocks differently by batch size.
func assertClose(t testing.TB, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		d := got[i] - want[i]
		if d < 0 {
			d = -d
		}
		if d > 1e-6 {
			t.Errorf("%s: value %d = %v, want %v", what, i, got[i], want[i])
		}
	}
}

func TestIntegrationBadInputs(t *testing.T) {
	in := start(t, "--max-body-bytes", "100000")
	x := samples(t)["normal-1"]
	good := inferBody("g", x)
	// A body whose first value is a marker we can replace (k/255 is never 0.25).
	y := slices.Clone(x)
	y[0] = 0.25
	marked := inferBody("m", y)
	first := func(v string) string { return strings.Replace(marked, `"data":[0.25,`, `"data":[`+v+`,`, 1) }
	url := in.url + "/v2/models/" + modelName + "/infer"
	cases := []struct {
		name     string
		url      string
		body     string
		status   int
		contains string
	}{
		{"unknown model", in.url + "/v2/models/nope/infer", good, 404, "not found"},
		{"unknown version", in.url + "/v2/models/" + modelName + "/versions/2/infer", good, 404, "version"},
		{"wrong datatype", url, strings.Replace(good, `"FP32"`, `"FP64"`, 1), 400, "datatype FP64"},
		{"shape mismatch", url, strings.Replace(good, `[1,1,64,64]`, `[1,1,32,128]`, 1), 400, "shape"},
		{"element count", url, strings.Replace(good, `[1,1,64,64]`, `[2,1,64,64]`, 1), 400, "needs 8192 elements, data has 4096"},
		{"unknown tensor", url, strings.Replace(good, `"name":"scan"`, `"name":"image"`, 1), 400, `no input "image"`},
		{"unknown output", url, strings.TrimSuffix(good, "}") + `,"outputs":[{"name":"heatmap"}]}`, 400, `no output "heatmap"`},
		{"NaN", url, first("NaN"), 400, "NaN or infinite values are not allowed"},
		{"Infinity", url, first("-Infinity"), 400, "NaN or infinite values are not allowed"},
		{"overflow", url, first("1e300"), 400, "1e300 is out of range for FP32"},
		{"string element", url, first(`"0.5"`), 400, "expected a number"},
		{"ragged nesting", url, first(`[1]`), 400, "nested data must be flat or follow the shape"},
		{"not JSON", url, good[:len(good)/2], 400, "invalid JSON"},
		{"oversize body", url, good[:len(good)-2] + strings.Repeat(" ", 100000) + "]}", 413, "larger than 100000"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, r := post(t, http.DefaultClient, c.url, c.body)
			if status != c.status || !strings.Contains(r.Error, c.contains) {
				t.Errorf("got %d %q, want %d containing %q", status, r.Error, c.status, c.contains)
			}
		})
	}
	if !strings.Contains(marked, `"data":[0.25,`) {
		t.Fatal("marker not found")
	}
	// The marked body itself is fine, and the server is still healthy after all that.
	if status, r := post(t, http.DefaultClient, url, marked); status != 200 {
		t.Fatalf("marked request: %d %s", status, r.Error)
	}
	if status, _ := post(t, http.DefaultClient, url, good); status != 200 {
		t.Fatalf("good request after bad ones: %d", status)
	}
}

// Slow clients are cut off by ReadHeaderTimeout and ReadTimeout.
func TestIntegrationSlowClients(t *testing.T) {
	in := start(t, "--read-header-timeout", "300ms", "--read-timeout", "600ms")
	addr := strings.TrimPrefix(in.url, "http://")
	closedWithin := func(conn net.Conn, d time.Duration) bool {
		_ = conn.SetReadDeadline(time.Now().Add(d))
		_, err := io.Copy(io.Discard, conn)
		return err == nil // EOF: the server closed the connection
	}
	// Headers that never finish.
	c1, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	fmt.Fprintf(c1, "POST /v2/models/%s/infer HTTP/1.1\r\nHost: x\r\n", modelName)
	startT := time.Now()
	if !closedWithin(c1, 5*time.Second) {
		t.Error("slow headers: connection not closed")
	}
	if el := time.Since(startT); el > 3*time.Second {
		t.Errorf("slow headers: closed after %s", el)
	}
	// A body that trickles: the read deadline ends the request.
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	fmt.Fprintf(c2, "POST /v2/models/%s/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"inputs\":", modelName)
	br := bufio.NewReader(c2)
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("slow body got 200")
		}
	}
	// The server still answers others.
	if status, _ := getJSON(t, in.url+"/v2/health/ready"); status != 200 {
		t.Errorf("ready after slow clients: %d", status)
	}
}

// Many concurrent clients on the shared session get correct answers (run with -race).
func TestIntegrationConcurrentClients(t *testing.T) {
	in := start(t)
	direct := newDirect(t)
	scans := samples(t)
	want := map[string][]float32{}
	for n, x := range scans {
		want[n], _ = direct.run(t, x)
	}
	names := make([]string, 0, len(scans))
	for n := range scans {
		names = append(names, n)
	}
	slices.Sort(names)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: 30 * time.Second}
	var wg sync.WaitGroup
	for g := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				n := names[(g+i)%len(names)]
				status, r := post(t, client, in.url+"/v2/models/"+modelName+"/infer", inferBody(n, scans[n]))
				if status != 200 || r.ID != n || !slices.Equal(float32s(t, r.Outputs[0].Data), want[n]) {
					t.Errorf("client %d request %d (%s): %d %+v", g, i, n, status, r)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// Dynamic batching merges concurrent requests and gives the same results as unbatched runs.
func TestIntegrationBatchingSameResults(t *testing.T) {
	in := start(t, "--batch-max-size", "8", "--batch-max-delay", "20ms")
	direct := newDirect(t)
	scans := samples(t)
	names := make([]string, 0, len(scans))
	for n := range scans {
		names = append(names, n)
	}
	slices.Sort(names)
	want := map[string][]float32{}
	for _, n := range names {
		want[n], _ = direct.run(t, scans[n])
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: 30 * time.Second}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 6 {
				n := names[(g+i)%len(names)]
				status, r := post(t, client, in.url+"/v2/models/"+modelName+"/infer", inferBody(fmt.Sprint(g, "-", i), scans[n]))
				if status != 200 || r.ID != fmt.Sprint(g, "-", i) || !slices.Equal(r.Outputs[0].Shape, []int64{1, 3}) {
					t.Errorf("client %d: %d %+v", g, status, r)
					return
				}
				assertClose(t, n, float32s(t, r.Outputs[0].Data), want[n])
			}
		}()
	}
	wg.Wait()
	// Batching really happened: some run served more than one row.
	resp, err := http.Get(in.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	runs, rows := metricValue(b, "countersign_inference_batch_size_count"), metricValue(b, "countersign_inference_batch_size_sum")
	if rows != 48 || runs >= 48 {
		t.Errorf("batch_size: %v rows in %v runs; want 48 rows in fewer runs", rows, runs)
	}
	t.Logf("48 requests in %v session runs", runs)
}

func metricValue(text []byte, name string) float64 {
	for _, line := range strings.Split(string(text), "\n") {
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			return v
		}
	}
	return -1
}

// Shutdown drains: a request in flight when the context ends still gets its answer.
func TestIntegrationGracefulShutdown(t *testing.T) {
	in := start(t)
	x := samples(t)["nodule-1"]
	body := inferBody("drain", x)
	addr := strings.TrimPrefix(in.url, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v2/models/%s/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", modelName, len(body), body[:100])
	time.Sleep(200 * time.Millisecond) // the handler is now reading the body
	in.cancel()
	time.Sleep(200 * time.Millisecond) // shutdown has begun and waits for us
	if status, _ := getJSONMaybe(in.url + "/v2/health/ready"); status == 200 {
		t.Error("still accepting new connections during shutdown")
	}
	if _, err := io.WriteString(conn, body[100:]); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("in-flight request lost: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"id":"drain"`)) {
		t.Fatalf("in-flight request: %d %s", resp.StatusCode, b)
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
}

func getJSONMaybe(url string) (int, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// A model whose bytes do not match its pinned SHA-256 is refused at start.
func TestIntegrationRefusesTamperedModel(t *testing.T) {
	lib := testort.Lib(t)
	repo := t.TempDir()
	dst := filepath.Join(repo, modelName)
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(testort.ModelRepository(), modelName)
	model := mustRead(t, filepath.Join(src, "model.onnx"))
	model[len(model)-5] ^= 1 // flip a bit in the weights
	if err := os.WriteFile(filepath.Join(dst, "model.onnx"), model, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dst, "config.json"), mustRead(t, filepath.Join(src, "config.json")), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	err := runWithReady(context.Background(), []string{"--listen", "127.0.0.1:0", "--model-repository", repo, "--onnxruntime-lib", lib}, io.Discard, &stderr, func(string) string { return "" }, nil)
	if err == nil || !strings.Contains(err.Error(), "SHA-256") {
		t.Fatalf("run with a tampered model: %v", err)
	}
}
