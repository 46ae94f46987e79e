# Proxy performance (issues 3 and 13): the proxybench harness and the proxy's Go benchmarks.

BENCH_PKGS += ./proxy/...

# Extra flags for proxybench, e.g. PROXYBENCH_ARGS='-rounds 2 -skip redis', or '-only grpc' for the
# gRPC part alone (issue 16; see bin/proxybench -h;
# -quick is a test of the harness itself).
PROXYBENCH_ARGS ?=

# The proxy the harness measures: the build the injector injects by default, the lean one
# without the xDS client (-tags noxds). The report says whether the binary links xDS.
PROXYBENCH_PROXY_TAGS ?= noxds

.PHONY: bench-proxy
bench-proxy: build ## Attested pair vs Go, nginx, HAProxy mTLS pairs; TCP pair vs stunnel, HAProxy (redis); ratios vs issue #13 targets (docs/performance.md)
	@./scripts/install-deps.sh
	$(GOBUILD) -tags '$(PROXYBENCH_PROXY_TAGS)' -o bin/proxy-bench ./proxy/cmd/proxy
	@$(GO) build -trimpath -o bin/proxybench ./test/bench/cmd/proxybench
	./bin/proxybench -bin bin -proxy-bin proxy-bench -out test/artifacts $(PROXYBENCH_ARGS)
