package proxybench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// The gRPC part (issue 16): gRPC unary calls (grpc-go's interop TestService UnaryCall, 1 KiB
// each way) directly to a gRPC app, through a plain Go HTTP/2 mTLS pair, and through one
// attested hop (front's outbound grpc listener → attested TLS h2 → back's inbound grpc
// listener → the app). It has its own processes (attestation service, app, the Go pair and
// two of our proxies, grpc-front and grpc-back), started after the HTTP/1.1 part's are
// stopped, so that `-only grpc` runs it alone.

// Targets of issue 16 ("Performance (ratios in one run)"), printed and judged, never adjusted.
const (
	TargetGRPCSatVsGoPair = 0.8 // saturation calls/s, at least this × the Go HTTP/2 mTLS pair's
	TargetGRPCCPUVsGoPair = 1.3 // CPU per call at saturation, front + back, at most this × A + B
	TargetGRPCLatVsGoPair = 1.5 // added p50 latency at the moderate rate, at most this × the Go pair's
)

// GRPCConns is how many ClientConns (HTTP/2 connections) the gRPC load generator spreads its
// callers over, on every path.
const GRPCConns = 2

// GRPCPathResult is one gRPC path's figures, one value per round.
type GRPCPathResult struct {
	Name, Desc, Addr string
	Procs            []string // the proxies whose CPU is counted
	P50, P99         []time.Duration
	SatRPS           []float64
	CPULat, CPUSat   map[string][]time.Duration // per call, at the moderate rate and at saturation
	conns            []*grpc.ClientConn
}

// GRPCReport is the gRPC part of a run.
type GRPCReport struct {
	Paths                 []*GRPCPathResult
	LoadBefore, LoadAfter string
	SatWorkers            int
}

// Path returns the named path's result, or nil.
func (g *GRPCReport) Path(name string) *GRPCPathResult {
	for _, p := range g.Paths {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// runGRPCOnly is Run with -only grpc: the gRPC part alone.
func runGRPCOnly(ctx context.Context, o Options) (*Report, error) {
	rep := &Report{
		Options:    o,
		Started:    time.Now(),
		LoadBefore: loadAvg(),
		Commit:     commit(),
		ProxyBuild: describeBuild(filepath.Join(o.BinDir, o.ProxyBin)),
	}
	g, err := runGRPC(ctx, &o)
	if err != nil {
		return nil, err
	}
	rep.GRPC = g
	rep.LoadAfter = loadAvg()
	rep.Elapsed = time.Since(rep.Started)
	return rep, nil
}

var grpcReq = &testpb.SimpleRequest{Payload: &testpb.Payload{Body: payload}}

// grpcUnary is one call with the 1 KiB payload, its answer checked.
func grpcUnary(ctx context.Context, c testpb.TestServiceClient) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := c.UnaryCall(ctx, grpcReq)
	if err != nil {
		return err
	}
	if n := len(resp.GetPayload().GetBody()); n != PayloadSize {
		return fmt.Errorf("answer of %d bytes, want %d", n, PayloadSize)
	}
	return nil
}

func (p *GRPCPathResult) op() func(context.Context, int) error {
	cs := make([]testpb.TestServiceClient, len(p.conns))
	for i, c := range p.conns {
		cs[i] = testpb.NewTestServiceClient(c)
	}
	return func(ctx context.Context, w int) error { return grpcUnary(ctx, cs[w%len(cs)]) }
}

// grpcClosedLoop makes calls from workers goroutines as fast as they are answered, n calls
// in all (n > 0) or for d, and returns calls/s and the calls made.
func grpcClosedLoop(ctx context.Context, op func(context.Context, int) error, workers, n int, d time.Duration) (float64, int64, error) {
	var done atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	start := time.Now()
	end := start.Add(d)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if n > 0 && next.Add(1) > int64(n) || n <= 0 && time.Now().After(end) {
					return
				}
				if err := op(ctx, w); err != nil {
					errc <- err
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	close(errc)
	if err := <-errc; err != nil {
		return 0, 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	k := done.Load()
	return float64(k) / el.Seconds(), k, nil
}

// runGRPC starts the gRPC topology, measures its three paths for o.Rounds rounds
// (interleaved), stops its processes and returns the figures.
func runGRPC(ctx context.Context, o *Options) (g *GRPCReport, err error) {
	g = &GRPCReport{LoadBefore: loadAvg(), SatWorkers: o.WrkConns}
	dir, err := os.MkdirTemp("", "proxybench-grpc-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	t := &topology{dir: dir, byName: map[string]*proc{}}
	defer t.stop()
	fmt.Fprintf(o.Log, "proxybench: gRPC: starting its topology in %s\n", dir)
	addrs, err := setupGRPC(ctx, o, t)
	if err != nil {
		return nil, fmt.Errorf("gRPC setup: %w", err)
	}
	g.Paths = []*GRPCPathResult{
		{Name: "grpc-direct", Desc: "client → gRPC app, h2c", Addr: addrs.app},
		{Name: "grpc-go-pair", Desc: "client →h2c→ Go ReverseProxy A →TLS 1.3 h2, mTLS→ Go ReverseProxy B →h2c→ gRPC app", Addr: addrs.goA, Procs: []string{"goh2-a", "goh2-b"}},
		{Name: "grpc-ours", Desc: "client →h2c→ front (outbound grpc) →attested TLS h2+chain→ back (inbound grpc) →h2c→ gRPC app", Addr: addrs.front, Procs: []string{"grpc-front", "grpc-back"}},
	}
	defer func() {
		for _, p := range g.Paths {
			for _, c := range p.conns {
				c.Close()
			}
		}
	}()
	fail := func(p *GRPCPathResult, err error) error {
		var logs []string
		for _, n := range append([]string{"grpcapp"}, p.Procs...) {
			if pr := t.byName[n]; pr != nil {
				logs = append(logs, fmt.Sprintf("--- %s ---\n%s", n, tail(pr.output(), 4000)))
			}
		}
		return fmt.Errorf("gRPC path %s (%s): %w\n%s", p.Name, p.Desc, err, strings.Join(logs, "\n"))
	}
	for _, p := range g.Paths {
		p.CPULat, p.CPUSat = map[string][]time.Duration{}, map[string][]time.Duration{}
		for range GRPCConns {
			c, err := grpc.NewClient(p.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return nil, err
			}
			p.conns = append(p.conns, c)
		}
		if _, _, err := grpcClosedLoop(ctx, p.op(), o.RateConns, 50*o.RateConns, 0); err != nil {
			return nil, fail(p, fmt.Errorf("warm-up: %w", err))
		}
	}
	// cpu runs f, which returns the calls it made, and records the proxies' CPU per call.
	cpu := func(p *GRPCPathResult, into map[string][]time.Duration, f func() (int64, error)) error {
		before, err := usages(t, p.Procs)
		if err != nil {
			return err
		}
		calls, err := f()
		if err != nil {
			return err
		}
		after, err := usages(t, p.Procs)
		if err != nil {
			return err
		}
		for n := range after {
			into[n] = append(into[n], (after[n].cpu-before[n].cpu)/time.Duration(max(calls, 1)))
		}
		return nil
	}
	for r := range o.Rounds {
		for _, p := range g.Paths {
			fmt.Fprintf(o.Log, "proxybench: gRPC round %d/%d, latency at %d calls/s for %s: %s\n", r+1, o.Rounds, o.LatRate, o.LatFor, p.Name)
			var lat []time.Duration
			err := cpu(p, p.CPULat, func() (int64, error) {
				var err error
				lat, _, err = fixedRateOp(ctx, p.op(), o.LatRate, o.LatFor, o.RateConns)
				if err == nil && len(lat) == 0 {
					err = errors.New("no calls completed")
				}
				return int64(len(lat)), err
			})
			if err != nil {
				return nil, fail(p, err)
			}
			p.P50 = append(p.P50, percentile(lat, 0.50))
			p.P99 = append(p.P99, percentile(lat, 0.99))
		}
	}
	for r := range o.Rounds {
		for _, p := range g.Paths {
			fmt.Fprintf(o.Log, "proxybench: gRPC round %d/%d, saturation (%d callers): %s\n", r+1, o.Rounds, o.WrkConns, p.Name)
			n := 0
			if o.NoWrk {
				n = o.SatRequests
			}
			var rps float64
			err := cpu(p, p.CPUSat, func() (calls int64, err error) {
				rps, calls, err = grpcClosedLoop(ctx, p.op(), o.WrkConns, n, o.SatFor)
				return calls, err
			})
			if err != nil {
				return nil, fail(p, err)
			}
			p.SatRPS = append(p.SatRPS, rps)
		}
	}
	for _, n := range []string{"grpc-front", "grpc-back"} {
		if p := t.byName[n]; p != nil && p.exited() {
			return nil, fmt.Errorf("proxy %s exited during the gRPC part: %s", n, tail(p.output(), 4000))
		}
	}
	g.LoadAfter = loadAvg()
	return g, nil
}

type grpcAddrs struct{ app, goA, goB, front, back string }

// setupGRPC starts the gRPC part's processes: the attestation service (as setup starts it),
// the gRPC app, the Go HTTP/2 pair, and grpc-back and grpc-front.
func setupGRPC(ctx context.Context, o *Options, t *topology) (a grpcAddrs, err error) {
	dir := t.dir
	bin := func(n string) string { return filepath.Join(o.BinDir, n) }
	for _, n := range []string{o.ProxyBin, "attestation-service"} {
		if _, err := os.Stat(bin(n)); err != nil {
			return a, fmt.Errorf("%s: %w (run `make build`, or pass -bin)", bin(n), err)
		}
	}
	for _, p := range []*string{&a.app, &a.goA, &a.goB, &a.front, &a.back} {
		if *p, err = freePort(); err != nil {
			return a, err
		}
	}
	pk, err := newPKI(dir)
	if err != nil {
		return a, err
	}
	platform := filepath.Join(dir, "platform.pem")
	if out, err := exec.CommandContext(ctx, bin(o.ProxyBin), "sim-platform-key", "--out", platform).CombinedOutput(); err != nil {
		return a, fmt.Errorf("proxy sim-platform-key: %v: %s", err, out)
	}
	caFile := filepath.Join(dir, "attest-ca.pem")
	svc, err := t.start("attestation-service", nil, bin("attestation-service"), "--listen", "127.0.0.1:0",
		"--signing-key", filepath.Join(dir, "signing.pem"), "--signing-cert", filepath.Join(dir, "signing-cert.pem"),
		"--tls-ca-out", caFile, "--sim-platform-key", platform+".pub", "--token-lifetime", "8h")
	if err != nil {
		return a, err
	}
	issuer, err := scanLine(ctx, svc, func(s string) (string, bool) {
		_, after, ok := strings.Cut(s, "issuer=")
		if !ok || !strings.Contains(s, "listening on") {
			return "", false
		}
		return strings.Fields(after)[0], true
	})
	if err != nil {
		return a, err
	}
	policy, err := writeFile(dir, "policy.yaml", fmt.Sprintf(policyYAML, issuer, caFile, mr["front"], mr["back"], mr["third"]))
	if err != nil {
		return a, err
	}
	self, err := os.Executable()
	if err != nil {
		return a, err
	}
	type wait struct {
		p    *proc
		addr string
	}
	var waits []wait
	app, err := t.start("grpcapp", []string{RoleEnv + "=grpcapp"}, self, "-listen", a.app)
	if err != nil {
		return a, err
	}
	waits = append(waits, wait{app, a.app})
	for _, h := range []struct {
		name, listen, to string
		tls              bool
	}{{"goh2-b", a.goB, "http://" + a.app, true}, {"goh2-a", a.goA, "https://" + a.goB, false}} {
		args := []string{"-listen", h.listen, "-to", h.to, "-cert", pk.certFile, "-key", pk.keyFile, "-ca", pk.caFile}
		if h.tls {
			args = append(args, "-tls")
		}
		p, err := t.start(h.name, []string{RoleEnv + "=goh2proxy"}, self, args...)
		if err != nil {
			return a, err
		}
		waits = append(waits, wait{p, h.listen})
	}
	confs := map[string]string{
		"back": fmt.Sprintf(`inbound:
  - {name: grpc, listen: "%s", protocol: grpc, forwardTo: "%s", allow: [front]}
`, a.back, a.app),
		"front": fmt.Sprintf(`outbound:
  - {name: grpc, listen: "%s", protocol: grpc, upstream: "%s", upstreamIdentity: [back], authority: back.internal}
`, a.front, a.back),
	}
	type ready struct {
		p     *proc
		admin string
	}
	var readies []ready
	for _, name := range []string{"back", "front"} {
		adm, err := freePort()
		if err != nil {
			return a, err
		}
		cf, err := writeFile(dir, name+".yaml", fmt.Sprintf(proxyHead, platform, mr[name], issuer, caFile, policy, name, adm)+confs[name])
		if err != nil {
			return a, err
		}
		p, err := t.start("grpc-"+name, nil, bin(o.ProxyBin), "run", "--config", cf, "--log-level", "warn")
		if err != nil {
			return a, err
		}
		readies = append(readies, ready{p, adm})
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for _, w := range waits {
		if err := waitTCP(wctx, w.p, w.addr); err != nil {
			return a, err
		}
	}
	for _, r := range readies {
		if err := waitReady(wctx, r.p, r.admin); err != nil {
			return a, err
		}
	}
	return a, nil
}

func grpcCPUSum(p *GRPCPathResult, by map[string][]time.Duration) []time.Duration {
	var out []time.Duration
	for _, n := range p.Procs {
		for i, v := range by[n] {
			if i == len(out) {
				out = append(out, 0)
			}
			out[i] += v
		}
	}
	return out
}

// added is, per round, a path's percentile less grpc-direct's.
func (g *GRPCReport) added(p *GRPCPathResult, pick func(*GRPCPathResult) []time.Duration) []time.Duration {
	d := g.Path("grpc-direct")
	if d == nil || p == nil || p == d {
		return nil
	}
	return perRoundDiff(pick(p), pick(d))
}

func grpcP50(p *GRPCPathResult) []time.Duration { return p.P50 }
func grpcP99(p *GRPCPathResult) []time.Duration { return p.P99 }

// Verdicts judges the medians of same-round ratios against issue 16's targets.
func (g *GRPCReport) Verdicts(o Options) []Verdict {
	ours, gop := g.Path("grpc-ours"), g.Path("grpc-go-pair")
	if ours == nil || gop == nil {
		return nil
	}
	var v []Verdict
	x := ratios(ours.SatRPS, gop.SatRPS)
	m, _, _ := stats(x)
	v = append(v, Verdict{fmt.Sprintf("gRPC one hop, saturation ≥ %.1f× the Go HTTP/2 mTLS pair", TargetGRPCSatVsGoPair), spreadF(x, "%.2f") + "×", m >= TargetGRPCSatVsGoPair, len(x) == 0})
	x = ratios(grpcCPUSum(ours, ours.CPUSat), grpcCPUSum(gop, gop.CPUSat))
	m, _, _ = stats(x)
	v = append(v, Verdict{fmt.Sprintf("gRPC CPU per call at saturation, front + back ≤ %.1f× the Go pair", TargetGRPCCPUVsGoPair), spreadF(x, "%.2f") + "×", m <= TargetGRPCCPUVsGoPair && len(x) > 0, len(x) == 0})
	a, b := g.added(ours, grpcP50), g.added(gop, grpcP50)
	mb, _, _ := stats(b)
	x = ratios(a, b)
	m, _, _ = stats(x)
	v = append(v, Verdict{fmt.Sprintf("gRPC added latency p50 at %d calls/s ≤ %.1f× the Go pair", o.LatRate, TargetGRPCLatVsGoPair), spreadF(x, "%.2f") + "×", m <= TargetGRPCLatVsGoPair, mb <= 0 || len(x) == 0})
	return v
}

// print writes the gRPC part's table, its ratios and its verdicts.
func (g *GRPCReport) print(w io.Writer, o Options) {
	n := fmt.Sprintf("for %s", o.SatFor)
	if o.NoWrk {
		n = fmt.Sprintf("%d calls", o.SatRequests)
	}
	fmt.Fprintf(w, "\ngRPC unary (interop TestService UnaryCall, %d B each way, h2c to the first hop), %d ClientConns per path; load average %s before, %s after this part\n",
		PayloadSize, GRPCConns, g.LoadBefore, g.LoadAfter)
	fmt.Fprintf(w, "latency: fixed rate %d calls/s for %s over %d callers; saturation: Go closed loop, %d callers, %s; CPU from /proc/PID/stat of the proxies\n",
		o.LatRate, o.LatFor, o.RateConns, g.SatWorkers, n)
	fmt.Fprintf(w, "%-13s %-20s %-20s %-20s %-20s %-22s %-24s %s\n", "path", "p50 µs", "p99 µs", "added p50 µs", "added p99 µs", "saturation calls/s",
		fmt.Sprintf("CPU µs/call @%d/s", o.LatRate), "CPU µs/call @saturation")
	for _, p := range g.Paths {
		a50, a99, cl, cs := "-", "-", "-", "-"
		if x := g.added(p, grpcP50); x != nil {
			a50 = spreadD(x)
		}
		if x := g.added(p, grpcP99); x != nil {
			a99 = spreadD(x)
		}
		if len(p.Procs) > 0 {
			cl, cs = spreadD(grpcCPUSum(p, p.CPULat)), spreadD(grpcCPUSum(p, p.CPUSat))
		}
		fmt.Fprintf(w, "%-13s %-20s %-20s %-20s %-20s %-22s %-24s %s\n", p.Name, spreadD(p.P50), spreadD(p.P99), a50, a99, spreadF(p.SatRPS, "%.0f"), cl, cs)
	}
	for _, p := range g.Paths {
		fmt.Fprintf(w, "  %-13s %s\n", p.Name, p.Desc)
	}
	if ours, gop := g.Path("grpc-ours"), g.Path("grpc-go-pair"); ours != nil && gop != nil {
		fmt.Fprintf(w, "ours / Go pair: added p99 %s×, CPU per call at %d/s %s× (not judged)\n",
			spreadF(ratios(g.added(ours, grpcP99), g.added(gop, grpcP99)), "%.2f"), o.LatRate,
			spreadF(ratios(grpcCPUSum(ours, ours.CPULat), grpcCPUSum(gop, gop.CPULat)), "%.2f"))
	}
	fmt.Fprintf(w, "\ngRPC targets (issue #16), judged on the median of same-round ratios:\n")
	met := 0
	vs := g.Verdicts(o)
	for _, v := range vs {
		s := "MISSED"
		switch {
		case v.Unresolved:
			s = "UNRESOLVED (baseline noisier than the difference)"
		case v.Pass:
			s = "MET"
			met++
		}
		fmt.Fprintf(w, "  %-6s %-66s %s\n", s, v.Target, v.Value)
	}
	fmt.Fprintf(w, "%d of %d gRPC targets met\n", met, len(vs))
}
