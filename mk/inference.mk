# Inference server (issue 4): binary, ONNX Runtime library fetch, demo model generation.

BINARIES   += inference-server=./inference-server/cmd/inference-server
TEST_DEPS  += onnxruntime
BENCH_PKGS += ./inference-server/...

ORT_LIB := $(CACHE)/onnxruntime/1.24.1/libonnxruntime.so.1

.PHONY: onnxruntime
onnxruntime: ## Fetch ONNX Runtime 1.24.1 (npm tarball, SHA-256 checked) into .cache/
	@./scripts/fetch-onnxruntime.sh

.PHONY: model
model: ## Regenerate the demo chest-scan model, its config, card and sample scans
	$(GO) run ./inference-server/cmd/modelgen -out inference-server/models
