// Command proxybench measures the Countersign proxy's attested pair against Go, nginx and
// HAProxy mTLS pairs, and its TCP pair against stunnel and HAProxy TCP-TLS pairs, in one run,
// and prints figures and ratios, MET or MISSED against the targets of issue #13
// (docs/performance.md). It writes the report to -out too. `make bench-proxy` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/countersign/countersign/test/bench/proxybench"
)

func main() {
	if ok, err := proxybench.RunRole(); ok {
		if err != nil {
			fmt.Fprintln(os.Stderr, "proxybench:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "proxybench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	var o proxybench.Options
	fs := flag.NewFlagSet("proxybench", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "a test of the harness: one round of a few hundred requests per path (figures are not figures)")
	fs.StringVar(&o.BinDir, "bin", "bin", "directory holding the built proxy and attestation-service")
	fs.StringVar(&o.ProxyBin, "proxy-bin", "proxy", "the proxy binary in -bin to measure (bench-proxy: the build the injector injects by default)")
	fs.IntVar(&o.LatRate, "lat-rate", 100, "fixed request rate of the latency phase (requests/s)")
	fs.DurationVar(&o.LatFor, "lat-for", 5*time.Second, "latency phase duration per path and round")
	fs.IntVar(&o.Rate, "rate", 1000, "fixed request rate of the memory and CPU phase (requests/s)")
	fs.DurationVar(&o.RateFor, "rate-for", 3*time.Second, "memory and CPU phase duration per path and round")
	fs.IntVar(&o.RateConns, "rate-conns", 8, "connections of the fixed-rate generator")
	fs.DurationVar(&o.SatFor, "sat-for", 4*time.Second, "wrk duration per path and round")
	fs.IntVar(&o.WrkThreads, "wrk-threads", 2, "wrk -t")
	fs.IntVar(&o.WrkConns, "wrk-conns", 32, "wrk -c")
	fs.IntVar(&o.Rounds, "rounds", 3, "rounds; each figure is the median over them, with min and max")
	fs.IntVar(&o.Workers, "nginx-workers", 0, "nginx worker_processes (default: the core count, the Go processes' GOMAXPROCS)")
	fs.IntVar(&o.RedisN, "redis-n", 50000, "redis-benchmark -n at -P 1")
	fs.IntVar(&o.RedisNPipe, "redis-n-pipe", 400000, "redis-benchmark -n at -P 16")
	fs.IntVar(&o.RedisC, "redis-c", 50, "redis-benchmark -c")
	fs.IntVar(&o.WireN, "wire-n", 200, "sequential requests of the bytes-on-the-wire measurement")
	out := fs.String("out", "test/artifacts", "directory the report is also written to (bench-proxy-<time>.txt and bench-proxy-latest.txt); empty: none")
	skip := fs.String("skip", "", "comma-separated paths to skip (nginx-pair, haproxy-pair, ours-2hop, wire, redis, grpc, ...)")
	only := fs.String("only", "", "comma-separated paths and parts to run, the rest skipped (e.g. redis; ours-1hop,go-pair for RSS and CPU; grpc alone: the gRPC part on its own processes)")
	timeout := fs.Duration("timeout", 30*time.Minute, "stop everything after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *quick {
		q := proxybench.Quick(o.BinDir)
		q.ProxyBin = o.ProxyBin
		o = q
	}
	o.Skip = map[string]bool{}
	for _, s := range strings.Split(*skip, ",") {
		if s != "" {
			o.Skip[s] = true
		}
	}
	o.Only = map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		if s != "" {
			o.Only[s] = true
		}
	}
	o.Log = os.Stderr
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	rep, err := proxybench.Run(ctx, o)
	if err != nil {
		return err
	}
	text := rep.String()
	fmt.Print(text)
	if *out != "" {
		if err := os.MkdirAll(*out, 0o755); err != nil {
			return err
		}
		for _, name := range []string{"bench-proxy-" + rep.Started.UTC().Format("20060102T150405Z") + ".txt", "bench-proxy-latest.txt"} {
			if err := os.WriteFile(filepath.Join(*out, name), []byte(text), 0o644); err != nil {
				return err
			}
		}
		fmt.Fprintf(os.Stderr, "proxybench: report written to %s\n", filepath.Join(*out, "bench-proxy-latest.txt"))
	}
	return nil
}
