package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/inference-server/internal/testort"
	"github.com/countersign/countersign/inference-server/modelrepo"
	"github.com/countersign/countersign/inference-server/oip"
	"github.com/countersign/countersign/inference-server/ortsession"
	"github.com/countersign/countersign/inference-server/server"
)

// latencies collects per-request durations.
type latencies []time.Duration

func (l latencies) pct(p float64) time.Duration {
	s := slices.Clone(l)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

// measure runs fn from conc goroutines, n calls each, and returns every call's latency and the
// wall time.
func measure(conc, n int, fn func() error) (latencies, time.Duration, error) {
	lat := make([]latencies, conc)
	errs := make([]error, conc)
	var wg sync.WaitGroup
	start := time.Now()
	for g := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := make(latencies, 0, n)
			for range n {
				t0 := time.Now()
				if err := fn(); err != nil {
					errs[g] = err
					return
				}
				l = append(l, time.Since(t0))
			}
			lat[g] = l
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	var all latencies
	for g := range conc {
		if errs[g] != nil {
			return nil, 0, errs[g]
		}
		all = append(all, lat[g]...)
	}
	return all, wall, nil
}

// BenchmarkServerVsDirect measures, in one run, the server's per-request overhead (HTTP +
// decode + validate + encode) against a direct session.Run loop on the same input, at
// concurrency 1 and 8, and throughput with dynamic batching off and on. It runs a fixed number
// of requests per row (b.N is not used) and prints a table; see docs/inference-server.md.
func BenchmarkServerVsDirect(b *testing.B) {
	lib := testort.Lib(b)
	const warm, n1, n8 = 300, 3000, 600 // n8 per client
	m, err := modelrepo.LoadModel(filepath.Join(testort.ModelRepository(), modelName))
	if err != nil {
		b.Fatal(err)
	}
	sess, err := ortsession.New(m, ortsession.Options{IntraOpThreads: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer sess.Close()
	x := samples(b)["opacity-1"]
	body := []byte(inferBody("bench", x))
	inputs := []oip.Tensor{{Name: "scan", Datatype: oip.FP32, Shape: []int64{1, 1, 64, 64}, Data: x}}
	direct := func() error { _, err := sess.Run(context.Background(), inputs); return err }

	// In-process handler (no network): isolates decode + validate + run + encode.
	srv, err := server.New(server.Options{
		Models: []server.Model{{Config: m.Config, Session: sess}}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Registry: prometheus.NewRegistry(), MaxBodyBytes: 8 << 20,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	handler := func() error {
		req := httptest.NewRequest(http.MethodPost, "/v2/models/"+modelName+"/infer", bytes.NewReader(body))
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code != 200 {
			return fmt.Errorf("handler: %d %s", rec.Code, rec.Body)
		}
		return nil
	}

	plain := start(b, "--onnxruntime-lib", lib, "--intra-op-threads", "1")
	batched := start(b, "--onnxruntime-lib", lib, "--intra-op-threads", "1", "--batch-max-size", "8", "--batch-max-delay", "500us")
	batched0 := start(b, "--onnxruntime-lib", lib, "--intra-op-threads", "1", "--batch-max-size", "8", "--batch-max-delay", "0s", "--batch-workers", "2")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32, DisableCompression: true}, Timeout: 30 * time.Second}
	binBody, binJSON := binaryInferBody("bench", x)
	// call posts body with the given headers and reads the whole answer (into io.Discard, so
	// concurrent clients do not share a buffer or a lock).
	call := func(url string, body []byte, hdr map[string]string) func() error {
		return func() error {
			req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
			if err != nil {
				return err
			}
			for k, v := range hdr {
				req.Header.Set(k, v)
			}
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			return err
		}
	}
	jsonHdr := map[string]string{"Content-Type": "application/json"}
	httpCall := func(url string) func() error { return call(url, body, jsonHdr) }
	// net/http alone: a handler that reads the same body and sends a response of the same size,
	// to separate the cost of HTTP on loopback from the server's own work.
	reply := bytes.Repeat([]byte("x"), 300)
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(reply)
	}))
	defer echo.Close()
	echoCall := httpCall(echo.URL + "/")
	binaryCall := call(plain.url+"/v2/models/"+modelName+"/infer", binBody, map[string]string{
		"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": strconv.Itoa(binJSON)})
	plainCall := httpCall(plain.url + "/v2/models/" + modelName + "/infer")
	batchedCall := httpCall(batched.url + "/v2/models/" + modelName + "/infer")
	batched0Call := httpCall(batched0.url + "/v2/models/" + modelName + "/infer")

	type row struct {
		name       string
		conc, n    int
		fn         func() error
		lat        latencies
		wall       time.Duration
		throughput float64
	}
	rows := []*row{
		{name: "direct session.Run", conc: 1, n: n1, fn: direct},
		{name: "handler in-process (no HTTP)", conc: 1, n: n1, fn: handler},
		{name: "server HTTP, batching off", conc: 1, n: n1, fn: plainCall},
		{name: "net/http only: read body, 300 B reply", conc: 1, n: n1, fn: echoCall},
		{name: "direct session.Run", conc: 8, n: n8, fn: direct},
		{name: "server HTTP, batching off", conc: 8, n: n8, fn: plainCall},
		{name: "server HTTP, batching on (8, 500µs)", conc: 8, n: n8, fn: batchedCall},
		{name: "server HTTP, batching on (8, 0s, 2 workers)", conc: 8, n: n8, fn: batched0Call},
		{name: "server HTTP, binary tensors", conc: 1, n: n1, fn: binaryCall},
		{name: "server HTTP, binary tensors", conc: 8, n: n8, fn: binaryCall},
	}
	for _, r := range rows {
		if _, _, err := measure(r.conc, warm/r.conc+1, r.fn); err != nil {
			b.Fatal(r.name, err)
		}
		r.lat, r.wall, err = measure(r.conc, r.n, r.fn)
		if err != nil {
			b.Fatal(r.name, err)
		}
		r.throughput = float64(r.conc*r.n) / r.wall.Seconds()
	}
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	w := os.Stdout
	fmt.Fprintf(w, "\ninference-server: %s, one 1×1×64×64 FP32 scan per request (JSON body %d bytes), intra-op threads 1, GOMAXPROCS %d\n",
		modelName, len(body), runtimeProcs())
	fmt.Fprintf(w, "%-44s %5s %8s %9s %9s %10s\n", "path", "conc", "requests", "p50 µs", "p99 µs", "req/s")
	for _, r := range rows {
		fmt.Fprintf(w, "%-44s %5d %8d %9.1f %9.1f %10.0f\n", r.name, r.conc, r.conc*r.n, us(r.lat.pct(0.5)), us(r.lat.pct(0.99)), r.throughput)
	}
	d1, h1, s1, e1, d8, s8, bt8, bz8, b1, b8 := rows[0], rows[1], rows[2], rows[3], rows[4], rows[5], rows[6], rows[7], rows[8], rows[9]
	ov50 := us(s1.lat.pct(0.5)) - us(d1.lat.pct(0.5))
	ov99 := us(s1.lat.pct(0.99)) - us(d1.lat.pct(0.99))
	fmt.Fprintf(w, "overhead at concurrency 1 (server − direct): p50 %.1f µs (target ≤ 100), p99 %.1f µs (target ≤ 250); in-process handler alone p50 %.1f µs\n",
		ov50, ov99, us(h1.lat.pct(0.5))-us(d1.lat.pct(0.5)))
	fmt.Fprintf(w, "of which net/http on loopback with this body (no model, no JSON work): p50 %.1f µs\n", us(e1.lat.pct(0.5)))
	bov50, bov99 := us(b1.lat.pct(0.5))-us(d1.lat.pct(0.5)), us(b1.lat.pct(0.99))-us(d1.lat.pct(0.99))
	fmt.Fprintf(w, "overhead at concurrency 1 with binary tensors (%d-byte body): p50 %.1f µs (target ≤ 100), p99 %.1f µs (target ≤ 250)\n", len(binBody), bov50, bov99)
	fmt.Fprintf(w, "throughput vs direct loop at concurrency 8 with binary tensors: %.2f×\n", b8.throughput/d8.throughput)
	fmt.Fprintf(w, "overhead at concurrency 8 (server − direct): p50 %.1f µs, p99 %.1f µs\n",
		us(s8.lat.pct(0.5))-us(d8.lat.pct(0.5)), us(s8.lat.pct(0.99))-us(d8.lat.pct(0.99)))
	fmt.Fprintf(w, "throughput vs direct loop at concurrency 8 (target ≥ 0.9×): batching off %.2f×, on (500µs) %.2f×, on (0s, 2 workers) %.2f×; batching on/off %.2f× and %.2f×\n\n",
		s8.throughput/d8.throughput, bt8.throughput/d8.throughput, bz8.throughput/d8.throughput, bt8.throughput/s8.throughput, bz8.throughput/s8.throughput)
	b.ReportMetric(ov50, "overhead-p50-µs")
	b.ReportMetric(ov99, "overhead-p99-µs")
	b.ReportMetric(bov50, "binary-overhead-p50-µs")
	b.ReportMetric(s8.throughput/d8.throughput, "tput-ratio-off")
	b.ReportMetric(bt8.throughput/d8.throughput, "tput-ratio-batched")
}
