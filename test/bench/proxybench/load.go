package proxybench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/csv"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// newClient is the load generator's HTTP/1.1 keep-alive client; roots trusts the bench's TLS
// certificate.
func newClient(roots *x509.CertPool, conns int) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"},
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			MaxConnsPerHost:     conns,
			IdleConnTimeout:     time.Minute,
			DisableCompression:  true,
			TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{},
		},
	}
}

// get does one request and checks the answer is the app's 1 KiB payload.
func get(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || n != PayloadSize {
		return fmt.Errorf("status %d, %d bytes, want 200 and %d bytes (%s %s)", resp.StatusCode, n, PayloadSize,
			resp.Header.Get("Countersign-Reject"), resp.Header.Get("Countersign-Reject-Detail"))
	}
	return nil
}

// fixedRate sends requests at rate per second for d, over workers keep-alive connections,
// each worker on its own schedule (worker w sends request k at start+(k*workers+w)/rate).
//
// Latency is counted from the moment the request was sent, except when the worker was still
// busy with its previous request at the scheduled time: then it is counted from the
// scheduled time, so that a stall is not hidden (coordinated omission). A worker waking late
// from its sleep is not charged to the path: Go's timers on a busy 2-core machine are late by
// up to a millisecond, which would swamp the differences measured.
//
// It also returns the wall time until the last answer: when the path cannot keep up, the
// requests scheduled within d take longer, and the achieved rate is len/elapsed.
func fixedRate(ctx context.Context, c *http.Client, url string, rate int, d time.Duration, workers int) ([]time.Duration, time.Duration, error) {
	return fixedRateOp(ctx, func(ctx context.Context, _ int) error { return get(ctx, c, url) }, rate, d, workers)
}

// fixedRateOp is fixedRate of any request: op(ctx, worker) does one and checks its answer.
func fixedRateOp(ctx context.Context, op func(ctx context.Context, worker int) error, rate int, d time.Duration, workers int) ([]time.Duration, time.Duration, error) {
	interval := time.Second / time.Duration(rate)
	start := time.Now().Add(10 * time.Millisecond)
	end := start.Add(d)
	var mu sync.Mutex
	var all []time.Duration
	var firstErr error
	var nerr atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, int(d/interval)/workers+1)
			var prevDone time.Time
			for k := 0; ; k++ {
				at := start.Add(time.Duration(k*workers+w) * interval)
				if !at.Before(end) || ctx.Err() != nil {
					break
				}
				if wait := time.Until(at); wait > 0 {
					time.Sleep(wait)
				}
				sent := time.Now()
				err := op(ctx, w)
				done := time.Now()
				if err != nil {
					if nerr.Add(1) == 1 {
						mu.Lock()
						firstErr = err
						mu.Unlock()
					}
					continue
				}
				from := sent
				if prevDone.After(at) {
					from = at
				}
				prevDone = done
				lat = append(lat, done.Sub(from))
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if n := nerr.Load(); n > 0 {
		return all, elapsed, fmt.Errorf("%d of %d requests failed; first: %w", n, int64(len(all))+n, firstErr)
	}
	if err := ctx.Err(); err != nil {
		return all, elapsed, err
	}
	slices.Sort(all)
	return all, elapsed, nil
}

// closedLoop sends n requests over conns connections as fast as they are answered; it is the
// saturation measurement when wrk is not used (the harness test).
func closedLoop(ctx context.Context, c *http.Client, url string, n, conns int) (float64, error) {
	var next atomic.Int64
	errc := make(chan error, conns)
	start := time.Now()
	for i := 0; i < conns; i++ {
		go func() {
			for next.Add(1) <= int64(n) {
				if err := get(ctx, c, url); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	var first error
	for i := 0; i < conns; i++ {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return float64(n) / time.Since(start).Seconds(), first
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

var (
	wrkRPS    = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkTotal  = regexp.MustCompile(`(\d+) requests in`)
	wrkNon2xx = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkSock   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// wrkResult is one wrk run.
type wrkResult struct {
	rps      float64
	requests int64
	errors   int64
}

// runWrk runs wrk for d with threads and conns against url; a run with non-2xx answers or
// more than 0.1% socket errors is a broken path.
func runWrk(ctx context.Context, url string, threads, conns int, d time.Duration) (wrkResult, error) {
	secs := max(int(d.Round(time.Second)/time.Second), 1)
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "wrk", "-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns),
		"-d", strconv.Itoa(secs)+"s", "--timeout", "5s", url).CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %v: %s", url, err, out)
	}
	s := string(out)
	var r wrkResult
	m := wrkRPS.FindStringSubmatch(s)
	t := wrkTotal.FindStringSubmatch(s)
	if m == nil || t == nil {
		return r, fmt.Errorf("wrk %s: cannot read its output: %s", url, s)
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	r.requests, _ = strconv.ParseInt(t[1], 10, 64)
	if m := wrkNon2xx.FindStringSubmatch(s); m != nil {
		return r, fmt.Errorf("wrk %s: %s non-2xx answers", url, m[1])
	}
	if m := wrkSock.FindStringSubmatch(s); m != nil {
		for _, x := range m[1:] {
			n, _ := strconv.ParseInt(x, 10, 64)
			r.errors += n
		}
		if r.errors*1000 > r.requests {
			return r, fmt.Errorf("wrk %s: socket errors: %s", url, m[0])
		}
	}
	return r, nil
}

// runRedisBenchmark runs redis-benchmark with -P pipeline and returns requests per second by
// test name.
func runRedisBenchmark(ctx context.Context, addr string, pipeline, clients, n int, tests string) (map[string]float64, error) {
	host, port, _ := strings.Cut(addr, ":")
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "redis-benchmark", "-h", host, "-p", port, "-P", strconv.Itoa(pipeline), "-c", strconv.Itoa(clients),
		"-n", strconv.Itoa(n), "-t", tests, "--csv")
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("redis-benchmark %s: %v: %s", addr, err, out)
	}
	recs, err := csv.NewReader(strings.NewReader(string(out))).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("redis-benchmark %s: %v: %s", addr, err, out)
	}
	res := map[string]float64{}
	for _, r := range recs {
		if len(r) < 2 || r[0] == "test" {
			continue
		}
		v, err := strconv.ParseFloat(r[1], 64)
		if err != nil {
			return nil, fmt.Errorf("redis-benchmark %s: %q: %v", addr, r, err)
		}
		res[r[0]] = v
	}
	for _, t := range strings.Split(tests, ",") {
		if _, ok := res[strings.ToUpper(t)]; !ok {
			return nil, fmt.Errorf("redis-benchmark %s: no result for %s: %s", addr, t, out)
		}
	}
	return res, nil
}
