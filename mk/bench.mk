# Proxy performance (issue 3): the proxybench harness and the proxy's Go benchmarks.

BENCH_PKGS += ./proxy/...

# Extra flags for proxybench, e.g. PROXYBENCH_ARGS='-rounds 2 -rate-for 10s' (see -h).
PROXYBENCH_ARGS ?=

.PHONY: bench-proxy
bench-proxy: build ## Proxy vs direct, nginx and a Go reverse proxy on loopback: latency, throughput, RSS, CPU, redis (docs/performance.md)
	@$(GO) build -trimpath -o bin/proxybench ./test/bench/cmd/proxybench
	./bin/proxybench -bin bin $(PROXYBENCH_ARGS)
