// Package proxybench measures the proxy's attested pair against like-for-like peers in one
// run, on loopback, with the same client, app and 1 KiB payload over keep-alive: the direct
// path; pairs of plain Go httputil.ReverseProxy, nginx and HAProxy with mTLS between them
// (TLS 1.3, client certificates, ECDSA P-256); our front and back proxies with one attested
// hop, and two; and for raw TCP, redis-benchmark directly and through a stunnel pair, an
// HAProxy TCP-TLS pair and our TCP pair. It prints a table of figures and the ratios against
// the targets of the proxy's performance issue (#13), MET or MISSED. It starts every process
// it measures and stops them by PID. See docs/performance.md.
package proxybench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// Options configure a run. Zero values get the defaults of `make bench-proxy`.
type Options struct {
	BinDir      string        // where the proxy and `attestation-service` are
	ProxyBin    string        // the proxy binary's name in BinDir (default "proxy"; bench-proxy passes the injected build)
	LatRate     int           // fixed request rate of the latency phase (default 200/s)
	LatFor      time.Duration // per path and round (default 5s)
	Rate        int           // fixed request rate of the memory and CPU phase (default 1000/s)
	RateFor     time.Duration // per path and round (default 3s)
	RateConns   int           // connections of the fixed-rate generator (default 8)
	SatFor      time.Duration // wrk duration per path and round (default 5s)
	WrkThreads  int           // default 2 (the machine's cores)
	WrkConns    int           // default 32
	NoWrk       bool          // saturate with the Go closed-loop generator instead of wrk
	SatRequests int           // requests of the closed-loop generator (with NoWrk)
	Rounds      int           // default 3
	Workers     int           // nginx worker_processes (default: GOMAXPROCS of the Go processes, the core count)
	RedisN      int           // redis-benchmark -n at -P 1 (default 50000)
	RedisNPipe  int           // redis-benchmark -n at -P 16 (default 400000)
	RedisC      int           // redis-benchmark -c (default 50)
	WireN       int           // sequential requests of the bytes-on-the-wire measurement (default 200)
	Skip        map[string]bool
	// Only, if not empty, runs just these paths and parts ("redis", "wire"): the rest are skipped.
	Only map[string]bool
	Log  io.Writer // progress (default: discard)
}

// grpcOnly says whether only the gRPC part runs (-only grpc), on its own processes.
func (o *Options) grpcOnly() bool { return len(o.Only) == 1 && o.Only["grpc"] }

// skipped says whether a path or part ("wire", "redis") is left out of the run.
func (o *Options) skipped(name string) bool {
	return o.Skip[name] || (len(o.Only) > 0 && !o.Only[name])
}

func (o *Options) defaults() {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	defd := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	if o.BinDir == "" {
		o.BinDir = "bin"
	}
	if o.ProxyBin == "" {
		o.ProxyBin = "proxy"
	}
	def(&o.LatRate, 100)
	defd(&o.LatFor, 5*time.Second)
	def(&o.Rate, 1000)
	defd(&o.RateFor, 3*time.Second)
	def(&o.RateConns, 8)
	defd(&o.SatFor, 4*time.Second)
	def(&o.WrkThreads, 2)
	def(&o.WrkConns, 32)
	def(&o.SatRequests, 2000)
	def(&o.Rounds, 3)
	def(&o.Workers, numCPU())
	def(&o.RedisN, 50000)
	def(&o.RedisNPipe, 400000)
	def(&o.RedisC, 50)
	def(&o.WireN, 200)
	if o.Log == nil {
		o.Log = io.Discard
	}
}

// Path is one way from the client to the app.
type Path struct {
	Name, Desc string
	URL        string
	// Procs are the processes on the path whose memory and CPU are reported.
	Procs []string
	// Base is the path whose latency this one adds to, over Hops proxy hops.
	Base string
	Hops int
}

// PathResult is one path's figures, one value per round.
type PathResult struct {
	Path
	P50, P99, P999 []time.Duration
	// Achieved is the request rate answered in the memory and CPU phase (Options.Rate when
	// the path keeps up).
	Achieved []float64
	SatRPS   []float64
	// RSSKiB is the largest VmRSS seen while the path was under the fixed rate; HWMKiB the
	// peak (VmHWM) at the end of the run. CPU is per request, at the fixed rate and at
	// saturation.
	RSSKiB map[string][]int64
	// AnonKiB is RssAnon at the sample where VmRSS was largest: VmRSS less the mapped files
	// (for a Go process, mostly its executable, which is resident in full once paged in).
	AnonKiB map[string][]int64
	HWMKiB  map[string]int64
	CPURate map[string][]time.Duration
	CPUSat  map[string][]time.Duration
}

// Redis paths: the server directly and through each TCP pair.
var redisPaths = []string{"direct", "stunnel-pair", "haproxy-pair", "ours-tcp"}

// RedisResult is requests per second of one redis-benchmark test at one pipeline depth, one
// value per round, by path (redisPaths).
type RedisResult struct {
	Test     string
	Pipeline int
	RPS      map[string][]float64
}

// redisProcs are the processes of each Redis path whose CPU per request is reported.
var redisProcs = map[string][]string{"direct": {"redis-server"}, "stunnel-pair": {"stunnel-a", "stunnel-b"}, "haproxy-pair": {"haproxy-a", "haproxy-b"}, "ours-tcp": {"front", "back"}}

// Report is a whole run.
type Report struct {
	Options Options
	Paths   []*PathResult
	Redis   []*RedisResult
	Wire    []WireResult
	// RedisCPU is, by path and pipeline depth, the CPU per request of the path's processes
	// (redisProcs) together over one redis-benchmark run (SET and GET), one value per round.
	RedisCPU map[string]map[int][]time.Duration
	Started  time.Time
	Elapsed  time.Duration
	// LoadBefore and LoadAfter are /proc/loadavg at the start and at the end of the run.
	LoadBefore, LoadAfter string
	// ProxyBuild says which proxy build was measured; Commit which source (HEAD, and
	// whether the tree had changes).
	ProxyBuild, Commit string
	// Notes are things the proxies logged during the run that bear on the figures.
	Notes []string
	// GRPC is the gRPC part (grpc.go), nil when skipped.
	GRPC *GRPCReport
}

// Path returns the result of the named path, or nil.
func (r *Report) Path(name string) *PathResult {
	for _, p := range r.Paths {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return strings.TrimSpace(string(b))
	}
	return strings.Join(f[:3], " ")
}

// commit is the checkout's HEAD, and "+changes" if its tree differs from it.
func commit() string {
	b, err := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown (not a git checkout)"
	}
	c := strings.TrimSpace(string(b))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		c += " +uncommitted changes"
	}
	return c
}

func numCPU() int {
	b, err := exec.Command("nproc").Output()
	if err == nil {
		var n int
		if _, err := fmt.Sscan(string(b), &n); err == nil && n > 0 {
			return n
		}
	}
	return 2
}

// Run starts the topology, measures every path for o.Rounds rounds (interleaved: in each phase
// and round every path runs once, so that the machine's noise hits all alike), stops every
// process it started and returns the figures. It fails if any path fails a request.
func Run(ctx context.Context, o Options) (rep *Report, err error) {
	o.defaults()
	if o.grpcOnly() {
		return runGRPCOnly(ctx, o)
	}
	rep = &Report{Options: o, Started: time.Now(), LoadBefore: loadAvg(), Commit: commit()}
	dir, err := os.MkdirTemp("", "proxybench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	t := &topology{dir: dir, byName: map[string]*proc{}}
	defer t.stop()
	fmt.Fprintf(o.Log, "proxybench: starting the topology in %s\n", dir)
	if err := setup(ctx, &o, t); err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	rep.ProxyBuild = t.proxyBuild
	paths := []Path{
		{Name: "direct", Desc: "client → app, plaintext", URL: "http://" + t.app, Procs: []string{"app"}},
		{
			Name:  "go-pair",
			Desc:  "client → Go ReverseProxy A →mTLS→ Go ReverseProxy B → app",
			URL:   "http://" + t.goA,
			Procs: []string{"go-a", "go-b"},
			Base:  "direct",
			Hops:  1,
		},
		{
			Name:  "nginx-pair",
			Desc:  "client → nginx A →mTLS→ nginx B → app",
			URL:   "http://" + t.ngA,
			Procs: []string{"nginx-a", "nginx-b"},
			Base:  "direct",
			Hops:  1,
		},
		{
			Name:  "haproxy-pair",
			Desc:  "client → HAProxy A →mTLS→ HAProxy B → app",
			URL:   "http://" + t.haA,
			Procs: []string{"haproxy-a", "haproxy-b"},
			Base:  "direct",
			Hops:  1,
		},
		{
			Name:  "ours-1hop",
			Desc:  "client → front (outbound) →attested mTLS+chain→ back (inbound) → app",
			URL:   "http://" + t.frontOut,
			Procs: []string{"front", "back"},
			Base:  "direct",
			Hops:  1,
		},
		{Name: "relay", Desc: "client → relay app → app, plaintext", URL: "http://" + t.relayDirect, Procs: []string{"app"}},
		{
			Name:  "ours-2hop",
			Desc:  "client → front →mTLS→ back → relay app → back →mTLS→ third → app",
			URL:   "http://" + t.frontOut2,
			Procs: []string{"front", "back", "third"},
			Base:  "relay",
			Hops:  2,
		},
	}
	clients := map[string]*clientT{}
	for _, p := range paths {
		if o.skipped(p.Name) {
			fmt.Fprintf(o.Log, "proxybench: skipping %s\n", p.Name)
			continue
		}
		rep.Paths = append(rep.Paths, &PathResult{
			Path:    p,
			RSSKiB:  map[string][]int64{},
			AnonKiB: map[string][]int64{},
			HWMKiB:  map[string]int64{},
			CPURate: map[string][]time.Duration{},
			CPUSat:  map[string][]time.Duration{},
		})
		clients[p.Name] = &clientT{c: newClient(t.roots, max(o.RateConns, o.WrkConns))}
	}
	fail := func(p *PathResult, err error) error {
		var logs []string
		for _, n := range p.Procs {
			if pr := t.byName[n]; pr != nil {
				logs = append(logs, fmt.Sprintf("--- %s ---\n%s", n, tail(pr.output(), 4000)))
			}
		}
		return fmt.Errorf("path %s (%s): %w\n%s", p.Name, p.Desc, err, strings.Join(logs, "\n"))
	}
	// Warm up every path: connections, pools, token verification caches.
	for _, p := range rep.Paths {
		if _, err := closedLoop(ctx, clients[p.Name].c, p.URL, 50*o.RateConns, o.RateConns); err != nil {
			return nil, fail(p, fmt.Errorf("warm-up: %w", err))
		}
	}
	// Bytes between the two proxies of a pair, per request: ours against the Go pair.
	if !o.skipped("wire") {
		for _, w := range []struct {
			name, url string
			c         *counter
		}{{"go-pair", "http://" + t.goACount, t.goCount}, {"ours-1hop", "http://" + t.frontCount, t.ourCount}} {
			fmt.Fprintf(o.Log, "proxybench: bytes on the wire between the proxies of %s, %d requests\n", w.name, o.WireN)
			res, err := measureWire(ctx, t, w.name, w.url, w.c, o.WireN)
			if err != nil {
				return nil, err
			}
			rep.Wire = append(rep.Wire, res)
		}
	}
	// Phase 1: latency at a moderate fixed rate; then memory and CPU at Options.Rate.
	for r := 0; r < o.Rounds; r++ {
		for _, p := range rep.Paths {
			fmt.Fprintf(o.Log, "proxybench: round %d/%d, latency at %d req/s for %s: %s\n", r+1, o.Rounds, o.LatRate, o.LatFor, p.Name)
			lat, _, err := fixedRate(ctx, clients[p.Name].c, p.URL, o.LatRate, o.LatFor, o.RateConns)
			if err == nil && len(lat) == 0 {
				err = fmt.Errorf("no requests completed")
			}
			if err != nil {
				return nil, fail(p, err)
			}
			p.P50 = append(p.P50, percentile(lat, 0.50))
			p.P99 = append(p.P99, percentile(lat, 0.99))
			p.P999 = append(p.P999, percentile(lat, 0.999))
		}
	}
	for r := 0; r < o.Rounds; r++ {
		for _, p := range rep.Paths {
			fmt.Fprintf(o.Log, "proxybench: round %d/%d, memory and CPU at %d req/s for %s: %s\n", r+1, o.Rounds, o.Rate, o.RateFor, p.Name)
			if err := measureRate(ctx, t, &o, p, clients[p.Name]); err != nil {
				return nil, fail(p, err)
			}
		}
	}
	// Phase 2: saturation.
	for r := 0; r < o.Rounds; r++ {
		for _, p := range rep.Paths {
			fmt.Fprintf(o.Log, "proxybench: round %d/%d, saturation: %s\n", r+1, o.Rounds, p.Name)
			if err := measureSat(ctx, t, &o, p, clients[p.Name]); err != nil {
				return nil, fail(p, err)
			}
		}
	}
	for _, p := range rep.Paths {
		for _, n := range p.Procs {
			if pr := t.byName[n]; pr != nil {
				u, err := pr.usage()
				if err != nil {
					return nil, fail(p, err)
				}
				p.HWMKiB[n] = u.hwmKiB
			}
		}
	}
	// Phase 3: redis-benchmark directly and through each TCP pair, interleaved.
	if !o.skipped("redis") {
		addrs := map[string]string{"direct": t.redis, "stunnel-pair": t.stA, "haproxy-pair": t.haRedisA, "ours-tcp": t.frontRedis}
		byKey := map[string]*RedisResult{}
		for r := 0; r < o.Rounds; r++ {
			for _, pipe := range []int{1, 16} {
				n := o.RedisN
				if pipe > 1 {
					n = o.RedisNPipe
				}
				for _, path := range redisPaths {
					fmt.Fprintf(o.Log, "proxybench: round %d/%d, redis-benchmark -P %d %s\n", r+1, o.Rounds, pipe, path)
					before, uerr := usages(t, redisProcs[path])
					res, err := runRedisBenchmark(ctx, addrs[path], pipe, o.RedisC, n, "set,get")
					after, uerr2 := usages(t, redisProcs[path])
					if err == nil && uerr == nil && uerr2 == nil {
						var cpu time.Duration
						for name := range after {
							cpu += after[name].cpu - before[name].cpu
						}
						if rep.RedisCPU == nil {
							rep.RedisCPU = map[string]map[int][]time.Duration{}
						}
						if rep.RedisCPU[path] == nil {
							rep.RedisCPU[path] = map[int][]time.Duration{}
						}
						rep.RedisCPU[path][pipe] = append(rep.RedisCPU[path][pipe], cpu/time.Duration(2*n))
					}
					if err != nil {
						var logs []string
						for _, pn := range []string{"front", "back", "stunnel-a", "stunnel-b", "haproxy-a", "haproxy-b"} {
							logs = append(logs, fmt.Sprintf("--- %s ---\n%s", pn, tail(t.byName[pn].output(), 2000)))
						}
						return nil, fmt.Errorf("redis %s: %w\n%s", path, err, strings.Join(logs, "\n"))
					}
					for _, test := range []string{"SET", "GET"} {
						k := fmt.Sprintf("%s/%d", test, pipe)
						rr := byKey[k]
						if rr == nil {
							rr = &RedisResult{Test: test, Pipeline: pipe, RPS: map[string][]float64{}}
							byKey[k] = rr
							rep.Redis = append(rep.Redis, rr)
						}
						rr.RPS[path] = append(rr.RPS[path], res[test])
					}
				}
			}
		}
	}
	for _, n := range []string{"front", "back", "third"} {
		if p := t.byName[n]; p != nil && p.exited() {
			return nil, fmt.Errorf("proxy %s exited during the run: %s", n, tail(p.output(), 4000))
		}
	}
	for _, n := range []string{"back"} {
		if p := t.byName[n]; p != nil {
			if k := strings.Count(p.output(), "dropping a chain header from the app"); k > 0 {
				rep.Notes = append(rep.Notes, fmt.Sprintf("%s logged %d× \"dropping a chain header from the app that this proxy did not hand it\" (chain_from_app_unknown): "+
					"those ours-2hop requests reached third with a new one-entry chain, without front's hop", n, k))
			}
		}
	}
	// The gRPC part (issue 16), on its own processes: the HTTP/1.1 ones are stopped first.
	if !o.skipped("grpc") {
		t.stop()
		if rep.GRPC, err = runGRPC(ctx, &o); err != nil {
			return nil, err
		}
	}
	rep.LoadAfter = loadAvg()
	rep.Elapsed = time.Since(rep.Started)
	return rep, nil
}

type clientT struct{ c *http.Client }

func httpClient(c *clientT) *http.Client { return c.c }

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func usages(t *topology, names []string) (map[string]usage, error) {
	m := map[string]usage{}
	for _, n := range names {
		p := t.byName[n]
		if p == nil {
			continue
		}
		u, err := p.usage()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n, err)
		}
		m[n] = u
	}
	return m, nil
}

func measureRate(ctx context.Context, t *topology, o *Options, p *PathResult, c *clientT) error {
	before, err := usages(t, p.Procs)
	if err != nil {
		return err
	}
	// Sample VmRSS while the load runs; keep the largest.
	stop := make(chan struct{})
	rss, anon := map[string]int64{}, map[string]int64{}
	sampled := make(chan error, 1)
	go func() {
		tk := time.NewTicker(250 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				sampled <- nil
				return
			case <-tk.C:
				u, err := usages(t, p.Procs)
				if err != nil {
					sampled <- err
					return
				}
				for n, x := range u {
					if x.rssKiB > rss[n] {
						rss[n], anon[n] = x.rssKiB, x.anonKiB
					}
				}
			}
		}
	}()
	lat, elapsed, err := fixedRate(ctx, httpClient(c), p.URL, o.Rate, o.RateFor, o.RateConns)
	close(stop)
	if serr := <-sampled; err == nil {
		err = serr
	}
	if err != nil {
		return err
	}
	if len(lat) == 0 {
		return fmt.Errorf("no requests completed")
	}
	after, err := usages(t, p.Procs)
	if err != nil {
		return err
	}
	p.Achieved = append(p.Achieved, float64(len(lat))/elapsed.Seconds())
	for n := range after {
		p.CPURate[n] = append(p.CPURate[n], (after[n].cpu-before[n].cpu)/time.Duration(len(lat)))
		r, a := rss[n], anon[n]
		if after[n].rssKiB > r {
			r, a = after[n].rssKiB, after[n].anonKiB
		}
		p.RSSKiB[n] = append(p.RSSKiB[n], r)
		p.AnonKiB[n] = append(p.AnonKiB[n], a)
	}
	return nil
}

func measureSat(ctx context.Context, t *topology, o *Options, p *PathResult, c *clientT) error {
	before, err := usages(t, p.Procs)
	if err != nil {
		return err
	}
	var rps float64
	var n int64
	if o.NoWrk || !haveWrk() {
		rps, err = closedLoop(ctx, httpClient(c), p.URL, o.SatRequests, o.WrkConns)
		n = int64(o.SatRequests)
	} else {
		var w wrkResult
		w, err = runWrk(ctx, p.URL, o.WrkThreads, o.WrkConns, o.SatFor)
		rps, n = w.rps, w.requests
	}
	if err != nil {
		return err
	}
	after, err := usages(t, p.Procs)
	if err != nil {
		return err
	}
	p.SatRPS = append(p.SatRPS, rps)
	for name := range after {
		p.CPUSat[name] = append(p.CPUSat[name], (after[name].cpu-before[name].cpu)/time.Duration(max(n, 1)))
	}
	return nil
}

func haveWrk() bool {
	_, err := exec.LookPath("wrk")
	return err == nil
}

// median and spread of a series.
func stats[T int | int64 | float64 | time.Duration](xs []T) (med, lo, hi T) {
	if len(xs) == 0 {
		return
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2], s[0], s[len(s)-1]
}

// Quick are the options of a test of the harness itself: every path and every peer, one
// round, a few hundred requests each, the Go closed loop instead of wrk. Its figures are not
// figures.
func Quick(binDir string) Options {
	return Options{
		BinDir:      binDir,
		LatRate:     300,
		LatFor:      time.Second,
		Rate:        300,
		RateFor:     time.Second,
		RateConns:   4,
		Rounds:      1,
		NoWrk:       true,
		SatRequests: 300,
		WrkConns:    4,
		RedisN:      500,
		RedisNPipe:  2000,
		RedisC:      4,
		WireN:       20,
	}
}
