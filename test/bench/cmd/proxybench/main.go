// Command proxybench measures the Countersign proxy against the direct path, nginx and a plain
// Go reverse proxy in one run and prints figures, ratios and PASS/MISS against the proxy's
// performance targets (docs/performance.md). `make bench-proxy` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
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
	fs.StringVar(&o.BinDir, "bin", "bin", "directory holding the built proxy and attestation-service")
	fs.IntVar(&o.LatRate, "lat-rate", 100, "fixed request rate of the latency phase (requests/s)")
	fs.DurationVar(&o.LatFor, "lat-for", 6*time.Second, "latency phase duration per path and round")
	fs.IntVar(&o.Rate, "rate", 1000, "fixed request rate of the memory and CPU phase (requests/s)")
	fs.DurationVar(&o.RateFor, "rate-for", 3*time.Second, "memory and CPU phase duration per path and round")
	fs.IntVar(&o.RateConns, "rate-conns", 8, "connections of the fixed-rate generator")
	fs.DurationVar(&o.SatFor, "sat-for", 5*time.Second, "wrk duration per path and round")
	fs.IntVar(&o.WrkThreads, "wrk-threads", 2, "wrk -t")
	fs.IntVar(&o.WrkConns, "wrk-conns", 32, "wrk -c")
	fs.IntVar(&o.Rounds, "rounds", 3, "rounds; each figure is the median over them, with min and max")
	fs.IntVar(&o.Workers, "nginx-workers", 0, "nginx worker_processes (default: the core count, the Go processes' GOMAXPROCS)")
	fs.IntVar(&o.RedisN, "redis-n", 100000, "redis-benchmark -n")
	fs.IntVar(&o.RedisC, "redis-c", 50, "redis-benchmark -c")
	skip := fs.String("skip", "", "comma-separated paths to skip (nginx, go-rp, ours-2hop, redis, ...)")
	timeout := fs.Duration("timeout", 30*time.Minute, "stop everything after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.Skip = map[string]bool{}
	for _, s := range strings.Split(*skip, ",") {
		if s != "" {
			o.Skip[s] = true
		}
	}
	o.Log = os.Stderr
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	rep, err := proxybench.Run(ctx, o)
	if err != nil {
		return err
	}
	rep.Print(os.Stdout)
	return nil
}
