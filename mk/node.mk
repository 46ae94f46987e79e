# End to end on a real node (issue 12): both charts installed on the one-node cluster of
# mk/cluster.mk, pulling the images of mk/images.mk from the registry on 127.0.0.1 by digest.

TEST_AFTER += test-cluster

# Extra flags for the on-node tests, e.g. NODE_TEST_ARGS='-run TestNode/Install'.
NODE_TEST_ARGS ?=
# keep: leave the cluster up after the tests (to look around); down: take it down (default).
NODE_CLUSTER_AFTER ?= down

.PHONY: test-cluster
test-cluster: build kube-deps images ## Both charts on a one-node cluster: demo flow, portal, transparent mode, bypasses, faults (about 10 min)
	@$(MAKE) --no-print-directory cluster-up
	@mkdir -p test/artifacts
	@echo "  test-cluster: go test -tags cluster ./test/node (helm install, demo flow, browser, transparent, faults)..."
	@$(GO) test -tags cluster -count=1 -timeout 45m -v $(NODE_TEST_ARGS) ./test/node/ > test/artifacts/test-cluster.log 2>&1; \
		rc=$$?; grep -E '^(=== RUN|--- |\s+--- |PASS|FAIL|ok)|figure:' test/artifacts/test-cluster.log; \
		[ $$rc -eq 0 ] || tail -150 test/artifacts/test-cluster.log; \
		if [ "$(NODE_CLUSTER_AFTER)" = down ]; then $(MAKE) --no-print-directory cluster-down && \
			$(MAKE) --no-print-directory cluster-verify-down || rc=1; fi; exit $$rc
