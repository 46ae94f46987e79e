package proxybench

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Targets of the proxy's performance issue (#13, "Targets: ratios in one run of
// make bench-proxy"). They are printed and judged, never adjusted.
const (
	TargetSatVsGoPair = 0.8 // one attested hop's saturation req/s, at least this × the Go mTLS pair's
	TargetCPUVsGoPair = 1.3 // CPU per request, front + back, at most this × the Go pair's A + B
	TargetLatVsGoPair = 1.5 // added latency p50 and p99, at most this × the Go pair's
	TargetTwoHops     = 2.0 // two hops' added latency, at most this × one hop's
	TargetWireBytes   = 1024
	TargetRedisVsPeer = 1.0 // our TCP pair's req/s, at least this × the HAProxy and stunnel pairs'
	TargetRSSKiB      = 20 << 10
)

// Verdict is one target's outcome. Unresolved means the figure could not be measured: an
// added latency at or below zero says the baseline's own noise exceeded the difference.
type Verdict struct {
	Target     string
	Value      string
	Pass       bool
	Unresolved bool
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d)/float64(time.Microsecond)) }

func spreadD(xs []time.Duration) string {
	m, lo, hi := stats(xs)
	if len(xs) < 2 {
		return us(m)
	}
	return fmt.Sprintf("%s [%s–%s]", us(m), us(lo), us(hi))
}

func spreadNs(xs []time.Duration) string {
	f := make([]float64, len(xs))
	for i, x := range xs {
		f[i] = float64(x.Nanoseconds())
	}
	return spreadF(f, "%.0f")
}

func spreadF(xs []float64, format string) string {
	m, lo, hi := stats(xs)
	if len(xs) < 2 {
		return fmt.Sprintf(format, m)
	}
	return fmt.Sprintf(format+" ["+format+"–"+format+"]", m, lo, hi)
}

func spreadMiB(xs []int64) string {
	m, lo, hi := stats(xs)
	f := func(k int64) string { return fmt.Sprintf("%.1f", float64(k)/1024) }
	if len(xs) < 2 {
		return f(m)
	}
	return fmt.Sprintf("%s [%s–%s]", f(m), f(lo), f(hi))
}

// added returns, per round, the path's percentile (picked by pick) less its base's: the
// latency its proxies add, all hops together.
func (r *Report) added(p *PathResult, pick func(*PathResult) []time.Duration) []time.Duration {
	if p == nil {
		return nil
	}
	b := r.Path(p.Base)
	if b == nil || p.Hops == 0 {
		return nil
	}
	return perRoundDiff(pick(p), pick(b))
}

// perRoundDiff is a[i] - b[i] for the rounds both have.
func perRoundDiff(a, b []time.Duration) []time.Duration {
	var out []time.Duration
	for i := range min(len(a), len(b)) {
		out = append(out, a[i]-b[i])
	}
	return out
}

func p50(p *PathResult) []time.Duration { return p.P50 }
func p99(p *PathResult) []time.Duration { return p.P99 }

// cpuSum is, per round, the CPU per request of all the path's proxy processes together.
func cpuSum(p *PathResult, by map[string][]time.Duration) []time.Duration {
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

// ratios divides a by b round by round.
func ratios[T int64 | float64 | time.Duration](a, b []T) []float64 {
	var out []float64
	for i := range min(len(a), len(b)) {
		if b[i] != 0 {
			out = append(out, float64(a[i])/float64(b[i]))
		}
	}
	return out
}

func (r *Report) wire(name string) *WireResult {
	for i := range r.Wire {
		if r.Wire[i].Path == name {
			return &r.Wire[i]
		}
	}
	return nil
}

// WireAdded is the bytes per request our pair puts between its proxies beyond what the Go
// pair puts there (request and response together), and whether both were measured.
func (r *Report) WireAdded() (float64, bool) {
	g, o := r.wire("go-pair"), r.wire("ours-1hop")
	if g == nil || o == nil {
		return 0, false
	}
	return (o.Up + o.Down) - (g.Up + g.Down), true
}

// Verdicts judges the medians over rounds of same-round ratios against the targets.
func (r *Report) Verdicts() []Verdict {
	var v []Verdict
	ours, gop := r.Path("ours-1hop"), r.Path("go-pair")
	add := func(target, value string, pass, unresolved bool) {
		v = append(v, Verdict{target, value, pass, unresolved})
	}
	if ours != nil && gop != nil {
		x := ratios(ours.SatRPS, gop.SatRPS)
		m, _, _ := stats(x)
		add(fmt.Sprintf("one attested hop, saturation ≥ %.1f× the Go mTLS pair", TargetSatVsGoPair), spreadF(x, "%.2f")+"×", m >= TargetSatVsGoPair, len(x) == 0)
		x = ratios(cpuSum(ours, ours.CPURate), cpuSum(gop, gop.CPURate))
		m, _, _ = stats(x)
		add(fmt.Sprintf("CPU per request at %d req/s, front + back ≤ %.1f× the Go pair", r.Options.Rate, TargetCPUVsGoPair), spreadF(x, "%.2f")+"×", m <= TargetCPUVsGoPair && len(x) > 0, len(x) == 0)
		for _, q := range []struct {
			name string
			pick func(*PathResult) []time.Duration
		}{{"p50", p50}, {"p99", p99}} {
			a, b := r.added(ours, q.pick), r.added(gop, q.pick)
			mb, _, _ := stats(b)
			x := ratios(a, b)
			m, _, _ := stats(x)
			add(fmt.Sprintf("added latency %s at %d req/s ≤ %.1f× the Go pair", q.name, r.Options.LatRate, TargetLatVsGoPair), spreadF(x, "%.2f")+"×", m <= TargetLatVsGoPair, mb <= 0 || len(x) == 0)
		}
	}
	if two := r.Path("ours-2hop"); two != nil && ours != nil {
		for _, q := range []struct {
			name string
			pick func(*PathResult) []time.Duration
		}{{"p50", p50}, {"p99", p99}} {
			a, b := r.added(two, q.pick), r.added(ours, q.pick)
			mb, _, _ := stats(b)
			x := ratios(a, b)
			m, _, _ := stats(x)
			add(fmt.Sprintf("two hops' added latency %s ≤ %.1f× one hop's", q.name, TargetTwoHops), spreadF(x, "%.2f")+"×", m <= TargetTwoHops, mb <= 0 || len(x) == 0)
		}
	}
	if b, ok := r.WireAdded(); ok {
		add(fmt.Sprintf("bytes added on the wire per hop (request + response) ≤ %d", TargetWireBytes), fmt.Sprintf("%.0f B", b), b <= TargetWireBytes, false)
	}
	for _, rr := range r.Redis {
		for _, peer := range []string{"haproxy-pair", "stunnel-pair"} {
			x := ratios(rr.RPS["ours-tcp"], rr.RPS[peer])
			m, _, _ := stats(x)
			add(fmt.Sprintf("redis %s -P %d, our TCP pair ≥ %.1f× the %s", rr.Test, rr.Pipeline, TargetRedisVsPeer, peer), spreadF(x, "%.2f")+"×", m >= TargetRedisVsPeer, len(x) == 0)
		}
	}
	if ours != nil {
		for _, n := range ours.Procs {
			if ours.RSSKiB[n] == nil {
				continue
			}
			m, _, _ := stats(ours.RSSKiB[n])
			add(fmt.Sprintf("%s RSS at %d req/s ≤ %d MiB", n, r.Options.Rate, TargetRSSKiB>>10), spreadMiB(ours.RSSKiB[n])+" MiB", m <= TargetRSSKiB, false)
		}
	}
	return v
}

// Print writes the tables and the verdicts.
func (r *Report) Print(w io.Writer) {
	o := r.Options
	sat := fmt.Sprintf("wrk -t%d -c%d -d%s", o.WrkThreads, o.WrkConns, o.SatFor)
	if o.NoWrk || !haveWrk() {
		sat = fmt.Sprintf("Go closed loop, %d requests over %d connections", o.SatRequests, o.WrkConns)
	}
	fmt.Fprintf(w, "proxybench %s UTC, commit %s, proxy %s\n", r.Started.UTC().Format("2006-01-02 15:04"), r.Commit, r.ProxyBuild)
	fmt.Fprintf(w, "load average: %s before, %s after; %d cores\n", r.LoadBefore, r.LoadAfter, numCPU())
	if o.grpcOnly() {
		r.GRPC.print(w, o)
		fmt.Fprintf(w, "\nelapsed %s\n", r.Elapsed.Round(time.Second))
		return
	}
	fmt.Fprintf(w, "GET, %d B response, HTTP/1.1 keep-alive, loopback; %d rounds interleaved, each figure median [min–max], ratios per round then median\n", PayloadSize, o.Rounds)
	fmt.Fprintf(w, "latency: Go fixed-rate generator, %d req/s for %s over %d connections; CPU and memory: the same at %d req/s for %s; saturation: %s\n\n",
		o.LatRate, o.LatFor, o.RateConns, o.Rate, o.RateFor, sat)
	fmt.Fprintf(w, "%-13s %-20s %-20s %-20s %-22s %-22s %s\n", "path", "p50 µs", "p99 µs", "added p50 µs", "added p99 µs", "saturation req/s", "CPU µs/req, all proxies @"+fmt.Sprint(o.Rate)+"/s")
	for _, p := range r.Paths {
		a50, a99, cpu := "-", "-", "-"
		if x := r.added(p, p50); x != nil {
			a50 = spreadD(x)
		}
		if x := r.added(p, p99); x != nil {
			a99 = spreadD(x)
		}
		if p.Base != "" {
			cpu = spreadD(cpuSum(p, p.CPURate))
		}
		fmt.Fprintf(w, "%-13s %-20s %-20s %-20s %-22s %-22s %s\n", p.Name, spreadD(p.P50), spreadD(p.P99), a50, a99, spreadF(p.SatRPS, "%.0f"), cpu)
	}
	fmt.Fprintln(w)
	for _, p := range r.Paths {
		fmt.Fprintf(w, "  %-13s %s", p.Name, p.Desc)
		if p.Hops > 0 {
			fmt.Fprintf(w, "  (added = this − %s, %d hop(s))", p.Base, p.Hops)
		}
		fmt.Fprintln(w)
	}
	rate := fmt.Sprintf("@%d/s", o.Rate)
	fmt.Fprintf(w, "\n%-13s %-12s %-20s %-18s %-18s %-10s %-20s %s\n", "path", "process", "achieved req/s "+rate, "VmRSS MiB "+rate, "of it RssAnon MiB", "VmHWM MiB", "CPU µs/req "+rate, "CPU µs/req @saturation")
	for _, p := range r.Paths {
		for _, n := range p.Procs {
			if p.RSSKiB[n] == nil {
				continue
			}
			fmt.Fprintf(w, "%-13s %-12s %-20s %-18s %-18s %-10s %-20s %s\n", p.Name, n, spreadF(p.Achieved, "%.0f"), spreadMiB(p.RSSKiB[n]), spreadMiB(p.AnonKiB[n]),
				fmt.Sprintf("%.1f", float64(p.HWMKiB[n])/1024), spreadD(p.CPURate[n]), spreadD(p.CPUSat[n]))
		}
	}
	if len(r.Wire) > 0 {
		fmt.Fprintf(w, "\nbytes between the two proxies per request (TLS records included; %d sequential requests on a warm connection, counted by a relay between them):\n", o.WireN)
		fmt.Fprintf(w, "%-13s %-14s %-14s %-10s %s\n", "pair", "request B", "response B", "total B", "connections opened while counting")
		for _, x := range r.Wire {
			fmt.Fprintf(w, "%-13s %-14.0f %-14.0f %-10.0f %d\n", x.Path, x.Up, x.Down, x.Up+x.Down, x.NewConns)
		}
		if b, ok := r.WireAdded(); ok {
			fmt.Fprintf(w, "added by the attested hop: %.0f B per request\n", b)
		}
	}
	if len(r.Redis) > 0 {
		fmt.Fprintf(w, "\nredis-benchmark -c %d (-n %d at -P 1, %d at -P 16): requests/s\n", o.RedisC, o.RedisN, o.RedisNPipe)
		fmt.Fprintf(w, "%-10s", "test")
		for _, p := range redisPaths {
			fmt.Fprintf(w, " %-26s", p)
		}
		fmt.Fprintf(w, " %-20s %s\n", "ours/haproxy", "ours/stunnel")
		for _, rr := range r.Redis {
			fmt.Fprintf(w, "%-10s", fmt.Sprintf("%s -P %d", rr.Test, rr.Pipeline))
			for _, p := range redisPaths {
				fmt.Fprintf(w, " %-26s", spreadF(rr.RPS[p], "%.0f"))
			}
			fmt.Fprintf(w, " %-20s %s\n", spreadF(ratios(rr.RPS["ours-tcp"], rr.RPS["haproxy-pair"]), "%.2f"), spreadF(ratios(rr.RPS["ours-tcp"], rr.RPS["stunnel-pair"]), "%.2f"))
		}
	}
	if len(r.RedisCPU) > 0 {
		fmt.Fprintf(w, "\nCPU per Redis request (SET and GET runs together), the path's processes (ns):\n%-10s", "pipeline")
		for _, p := range redisPaths {
			fmt.Fprintf(w, " %-26s", p)
		}
		fmt.Fprintf(w, " %s\n", "ours/haproxy")
		for _, pipe := range []int{1, 16} {
			fmt.Fprintf(w, "%-10s", fmt.Sprintf("-P %d", pipe))
			for _, p := range redisPaths {
				fmt.Fprintf(w, " %-26s", spreadNs(r.RedisCPU[p][pipe]))
			}
			fmt.Fprintf(w, " %s\n", spreadF(ratios(r.RedisCPU["ours-tcp"][pipe], r.RedisCPU["haproxy-pair"][pipe]), "%.2f"))
		}
	}
	fmt.Fprintf(w, "\ntargets (issue #13), judged on the median of same-round ratios:\n")
	met := 0
	vs := r.Verdicts()
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
	fmt.Fprintf(w, "%d of %d targets met\n", met, len(vs))
	if r.GRPC != nil {
		r.GRPC.print(w, o)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "\nnote: %s\n", n)
	}
	fmt.Fprintf(w, "\nelapsed %s\n", r.Elapsed.Round(time.Second))
}

// String is the printed report.
func (r *Report) String() string {
	var b strings.Builder
	r.Print(&b)
	return b.String()
}
