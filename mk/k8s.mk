# Injector and chart (issue 5): binary, and the real-API-server test binaries built from the Go
# module proxy into .cache/k8s/bin (kube-apiserver v1.37.2, etcd v3.6.16, helm v3.22.0).

BINARIES  += injector=./injector/cmd/injector
TEST_DEPS += k8s-deps
BENCH_PKGS += ./injector/webhook

.PHONY: k8s-deps
k8s-deps: ## Build kube-apiserver, etcd and helm for the API-server tests into .cache/k8s (cached; ~10 min cold)
	@./test/k8s/build.sh

.PHONY: test-k8s
test-k8s: k8s-deps ## Only the chart and real API-server tests
	$(GO) test -race -count=1 -v -run 'TestChart|TestAPIServer' ./test/k8s/
