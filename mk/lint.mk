# The checks `make lint` adds to gofmt, vet and staticcheck (issue 14): no dead code, and no
# new long function. They are prerequisites of lint, so the Makefile's recipe stays as it is.

# Functions longer than this many lines fail `make lint` unless internal/tools/funclen/allow.txt
# lists them (the long functions the tree had when the check came in; they may only shrink).
FUNCLEN_MAX ?= 80
FUNCLEN_ALLOW := internal/tools/funclen/allow.txt

# Findings deadcode may report that are not this check's to delete: test/cluster is a library
# for cluster tests (docs/cluster.md) that no test imports yet. Remove an entry once it is dealt
# with.
DEADCODE_IGNORE := ^test/cluster/cluster\.go:

lint: lint-deadcode lint-funclen lint-literals

.PHONY: lint-deadcode
lint-deadcode: ## Unreachable functions (deadcode, tests included as roots) and staticcheck's unused check
	@out=$$($(GO) tool deadcode -test -tags cluster ./... | grep -Ev '$(DEADCODE_IGNORE)'); \
		if [ -n "$$out" ]; then echo "dead code (delete it, or move a test-only helper to a _test.go file):"; echo "$$out"; exit 1; fi
	$(GO) tool staticcheck -checks U1000 ./...

.PHONY: lint-funclen
lint-funclen: ## Functions over FUNCLEN_MAX lines that the allowlist does not hold (or that grew)
	@$(GO) run ./internal/tools/funclen -max $(FUNCLEN_MAX) -allow $(FUNCLEN_ALLOW) $$(git ls-files '*.go'; git ls-files -o --exclude-standard '*.go')

.PHONY: lint-funclen-update
lint-funclen-update: ## Rewrite the function-length allowlist from the tree (after shortening a function)
	@$(GO) run ./internal/tools/funclen -max $(FUNCLEN_MAX) -allow $(FUNCLEN_ALLOW) -write $$(git ls-files '*.go'; git ls-files -o --exclude-standard '*.go')

.PHONY: lint-literals
lint-literals: ## Keyed literals of more than four fields must put one field per line
	@$(GO) run ./internal/tools/litlines $$(git ls-files '*.go'; git ls-files -o --exclude-standard '*.go')
