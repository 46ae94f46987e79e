package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/inference-server/demomodel"
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

// measure runs the clients concurrently, n calls each, and returns every call's latency and the
// wall time.
func measure(clients []func() error, n int) (latencies, time.Duration, error) {
	conc := len(clients)
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
				if err := clients[g](); err != nil {
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

// loadConn is the benchmark's load generator for one client, in the manner of wrk: one
// keep-alive HTTP/1.1 connection over which it writes a prebuilt request (request line, headers
// and body in one write) and reads the whole response (status line, headers, a body of the
// announced Content-Length, discarded). It allocates nothing per request, so that on a 2-core
// machine shared by client and server the figures are the server's, not the client's: Go's
// net/http client spends about as much CPU per request as the server (it copies the body
// through a fresh 32 KB buffer each time). The server is the real one, unchanged.
type loadConn struct {
	req  []byte
	conn net.Conn
	br   *bufio.Reader
}

var statusOK = []byte("HTTP/1.1 200 ")

func (l *loadConn) do() error {
	if _, err := l.conn.Write(l.req); err != nil {
		return err
	}
	status, err := l.br.ReadSlice('\n')
	if err != nil {
		return err
	}
	ok := bytes.HasPrefix(status, statusOK)
	status = bytes.Clone(status)
	n := -1
	for {
		h, err := l.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(h) <= 2 {
			break
		}
		if name, v, found := bytes.Cut(h, []byte(":")); found && strings.EqualFold(string(name), "Content-Length") {
			if n, err = strconv.Atoi(string(bytes.TrimSpace(v))); err != nil {
				return err
			}
		}
	}
	if n < 0 {
		return fmt.Errorf("response without Content-Length: %q", status)
	}
	if !ok {
		body := make([]byte, n)
		_, _ = io.ReadFull(l.br, body)
		return fmt.Errorf("%q %s", status, body)
	}
	_, err = l.br.Discard(n)
	return err
}

// loadClients returns a constructor of connected loadConns that post body to url with the given
// extra headers; the connections are closed when the benchmark ends.
func loadClients(tb testing.TB, url string, body []byte, hdr ...string) func() func() error {
	tb.Helper()
	hostPath := strings.TrimPrefix(url, "http://")
	host, path, _ := strings.Cut(hostPath, "/")
	req := fmt.Appendf(nil, "POST /%s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", path, host, len(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		req = fmt.Appendf(req, "%s: %s\r\n", hdr[i], hdr[i+1])
	}
	req = append(append(req, "\r\n"...), body...)
	var mu sync.Mutex
	var conns []*loadConn
	tb.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			if c.conn != nil {
				c.conn.Close()
			}
		}
	})
	return func() func() error {
		c := &loadConn{req: req}
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		conn, err := net.Dial("tcp", host)
		if err != nil {
			return func() error { return err }
		}
		c.conn, c.br = conn, bufio.NewReaderSize(conn, 64<<10)
		return c.do
	}
}

// jsonScanBody is an inference request with one 1×1×side×side scan as JSON numbers.
func jsonScanBody(id string, side int, x []float32) []byte {
	b := fmt.Appendf(nil, `{"id":%q,"inputs":[{"name":"scan","datatype":"FP32","shape":[1,1,%d,%d],"data":[`, id, side, side)
	for i, v := range x {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendFloat(b, float64(v), 'g', -1, 32)
	}
	return append(b, "]}]}"...)
}

// binaryScanBody is the same request with the scan as raw bytes (binary tensor data extension),
// asking for the probabilities as binary and the logits as JSON; it returns the body and the
// length of its JSON part.
func binaryScanBody(id string, side int, x []float32) ([]byte, int) {
	hdr := fmt.Sprintf(`{"id":%q,"inputs":[{"name":"scan","datatype":"FP32","shape":[1,1,%d,%d],"parameters":{"binary_data_size":%d}}],`+
		`"outputs":[{"name":"probabilities","parameters":{"binary_data":true}},{"name":"logits"}]}`, id, side, side, 4*len(x))
	b := []byte(hdr)
	for _, v := range x {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b, len(hdr)
}

// benchModelRepository writes the benchmark model (demomodel.BenchModel) into a temp dir.
func benchModelRepository(tb testing.TB) string {
	tb.Helper()
	files, err := demomodel.BenchModel()
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	for name, b := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

// modelBench is one model's setup: a direct session, the request bodies and the client
// constructors of each server variant.
type modelBench struct {
	name       string
	side       int
	direct     func() func() error
	jsonBody   []byte
	binBody    []byte
	jsonLen    int
	servers    map[string]*instance
	jsonClient func(server string) func() func() error
	binClient  func(server string) func() func() error
}

func newModelBench(b *testing.B, lib, repo, name string, side int, x []float32, servers map[string][]string) *modelBench {
	m, err := modelrepo.LoadModel(filepath.Join(repo, name))
	if err != nil {
		b.Fatal(err)
	}
	sess, err := ortsession.New(m, ortsession.Options{IntraOpThreads: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sess.Close() })
	inputs := []oip.Tensor{{Name: "scan", Datatype: oip.FP32, Shape: []int64{1, 1, int64(side), int64(side)}, Data: x}}
	mb := &modelBench{name: name, side: side, servers: map[string]*instance{}}
	// The direct baseline: the ortsession call the server makes, on the same input.
	mb.direct = func() func() error {
		return func() error { _, err := sess.Run(context.Background(), inputs); return err }
	}
	mb.jsonBody = jsonScanBody("bench", side, x)
	mb.binBody, mb.jsonLen = binaryScanBody("bench", side, x)
	for key, args := range servers {
		mb.servers[key] = start(b, append([]string{"--onnxruntime-lib", lib, "--model-repository", repo, "--intra-op-threads", "1"}, args...)...)
	}
	url := func(server string) string { return mb.servers[server].url + "/v2/models/" + name + "/infer" }
	mb.jsonClient = func(server string) func() func() error {
		return loadClients(b, url(server), mb.jsonBody, "Content-Type", "application/json")
	}
	mb.binClient = func(server string) func() func() error {
		return loadClients(b, url(server), mb.binBody, "Content-Type", "application/octet-stream", oip.HeaderContentLength, strconv.Itoa(mb.jsonLen))
	}
	return mb
}

// Server variants of the benchmark.
var benchServers = map[string][]string{
	"off":       nil,
	"on-500us":  {"--batch-max-size", "8", "--batch-max-delay", "500us"},
	"on-0s-2w":  {"--batch-max-size", "8", "--batch-max-delay", "0s", "--batch-workers", "2"},
	"big-off":   nil,
	"big-0s-2w": {"--batch-max-size", "8", "--batch-max-delay", "0s", "--batch-workers", "2"},
}

type benchRow struct {
	name       string
	conc, n    int // n: requests per client
	newClient  func() func() error
	clients    []func() error
	lat        latencies
	busy       time.Duration // concurrency 1: the sum of the row's request times
	wall       time.Duration // concurrency 8: the wall time of the row's rounds
	throughput float64
}

// runInterleaved measures rows that are compared with each other as if at the same time, so
// that load from elsewhere on the shared machine, which comes and goes within seconds, weighs on
// the baseline and on the server alike. At concurrency 1 it calls each row once per turn, round
// robin (starting with a different row each turn); at concurrency 8 it runs the rows in turn
// for a tenth of their requests at a time.
func runInterleaved(rows []*benchRow) (st groupStats, err error) {
	for _, r := range rows {
		r.clients = make([]func() error, r.conc)
		for i := range r.clients {
			r.clients[i] = r.newClient()
		}
		if _, _, err := measure(r.clients, max(r.n/10, 20)); err != nil { // warm up
			return st, fmt.Errorf("%s: %w", r.name, err)
		}
		r.lat = make(latencies, 0, r.conc*r.n)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	gc0 := ms.NumGC
	wait0, pre0 := schedStats()
	if rows[0].conc == 1 {
		for i := range rows[0].n {
			for j := range rows {
				r := rows[(i+j)%len(rows)]
				t0 := time.Now()
				if err := r.clients[0](); err != nil {
					return st, fmt.Errorf("%s: %w", r.name, err)
				}
				d := time.Since(t0)
				r.lat = append(r.lat, d)
				r.busy += d
			}
		}
		for _, r := range rows {
			r.throughput = float64(r.n) / r.busy.Seconds()
		}
	} else {
		const rounds = 10
		for range rounds {
			for _, r := range rows {
				lat, wall, err := measure(r.clients, r.n/rounds)
				if err != nil {
					return st, fmt.Errorf("%s: %w", r.name, err)
				}
				r.lat = append(r.lat, lat...)
				r.wall += wall
			}
		}
		for _, r := range rows {
			r.throughput = float64(len(r.lat)) / r.wall.Seconds()
		}
	}
	wait1, pre1 := schedStats()
	runtime.ReadMemStats(&ms)
	st = groupStats{gcs: ms.NumGC - gc0, wait: wait1 - wait0, preempted: pre1 - pre0}
	for _, r := range rows {
		st.requests += len(r.lat)
	}
	return st, nil
}

func (r *benchRow) p(q float64) float64 { return float64(r.lat.pct(q).Nanoseconds()) / 1e3 }

// schedStats returns, summed over the process's threads, how long they have been runnable but
// waiting for a CPU (the second field of /proc/*/task/*/schedstat) and how often the kernel took
// the CPU from them (nonvoluntary_ctxt_switches): on a machine shared with other builds, the
// interference from other processes. (Go's idle threads, spinning for work, add some wait too.)
func schedStats() (wait time.Duration, preempted int64) {
	tasks, _ := filepath.Glob("/proc/self/task/*")
	for _, t := range tasks {
		if b, err := os.ReadFile(filepath.Join(t, "schedstat")); err == nil {
			if f := strings.Fields(string(b)); len(f) >= 2 {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				wait += time.Duration(n)
			}
		}
		if b, err := os.ReadFile(filepath.Join(t, "status")); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "nonvoluntary_ctxt_switches:"); ok {
					n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
					preempted += n
				}
			}
		}
	}
	return wait, preempted
}

// groupStats is what runInterleaved observed besides the rows' figures.
type groupStats struct {
	gcs       uint32        // garbage collections in the process
	requests  int           // requests of all rows
	wait      time.Duration // run-queue wait of our threads, summed
	preempted int64         // involuntary context switches of our threads
}

func (g groupStats) String() string {
	return fmt.Sprintf("meanwhile %d garbage collections; per request, %.1f µs of run-queue wait and %.2f preemptions of our threads",
		g.gcs, float64(g.wait.Nanoseconds())/1e3/float64(g.requests), float64(g.preempted)/float64(g.requests))
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// BenchmarkServerVsDirect measures, in one run and against baselines of the same run: the
// server's per-request overhead (end-to-end request time minus a direct session.Run on the same
// input) at concurrency 1 and 8, with JSON and with binary tensors, and throughput against the
// direct loop with dynamic batching off and on, for the 20 µs demo model and for a 224×224
// benchmark CNN of about 2 ms a run. Rows that are compared are measured interleaved
// (runInterleaved), the client is a wrk-like raw HTTP/1.1 connection (loadConn), and the servers
// are the real run function on loopback. It runs a fixed number of requests per row (b.N is not
// used) and prints a table; see docs/inference-server.md.
func BenchmarkServerVsDirect(b *testing.B) {
	lib := testort.Lib(b)
	x := samples(b)["opacity-1"]
	demoServers, bigServers := map[string][]string{}, map[string][]string{}
	for k, v := range benchServers {
		if strings.HasPrefix(k, "big-") {
			bigServers[k] = v
		} else {
			demoServers[k] = v
		}
	}
	demo := newModelBench(b, lib, testort.ModelRepository(), modelName, demomodel.Size, x, demoServers)
	big := newModelBench(b, lib, benchModelRepository(b), demomodel.BenchName, demomodel.BenchSize, demomodel.BenchScan(x), bigServers)

	// The handler called in-process (no network): decode + validate + run + encode.
	m, err := modelrepo.LoadModel(filepath.Join(testort.ModelRepository(), modelName))
	if err != nil {
		b.Fatal(err)
	}
	hsess, err := ortsession.New(m, ortsession.Options{IntraOpThreads: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer hsess.Close()
	srv, err := server.New(server.Options{
		Models: []server.Model{{Config: m.Config, Session: hsess}}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Registry: prometheus.NewRegistry(), MaxBodyBytes: 8 << 20,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	handler := func() func() error {
		return func() error {
			req := httptest.NewRequest(http.MethodPost, "/v2/models/"+modelName+"/infer", bytes.NewReader(demo.jsonBody))
			rec := httptest.NewRecorder()
			srv.ServeHTTP(rec, req)
			if rec.Code != 200 {
				return fmt.Errorf("handler: %d %s", rec.Code, rec.Body)
			}
			return nil
		}
	}
	// net/http alone: a handler that reads the same body and sends a reply of the server's
	// size, to separate the cost of HTTP on loopback from the server's own work.
	reply := bytes.Repeat([]byte("x"), 300)
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(reply)
	}))
	defer echo.Close()
	// Go's own client, for comparison with the cheap load generator.
	goClient := func() func() error {
		c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32, DisableCompression: true}, Timeout: 30 * time.Second}
		url := demo.servers["off"].url + "/v2/models/" + modelName + "/infer"
		return func() error {
			resp, err := c.Post(url, "application/json", bytes.NewReader(demo.jsonBody))
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

	const n1, n8 = 3000, 600 // demo: requests at concurrency 1; per client at concurrency 8
	const b1, b8 = 300, 100  // benchmark model
	// Rows measured together (runInterleaved); each group's first row is its baseline.
	// The diagnostic rows that allocate much per request (httptest's recorder, Go's client) are
	// a group of their own, so that the collections they cause do not land in the figures.
	groups := [][]*benchRow{{
		{name: "demo: direct session.Run", conc: 1, n: n1, newClient: demo.direct},
		{name: "demo: net/http only, JSON-sized body", conc: 1, n: n1, newClient: loadClients(b, echo.URL+"/", demo.jsonBody)},
		{name: "demo: server, JSON", conc: 1, n: n1, newClient: demo.jsonClient("off")},
		{name: "demo: server, binary", conc: 1, n: n1, newClient: demo.binClient("off")},
	}, {
		{name: "demo: direct session.Run (diagnostics)", conc: 1, n: n1 / 3, newClient: demo.direct},
		{name: "demo: handler in-process, JSON (no HTTP)", conc: 1, n: n1 / 3, newClient: handler},
		{name: "demo: server, JSON, Go net/http client", conc: 1, n: n1 / 3, newClient: goClient},
	}, {
		{name: "demo: direct session.Run", conc: 8, n: n8, newClient: demo.direct},
		{name: "demo: server, JSON, batching off", conc: 8, n: n8, newClient: demo.jsonClient("off")},
		{name: "demo: server, JSON, batching 8/500µs", conc: 8, n: n8, newClient: demo.jsonClient("on-500us")},
		{name: "demo: server, JSON, batching 8/0s/2w", conc: 8, n: n8, newClient: demo.jsonClient("on-0s-2w")},
		{name: "demo: server, binary, batching off", conc: 8, n: n8, newClient: demo.binClient("off")},
		{name: "demo: server, binary, batching 8/0s/2w", conc: 8, n: n8, newClient: demo.binClient("on-0s-2w")},
	}, {
		{name: "224: direct session.Run", conc: 1, n: b1, newClient: big.direct},
		{name: "224: server, JSON", conc: 1, n: b1, newClient: big.jsonClient("big-off")},
		{name: "224: server, binary", conc: 1, n: b1, newClient: big.binClient("big-off")},
	}, {
		{name: "224: direct session.Run", conc: 8, n: b8, newClient: big.direct},
		{name: "224: server, JSON, batching off", conc: 8, n: b8, newClient: big.jsonClient("big-off")},
		{name: "224: server, JSON, batching 8/0s/2w", conc: 8, n: b8, newClient: big.jsonClient("big-0s-2w")},
		{name: "224: server, binary, batching off", conc: 8, n: b8, newClient: big.binClient("big-off")},
		{name: "224: server, binary, batching 8/0s/2w", conc: 8, n: b8, newClient: big.binClient("big-0s-2w")},
	}}
	load0 := loadavg()
	var rows []*benchRow
	stats := make([]groupStats, len(groups))
	for i, g := range groups {
		if stats[i], err = runInterleaved(g); err != nil {
			b.Fatal(err)
		}
		rows = append(rows, g...)
	}
	w := os.Stdout
	fmt.Fprintf(w, "\ninference-server vs direct session.Run; one 1×1×side×side FP32 scan per request; intra-op threads 1; GOMAXPROCS %d; load average %s before, %s after\n",
		runtimeProcs(), load0, loadavg())
	fmt.Fprintf(w, "demo = %s (64×64, JSON body %d B, binary %d B); 224 = %s (224×224, untrained, JSON body %d B, binary %d B)\n",
		modelName, len(demo.jsonBody), len(demo.binBody), demomodel.BenchName, len(big.jsonBody), len(big.binBody))
	fmt.Fprintf(w, "%-44s %5s %8s %9s %9s %9s\n", "path", "conc", "requests", "p50 µs", "p99 µs", "req/s")
	for i, g := range groups {
		for _, r := range g {
			fmt.Fprintf(w, "%-44s %5d %8d %9.1f %9.1f %9.0f\n", r.name, r.conc, len(r.lat), r.p(0.5), r.p(0.99), r.throughput)
		}
		fmt.Fprintf(w, "  (rows above measured interleaved; %s)\n", stats[i])
	}
	row := func(name string, conc int) *benchRow {
		for _, r := range rows {
			if r.name == name && r.conc == conc {
				return r
			}
		}
		b.Fatalf("no row %q at %d", name, conc)
		return nil
	}
	overhead := func(label, direct, path string) (p50, p99 float64) {
		d, s := row(direct, 1), row(path, 1)
		p50, p99 = s.p(0.5)-d.p(0.5), s.p(0.99)-d.p(0.99)
		fmt.Fprintf(w, "overhead at concurrency 1 (server − direct), %-26s p50 %7.1f µs (target ≤ 100), p99 %7.1f µs (target ≤ 250)\n", label+":", p50, p99)
		return p50, p99
	}
	fmt.Fprintf(w, "\n")
	ov50, ov99 := overhead("demo, JSON", "demo: direct session.Run", "demo: server, JSON")
	bov50, bov99 := overhead("demo, binary", "demo: direct session.Run", "demo: server, binary")
	overhead("demo, JSON, Go client", "demo: direct session.Run (diagnostics)", "demo: server, JSON, Go net/http client")
	overhead("224, JSON", "224: direct session.Run", "224: server, JSON")
	gov50, gov99 := overhead("224, binary", "224: direct session.Run", "224: server, binary")
	fmt.Fprintf(w, "of the demo JSON overhead: in-process handler (decode + run + encode, no HTTP) p50 %.1f µs; net/http alone with this body p50 %.1f µs\n",
		row("demo: handler in-process, JSON (no HTTP)", 1).p(0.5)-row("demo: direct session.Run (diagnostics)", 1).p(0.5), row("demo: net/http only, JSON-sized body", 1).p(0.5))
	tput := func(direct, path string) float64 { return row(path, 8).throughput / row(direct, 8).throughput }
	fmt.Fprintf(w, "\nthroughput vs the direct loop at concurrency 8 (target ≥ 0.9×):\n")
	type tr struct{ model, direct, prefix string }
	ratios := map[string]float64{}
	for _, t := range []tr{{"demo", "demo: direct session.Run", "demo: server, "}, {"224", "224: direct session.Run", "224: server, "}} {
		for _, enc := range []string{"JSON", "binary"} {
			off := tput(t.direct, t.prefix+enc+", batching off")
			on := tput(t.direct, t.prefix+enc+", batching 8/0s/2w")
			ratios[t.model+" "+enc] = off
			fmt.Fprintf(w, "  %-4s %-6s batching off %.2f×, on (8, 0s, 2 workers) %.2f× (on/off %.2f×)", t.model, enc, off, on, on/off)
			if t.model == "demo" && enc == "JSON" {
				on5 := tput(t.direct, t.prefix+"JSON, batching 8/500µs")
				fmt.Fprintf(w, ", on (8, 500µs) %.2f× (on/off %.2f×)", on5, on5/off)
			}
			fmt.Fprintln(w)
		}
	}
	fmt.Fprintln(w)
	b.ReportMetric(ov50, "overhead-p50-µs")
	b.ReportMetric(ov99, "overhead-p99-µs")
	b.ReportMetric(bov50, "binary-overhead-p50-µs")
	b.ReportMetric(bov99, "binary-overhead-p99-µs")
	b.ReportMetric(gov50, "224-binary-overhead-p50-µs")
	b.ReportMetric(gov99, "224-binary-overhead-p99-µs")
	b.ReportMetric(ratios["demo JSON"], "tput-ratio-off")
	b.ReportMetric(ratios["224 binary"], "224-binary-tput-ratio-off")
}
