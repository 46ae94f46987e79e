package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/inference-server/modelrepo"
	"github.com/countersign/countersign/inference-server/oip"
)

// fakeSession doubles each input element into "double" and sums each row into "sum"; it records
// the batch sizes it saw and can block until released.
type fakeSession struct {
	mu      sync.Mutex
	batches []int64
	sums    []float32     // sum of every input element, per run, read after the gate
	gate    chan struct{} // if not nil, Run waits for a value
	fail    error
}

func (f *fakeSession) Run(_ context.Context, in []oip.Tensor) ([]oip.Tensor, error) {
	if f.gate != nil {
		<-f.gate
	}
	if f.fail != nil {
		return nil, f.fail
	}
	x := in[0].Data.([]float32)
	rows := in[0].Shape[0]
	var all float32
	for _, v := range x {
		all += v
	}
	f.mu.Lock()
	f.batches = append(f.batches, rows)
	f.sums = append(f.sums, all)
	f.mu.Unlock()
	per := len(x) / int(rows)
	double := make([]float32, len(x))
	sum := make([]float32, rows)
	for i, v := range x {
		double[i] = 2 * v
		sum[i/per] += v
	}
	return []oip.Tensor{
		{Datatype: oip.FP32, Shape: append([]int64(nil), in[0].Shape...), Data: double},
		{Datatype: oip.FP32, Shape: []int64{rows, 1}, Data: sum},
	}, nil
}

func fakeConfig() modelrepo.Config {
	return modelrepo.Config{
		Name:         "fake",
		Version:      "1",
		Platform:     "fake",
		Model:        "model.onnx",
		SHA256:       strings.Repeat("ab", 32),
		MaxBatchSize: 8,
		Inputs:       []modelrepo.TensorSpec{{Name: "x", Datatype: "FP32", Shape: []int64{-1, 3}}},
		Outputs: []modelrepo.TensorSpec{
			{Name: "double", Datatype: "FP32", Shape: []int64{-1, 3}, Labels: []string{"a", "b", "c"}},
			{Name: "sum", Datatype: "FP32", Shape: []int64{-1, 1}},
		},
	}
}

func newTestServer(t *testing.T, sess Session, batch BatchConfig) (*Server, *prometheus.Registry, *httptest.Server) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := New(Options{
		Models:       []Model{{Config: fakeConfig(), Session: sess}},
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		Registry:     reg,
		MaxBodyBytes: 4096,
		Batch:        batch,
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(func() { ts.Close(); s.Close() })
	return s, reg, ts
}

func do(t *testing.T, method, url, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(b) > 0 && method != http.MethodHead {
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s %s: body is not JSON: %q", method, url, b)
		}
	}
	if ct := resp.Header.Get("Content-Type"); method != http.MethodHead && ct != "application/json" && !strings.HasPrefix(url, "/metrics") {
		t.Errorf("%s %s: Content-Type %q", method, url, ct)
	}
	return resp.StatusCode, m
}

func TestEndpoints(t *testing.T) {
	_, _, ts := newTestServer(t, &fakeSession{}, BatchConfig{})
	cases := []struct {
		method, path string
		status       int
		check        func(m map[string]any) bool
	}{
		{"GET", "/v2/health/live", 200, func(m map[string]any) bool { return m["live"] == true }},
		{"GET", "/v2/health/ready", 200, func(m map[string]any) bool { return m["ready"] == true }},
		{"GET", "/v2", 200, func(m map[string]any) bool { return m["name"] == "countersign-inference-server" }},
		{"GET", "/v2/models/fake", 200, func(m map[string]any) bool {
			return m["name"] == "fake" && m["sha256"] == strings.Repeat("ab", 32) && m["platform"] == "fake"
		}},
		{"GET", "/v2/models/fake/versions/1", 200, func(m map[string]any) bool { return m["name"] == "fake" }},
		{"GET", "/v2/models/fake/versions/2", 404, func(m map[string]any) bool { return m["error"] != nil }},
		{"GET", "/v2/models/nope", 404, func(m map[string]any) bool { return strings.Contains(m["error"].(string), "nope") }},
		{"GET", "/v2/models/fake/ready", 200, func(m map[string]any) bool { return m["ready"] == true }},
		{"GET", "/v2/models/fake/versions/1/ready", 200, func(m map[string]any) bool { return m["ready"] == true }},
		{"GET", "/v2/models/nope/ready", 404, func(m map[string]any) bool { return m["error"] != nil }},
		{"POST", "/v2/health/live", 405, func(m map[string]any) bool { return m["error"] != nil }},
		{"GET", "/v2/models/fake/infer", 405, func(m map[string]any) bool { return m["error"] != nil }},
		{"GET", "/v3/anything", 404, func(m map[string]any) bool { return m["error"] != nil }},
	}
	for _, c := range cases {
		status, m := do(t, c.method, ts.URL+c.path, "")
		if status != c.status || !c.check(m) {
			t.Errorf("%s %s: %d %v, want %d", c.method, c.path, status, m, c.status)
		}
	}
}

func TestInfer(t *testing.T) {
	_, reg, ts := newTestServer(t, &fakeSession{}, BatchConfig{})
	body := `{"id":"r1","inputs":[{"name":"x","datatype":"FP32","shape":[2,3],"data":[[1,2,3],[4,5,6]]}]}`
	status, m := do(t, "POST", ts.URL+"/v2/models/fake/infer", body)
	if status != 200 {
		t.Fatalf("status %d: %v", status, m)
	}
	want := `{"id":"r1","model_name":"fake","model_version":"1","outputs":[{"data":[2,4,6,8,10,12],"datatype":"FP32","name":"double","shape":[2,3]},{"data":[6,15],"datatype":"FP32","name":"sum","shape":[2,1]}]}`
	if got, _ := json.Marshal(m); string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	// Requested outputs and classification (top-2 per row, labels from the config).
	body = `{"inputs":[{"name":"x","datatype":"FP32","shape":[2,3],"data":[1,3,2,9,8,7]}],
		"outputs":[{"name":"double","parameters":{"classification":2}}]}`
	status, m = do(t, "POST", ts.URL+"/v2/models/fake/versions/1/infer", body)
	if status != 200 {
		t.Fatalf("status %d: %v", status, m)
	}
	want = `{"model_name":"fake","model_version":"1","outputs":[{"data":["6.000000:1:b","4.000000:2:c","18.000000:0:a","16.000000:1:b"],"datatype":"BYTES","name":"double","shape":[2,2]}]}`
	if got, _ := json.Marshal(m); string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if v := counter(t, reg, "countersign_inference_requests_total", "fake"); v != 2 {
		t.Errorf("requests_total = %v, want 2", v)
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name, model string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "model" && l.GetValue() == model {
						return m.GetCounter().GetValue()
					}
				}
			}
		}
	}
	t.Fatalf("no metric %s{model=%q}", name, model)
	return 0
}

func counterOrZero(reg *prometheus.Registry, name, model string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "model" && l.GetValue() == model {
						return m.GetCounter().GetValue()
					}
				}
			}
		}
	}
	return 0
}

func failures(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, _ := reg.Gather()
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "countersign_inference_failures_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					total += m.GetCounter().GetValue()
				}
			}
		}
	}
	return total
}

func TestInferErrors(t *testing.T) {
	_, reg, ts := newTestServer(t, &fakeSession{}, BatchConfig{})
	in := func(name, dt, shape, data string) string {
		return fmt.Sprintf(`{"inputs":[{"name":%q,"datatype":%q,"shape":%s,"data":%s}]}`, name, dt, shape, data)
	}
	cases := []struct {
		name, path, body string
		status           int
		reason, contains string
	}{
		{"unknown model", "/v2/models/nope/infer", in("x", "FP32", "[1,3]", "[1,2,3]"), 404, ReasonUnknown, "not found"},
		{"unknown version", "/v2/models/fake/versions/9/infer", in("x", "FP32", "[1,3]", "[1,2,3]"), 404, ReasonUnknown, "version"},
		{"not JSON", "", `{"inputs":`, 400, ReasonDecode, "invalid JSON"},
		{"empty", "", ``, 400, ReasonDecode, "invalid JSON"},
		{"no inputs", "", `{"inputs":[]}`, 400, ReasonDecode, "no inputs"},
		{"wrong datatype", "", in("x", "INT32", "[1,3]", "[1,2,3]"), 400, ReasonInvalid, "datatype INT32"},
		{"unknown datatype", "", in("x", "FP8", "[1,3]", "[1,2,3]"), 400, ReasonDecode, "unknown datatype"},
		{"bad shape", "", in("x", "FP32", "[1,4]", "[1,2,3,4]"), 400, ReasonInvalid, "shape"},
		{"bad rank", "", in("x", "FP32", "[3]", "[1,2,3]"), 400, ReasonInvalid, "dimensions"},
		{"count mismatch", "", in("x", "FP32", "[1,3]", "[1,2]"), 400, ReasonDecode, "needs 3 elements, data has 2"},
		{"too many elements", "", in("x", "FP32", "[1,3]", "[1,2,3,4]"), 400, ReasonDecode, "more elements"},
		{"unknown input", "", in("y", "FP32", "[1,3]", "[1,2,3]"), 400, ReasonInvalid, "no input \"y\""},
		{"NaN", "", in("x", "FP32", "[1,3]", "[1,NaN,3]"), 400, ReasonInvalid, "NaN"},
		{"Infinity", "", in("x", "FP32", "[1,3]", "[1,-Infinity,3]"), 400, ReasonInvalid, "NaN or infinite"},
		{"overflow", "", in("x", "FP32", "[1,3]", "[1,1e39,3]"), 400, ReasonDecode, "out of range"},
		{"string data", "", in("x", "FP32", "[1,3]", `["a","b","c"]`), 400, ReasonDecode, "number"},
		{"batch too big", "", in("x", "FP32", "[9,3]", "["+strings.TrimSuffix(strings.Repeat("1,", 27), ",")+"]"), 400, ReasonInvalid, "max_batch_size"},
		{"zero batch", "", in("x", "FP32", "[0,3]", "[]"), 400, ReasonInvalid, "at least 1"},
		{"unknown output", "", `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]}],"outputs":[{"name":"z"}]}`, 400, ReasonInvalid, "no output \"z\""},
		{"bad classification", "", `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]}],"outputs":[{"name":"sum","parameters":{"classification":0.5}}]}`, 400, ReasonDecode, "classification"},
		{"binary data not a boolean", "", `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]}],"outputs":[{"name":"sum","parameters":{"binary_data":"yes"}}]}`, 400, ReasonDecode, "must be a boolean"},
		{"binary size without the header", "", `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"parameters":{"binary_data_size":12}}]}`, 400, ReasonDecode, "Inference-Header-Content-Length"},
		{"duplicate input", "", `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]},{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]}`, 400, ReasonInvalid, "twice"},
		{"too large", "", in("x", "FP32", "[1,3]", "[1,2,3"+strings.Repeat(" ", 5000)+"]"), 413, ReasonTooLarge, "larger than 4096"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := c.path
			if path == "" {
				path = "/v2/models/fake/infer"
			}
			before := failures(t, reg, c.reason)
			status, m := do(t, "POST", ts.URL+path, c.body)
			msg, _ := m["error"].(string)
			if status != c.status || !strings.Contains(msg, c.contains) || len(m) != 1 {
				t.Errorf("got %d %v, want %d with error containing %q", status, m, c.status, c.contains)
			}
			if after := failures(t, reg, c.reason); after != before+1 {
				t.Errorf("failures{reason=%q} went %v -> %v", c.reason, before, after)
			}
		})
	}
}

// A body larger than the limit without Content-Length (chunked) is cut off too.
func TestChunkedBodyLimit(t *testing.T) {
	_, _, ts := newTestServer(t, &fakeSession{}, BatchConfig{})
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write([]byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3` + strings.Repeat(" ", 8000) + `]}]}`))
		pw.Close()
	}()
	resp, err := http.Post(ts.URL+"/v2/models/fake/infer", "application/json", pr)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413", resp.StatusCode)
	}
}

func TestSessionErrorIs500(t *testing.T) {
	_, reg, ts := newTestServer(t, &fakeSession{fail: errors.New("boom")}, BatchConfig{})
	status, m := do(t, "POST", ts.URL+"/v2/models/fake/infer", `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]}`)
	if status != 500 || !strings.Contains(m["error"].(string), "boom") {
		t.Fatalf("got %d %v", status, m)
	}
	if failures(t, reg, ReasonInternal) != 1 {
		t.Error("internal failure not counted")
	}
}

func TestNotReadyWhileDraining(t *testing.T) {
	s, _, ts := newTestServer(t, &fakeSession{}, BatchConfig{})
	s.SetReady(false)
	if status, _ := do(t, "GET", ts.URL+"/v2/health/ready", ""); status != 503 {
		t.Errorf("ready: %d, want 503", status)
	}
	if status, _ := do(t, "GET", ts.URL+"/v2/health/live", ""); status != 200 {
		t.Errorf("live: %d, want 200", status)
	}
	if status, _ := do(t, "POST", ts.URL+"/v2/models/fake/infer", `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]}`); status != 503 {
		t.Errorf("infer: %d, want 503", status)
	}
}

// Concurrent requests are merged into batches and each gets its own rows back.
func TestBatchingMergesAndSplits(t *testing.T) {
	sess := &fakeSession{gate: make(chan struct{})}
	_, reg, ts := newTestServer(t, sess, BatchConfig{MaxSize: 8, MaxDelay: 50 * time.Millisecond, QueueSize: 64, Workers: 1})
	const n = 12
	var wg sync.WaitGroup
	var bad atomic.Int32
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rows := 1 + i%2
			data := make([]string, 0, rows*3)
			for r := range rows {
				for c := range 3 {
					data = append(data, fmt.Sprint(i*100+r*10+c))
				}
			}
			body := fmt.Sprintf(`{"id":"%d","inputs":[{"name":"x","datatype":"FP32","shape":[%d,3],"data":[%s]}],"outputs":[{"name":"sum"}]}`, i, rows, strings.Join(data, ","))
			resp, err := http.Post(ts.URL+"/v2/models/fake/infer", "application/json", strings.NewReader(body))
			if err != nil {
				bad.Add(1)
				return
			}
			defer resp.Body.Close()
			var out struct {
				ID      string
				Outputs []struct {
					Shape []int64
					Data  []float64
				}
			}
			if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
				bad.Add(1)
				return
			}
			for r := range rows {
				want := float64(3*(i*100+r*10) + 3)
				if out.ID != fmt.Sprint(i) || out.Outputs[0].Shape[0] != int64(rows) || out.Outputs[0].Data[r] != want {
					t.Errorf("request %d row %d: got %+v, want sum %v", i, r, out, want)
				}
			}
		}()
	}
	// Let every request reach the server and the queue (the first run blocks in the session),
	// then release the session.
	deadline := time.Now().Add(20 * time.Second)
	for counterOrZero(reg, "countersign_inference_requests_total", "fake") < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	go func() {
		for range n {
			sess.gate <- struct{}{}
		}
	}()
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d requests failed", bad.Load())
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	total, maxRows := int64(0), int64(0)
	for _, b := range sess.batches {
		total += b
		maxRows = max(maxRows, b)
	}
	if total != 18 || maxRows > 8 || len(sess.batches) >= n {
		t.Errorf("batches %v: want 18 rows in fewer than %d runs of at most 8", sess.batches, n)
	}
}

// A batched request whose client goes away while its run is under way must not hand its decoded
// tensor memory back for reuse: the run still reads it.
func TestCanceledBatchedRequestKeepsItsInputs(t *testing.T) {
	sess := &fakeSession{gate: make(chan struct{})}
	_, reg, ts := newTestServer(t, sess, BatchConfig{MaxSize: 2, MaxDelay: time.Millisecond, QueueSize: 4, Workers: 1})
	url := ts.URL + "/v2/models/fake/infer"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]}`))
	errc := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("timed out waiting for " + what)
			}
		}
	}
	waitFor("the first request", func() bool { return counterOrZero(reg, "countersign_inference_requests_total", "fake") == 1 })
	time.Sleep(50 * time.Millisecond) // the worker takes it and blocks in Run
	cancel()
	<-errc
	waitFor("the canceled request to be answered", func() bool { return failures(t, reg, ReasonCanceled) == 1 })
	// A second request decodes while the first run still holds its inputs.
	done := make(chan int, 1)
	go func() {
		resp, err := http.Post(url, "application/json", strings.NewReader(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[700,800,900]}]}`))
		if err != nil {
			done <- -1
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	waitFor("the second request", func() bool { return counterOrZero(reg, "countersign_inference_requests_total", "fake") == 2 })
	time.Sleep(50 * time.Millisecond)
	sess.gate <- struct{}{}
	sess.gate <- struct{}{}
	if s := <-done; s != 200 {
		t.Fatalf("second request: status %d", s)
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if len(sess.sums) != 2 || sess.sums[0] != 6 || sess.sums[1] != 2400 {
		t.Fatalf("runs saw input sums %v, want [6 2400]", sess.sums)
	}
}

// A full queue answers 503 at once instead of growing.
func TestQueueFull(t *testing.T) {
	sess := &fakeSession{gate: make(chan struct{})}
	_, reg, ts := newTestServer(t, sess, BatchConfig{MaxSize: 2, MaxDelay: time.Millisecond, QueueSize: 2, Workers: 1})
	body := `{"inputs":[{"name":"x","datatype":"FP32","shape":[2,3],"data":[1,2,3,4,5,6]}]}`
	results := make(chan int, 10)
	for range 10 {
		go func() {
			resp, err := http.Post(ts.URL+"/v2/models/fake/infer", "application/json", strings.NewReader(body))
			if err != nil {
				results <- -1
				return
			}
			resp.Body.Close()
			results <- resp.StatusCode
		}()
	}
	// One run blocks in the session, two wait in the queue: the other seven must get 503 now.
	got503 := 0
	for range 7 {
		select {
		case s := <-results:
			if s == 503 {
				got503++
			} else {
				t.Errorf("status %d while the queue is full", s)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("requests did not fail fast with a full queue")
		}
	}
	for range 3 {
		sess.gate <- struct{}{}
	}
	for range 3 {
		if s := <-results; s != 200 {
			t.Errorf("queued request: status %d", s)
		}
	}
	if got503 != 7 || failures(t, reg, ReasonQueueFull) != 7 {
		t.Errorf("503s %d, queue_full failures %v; want 7", got503, failures(t, reg, ReasonQueueFull))
	}
}

func TestMetricsEndpoint(t *testing.T) {
	_, _, ts := newTestServer(t, &fakeSession{}, BatchConfig{})
	do(t, "POST", ts.URL+"/v2/models/fake/infer", `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]}`)
	do(t, "POST", ts.URL+"/v2/models/other/infer", `{}`)
	resp, err := http.Get(ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`countersign_inference_requests_total{model="fake"} 1`,
		`countersign_inference_requests_total{model="_unknown"} 1`,
		`countersign_inference_failures_total{model="_unknown",reason="unknown_model"} 1`,
		`countersign_inference_compute_seconds_count{model="fake"} 1`,
		`countersign_inference_batch_size_count{model="fake"} 1`,
	} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestModelDigests(t *testing.T) {
	s, _, _ := newTestServer(t, &fakeSession{}, BatchConfig{})
	if d := s.ModelDigests(); len(d) != 1 || d["fake"] != strings.Repeat("ab", 32) {
		t.Fatalf("digests %v", d)
	}
}
