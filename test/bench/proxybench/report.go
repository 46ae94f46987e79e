package proxybench

import (
	"fmt"
	"io"
	"time"
)

// Targets of the proxy's issue (issue 3, "Performance"). They are printed, never adjusted.
const (
	TargetAddedP50   = 100 * time.Microsecond
	TargetAddedP99   = 200 * time.Microsecond
	TargetVsNginx    = 0.85
	TargetVsGoRP     = 1.2
	TargetRedisRatio = 0.8
	TargetRSSKiB     = 20 << 10
)

// Verdict is one target's outcome. Unresolved means the figure could not be measured: an
// added latency below zero says the baseline's own noise exceeded the difference.
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

func spreadF(xs []float64, format string) string {
	m, lo, hi := stats(xs)
	if len(xs) < 2 {
		return fmt.Sprintf(format, m)
	}
	return fmt.Sprintf(format+" ["+format+"–"+format+"]", m, lo, hi)
}

// added returns, per round, (p − base) / hops for the percentile chosen by pick.
func (r *Report) added(p *PathResult, pick func(*PathResult) []time.Duration) []time.Duration {
	b := r.Path(p.Base)
	if b == nil || p.Hops == 0 {
		return nil
	}
	pv, bv := pick(p), pick(b)
	var out []time.Duration
	for i := range min(len(pv), len(bv)) {
		out = append(out, (pv[i]-bv[i])/time.Duration(p.Hops))
	}
	return out
}

// ratio returns, per round, a's saturation throughput over b's.
func (r *Report) ratio(a, b string) []float64 {
	pa, pb := r.Path(a), r.Path(b)
	if pa == nil || pb == nil {
		return nil
	}
	var out []float64
	for i := range min(len(pa.SatRPS), len(pb.SatRPS)) {
		out = append(out, pa.SatRPS[i]/pb.SatRPS[i])
	}
	return out
}

func p50(p *PathResult) []time.Duration { return p.P50 }
func p99(p *PathResult) []time.Duration { return p.P99 }

// Verdicts judges the medians over rounds against the targets.
func (r *Report) Verdicts() []Verdict {
	var v []Verdict
	for _, name := range []string{"ours-public", "ours-1hop", "ours-2hop"} {
		p := r.Path(name)
		if p == nil {
			continue
		}
		a50, a99 := r.added(p, p50), r.added(p, p99)
		m50, _, _ := stats(a50)
		m99, _, _ := stats(a99)
		v = append(v,
			Verdict{fmt.Sprintf("%s: added latency per hop p50 ≤ %s", name, us(TargetAddedP50)+" µs"), spreadD(a50) + " µs", m50 <= TargetAddedP50, m50 < 0},
			Verdict{fmt.Sprintf("%s: added latency per hop p99 ≤ %s", name, us(TargetAddedP99)+" µs"), spreadD(a99) + " µs", m99 <= TargetAddedP99, m99 < 0})
	}
	for _, c := range []struct {
		a, b   string
		target float64
	}{{"ours-public", "nginx", TargetVsNginx}, {"ours-public", "go-rp", TargetVsGoRP}, {"ours-1hop", "nginx", TargetVsNginx}, {"ours-1hop", "go-rp", TargetVsGoRP}} {
		x := r.ratio(c.a, c.b)
		if x == nil {
			continue
		}
		m, _, _ := stats(x)
		v = append(v, Verdict{fmt.Sprintf("%s throughput at saturation ≥ %.2f× %s", c.a, c.target, c.b), spreadF(x, "%.2f") + "×", m >= c.target, false})
	}
	for _, rr := range r.Redis {
		var x []float64
		for i := range min(len(rr.Direct), len(rr.Pair)) {
			x = append(x, rr.Pair[i]/rr.Direct[i])
		}
		m, _, _ := stats(x)
		v = append(v, Verdict{fmt.Sprintf("redis %s through the pair ≥ %.1f× direct (-P 1)", rr.Test, TargetRedisRatio), spreadF(x, "%.2f") + "×", m >= TargetRedisRatio, false})
	}
	for _, c := range []struct{ path, proc string }{{"ours-public", "edge"}, {"ours-1hop", "front"}, {"ours-1hop", "back"}, {"ours-2hop", "third"}} {
		p := r.Path(c.path)
		if p == nil || p.RSSKiB[c.proc] == nil {
			continue
		}
		m, _, _ := stats(p.RSSKiB[c.proc])
		v = append(v, Verdict{fmt.Sprintf("%s RSS at %d req/s ≤ %d MiB", c.proc, r.Options.Rate, TargetRSSKiB>>10), spreadMiB(p.RSSKiB[c.proc]) + " MiB", m <= TargetRSSKiB, false})
	}
	return v
}

func spreadMiB(xs []int64) string {
	m, lo, hi := stats(xs)
	f := func(k int64) string { return fmt.Sprintf("%.1f", float64(k)/1024) }
	if len(xs) < 2 {
		return f(m)
	}
	return fmt.Sprintf("%s [%s–%s]", f(m), f(lo), f(hi))
}

// Print writes the tables and the verdicts.
func (r *Report) Print(w io.Writer) {
	o := r.Options
	sat := fmt.Sprintf("wrk -t%d -c%d -d%s", o.WrkThreads, o.WrkConns, o.SatFor)
	if o.NoWrk || !haveWrk() {
		sat = fmt.Sprintf("Go closed loop, %d requests over %d connections", o.SatRequests, o.WrkConns)
	}
	fmt.Fprintf(w, "proxybench: GET, %d B response, HTTP/1.1 keep-alive, loopback, %d cores; %d rounds, each figure median [min–max]\n", PayloadSize, numCPU(), o.Rounds)
	fmt.Fprintf(w, "latency: Go fixed-rate generator, %d req/s for %s over %d connections per path and round; memory and CPU: the same at %d req/s for %s; saturation: %s\n\n",
		o.LatRate, o.LatFor, o.RateConns, o.Rate, o.RateFor, sat)
	fmt.Fprintf(w, "%-12s %-24s %-24s %-24s %-24s %s\n", "path", "p50 µs", "p99 µs", "added p50/hop µs", "added p99/hop µs", "saturation req/s")
	for _, p := range r.Paths {
		a50, a99 := "-", "-"
		if x := r.added(p, p50); x != nil {
			a50 = spreadD(x)
		}
		if x := r.added(p, p99); x != nil {
			a99 = spreadD(x)
		}
		fmt.Fprintf(w, "%-12s %-24s %-24s %-24s %-24s %s\n", p.Name, spreadD(p.P50), spreadD(p.P99), a50, a99, spreadF(p.SatRPS, "%.0f"))
	}
	fmt.Fprintln(w)
	for _, p := range r.Paths {
		fmt.Fprintf(w, "  %-12s %s", p.Name, p.Desc)
		if p.Hops > 0 {
			fmt.Fprintf(w, "  (added = (this − %s) / %d)", p.Base, p.Hops)
		}
		fmt.Fprintln(w)
	}
	rate := fmt.Sprintf("@%d/s", o.Rate)
	fmt.Fprintf(w, "\n%-12s %-16s %-20s %-18s %-20s %-10s %-22s %s\n", "path", "process", "achieved req/s "+rate, "VmRSS MiB "+rate, "of it RssAnon MiB", "VmHWM MiB", "CPU µs/req "+rate, "CPU µs/req @saturation")
	for _, p := range r.Paths {
		ach := p.Achieved
		for _, n := range p.Procs {
			if p.RSSKiB[n] == nil {
				continue
			}
			fmt.Fprintf(w, "%-12s %-16s %-20s %-18s %-20s %-10s %-22s %s\n", p.Name, n, spreadF(ach, "%.0f"), spreadMiB(p.RSSKiB[n]), spreadMiB(p.AnonKiB[n]), fmt.Sprintf("%.1f", float64(p.HWMKiB[n])/1024),
				spreadD(p.CPURate[n]), spreadD(p.CPUSat[n]))
		}
	}
	if len(r.Redis) > 0 {
		fmt.Fprintf(w, "\nredis-benchmark -P 1 -c %d -n %d: requests/s\n%-6s %-24s %-24s %s\n", o.RedisC, o.RedisN, "test", "direct", "through the pair", "pair/direct")
		for _, rr := range r.Redis {
			var x []float64
			for i := range min(len(rr.Direct), len(rr.Pair)) {
				x = append(x, rr.Pair[i]/rr.Direct[i])
			}
			fmt.Fprintf(w, "%-6s %-24s %-24s %s\n", rr.Test, spreadF(rr.Direct, "%.0f"), spreadF(rr.Pair, "%.0f"), spreadF(x, "%.2f"))
		}
	}
	fmt.Fprintf(w, "\ntargets (issue 3), judged on the median:\n")
	for _, v := range r.Verdicts() {
		s := "MISS"
		switch {
		case v.Unresolved:
			s = "UNRESOLVED (baseline noisier than the difference)"
		case v.Pass:
			s = "PASS"
		}
		fmt.Fprintf(w, "  %-4s %-62s %s\n", s, v.Target, v.Value)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "\nnote: %s\n", n)
	}
	fmt.Fprintf(w, "\nelapsed %s\n", r.Elapsed.Round(time.Second))
}
