# Countersign: sidecar attestation proxy. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X github.com/countersign/countersign/internal/version.Version=$(VERSION)
GOBUILD  := CGO_ENABLED=1 $(GO) build -trimpath -ldflags '$(LDFLAGS)'
CACHE    := $(CURDIR)/.cache
export COUNTERSIGN_CACHE := $(CACHE)

# Binaries: name -> main package. Component makefiles in mk/ append to BINARIES.
BINARIES := attestation-service=./attestation/cmd/attestation-service proxy=./proxy/cmd/proxy

# Extra prerequisites of `make test` (fetched libraries, test binaries); mk/*.mk append.
TEST_DEPS :=
# Steps `make test` runs after the parallel tests, one at a time (measurements that need the
# machine to themselves); mk/*.mk append.
TEST_AFTER :=
# Packages whose benchmarks `make bench` runs; mk/*.mk append.
BENCH_PKGS := ./attestation/...

-include mk/*.mk

.PHONY: help
help: ## List the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z_.-]+:.*## /{printf "  \033[36m%-16s\033[0m %s\n",$$1,$$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build every binary into bin/
	@mkdir -p bin
	@for b in $(BINARIES); do name=$${b%%=*}; pkg=$${b#*=}; \
		echo "  build bin/$$name"; $(GOBUILD) -o bin/$$name $$pkg || exit 1; done

.PHONY: lint
lint: ## gofmt, go vet and staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go'; git ls-files -o --exclude-standard '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags cluster ./test/node/ ./test/cluster/
	$(GO) vet -tags noxds ./proxy/...
	$(GO) tool staticcheck ./...

.PHONY: deps
deps: ## Install the Debian packages the tests and the demo use (scripts/deps.d; a no-op when present)
	@./scripts/install-deps.sh

.PHONY: test
test: deps lint build $(TEST_DEPS) ## The README's test command: lint, build, every unit, fuzz-seed and integration test
	$(GO) test -race -count=1 -timeout 30m ./...
	@echo "the lean proxy build (-tags noxds), which proxy-sim images hold:"
	$(GO) test -count=1 -timeout 10m -tags noxds ./proxy/...
	@for t in $(TEST_AFTER); do $(MAKE) --no-print-directory $$t || exit 1; done

.PHONY: test-short
test-short: ## Unit tests only (no real servers), quick
	$(GO) test -short -count=1 ./...

.PHONY: bench
bench: build $(TEST_DEPS) ## Benchmarks that print ratios against a baseline
	$(GO) test -run '^$$' -bench . $(BENCH_PKGS)

.PHONY: demo
demo: deps build onnxruntime ## Run the platform locally (Ctrl-C stops it); SMOKE=1 runs a scripted check and exits
	@./scripts/demo.sh

.PHONY: demo-smoke
demo-smoke: ## make demo with SMOKE=1: start everything, check it end to end, stop
	@$(MAKE) --no-print-directory demo SMOKE=1

.PHONY: clean
clean: ## Remove built binaries (keeps the download cache)
	rm -rf bin
