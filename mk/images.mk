# Container images (issue 12), built without a Docker engine: Go binaries and Debian packages
# assembled into reproducible OCI images with go-containerregistry (build/images), written to an
# OCI layout under .cache/images; a local CNCF distribution registry to serve them
# (scripts/registry.sh); the charts pin their digests (make pin-images). docs/images.md.

IMAGES_TOOL := $(GO) run ./build/images/cmd/images
REGISTRY    ?= 127.0.0.1:5000
# The registry's address for registry-up: host:port of REGISTRY.
REGISTRY_ADDR ?= $(firstword $(subst /, ,$(REGISTRY)))
export REGISTRY_ADDR

.PHONY: images
images: onnxruntime ## Build every chart's image into .cache/images/oci (OCI layout) and .cache/images/images.tsv; prints name, digest, size
	@$(IMAGES_TOOL) build $(IMAGES)

.PHONY: pin-images
pin-images: ## Write the digests of the last `make images` into the charts' values.yaml
	@$(IMAGES_TOOL) pin

.PHONY: pin-debian
pin-debian: ## Re-pin build/images/debian.lock to the Debian archive's current versions (after apt-get update)
	@$(IMAGES_TOOL) pin-debian

.PHONY: registry-bin
registry-bin: ## Build the CNCF distribution registry v3.1.2 into .cache/registry (cached)
	@./scripts/registry.sh build

.PHONY: registry-up
registry-up: ## Start the local registry on $(REGISTRY_ADDR) (idempotent; storage and pid file in .cache/registry)
	@./scripts/registry.sh up

.PHONY: registry-down
registry-down: ## Stop the local registry this checkout started
	@./scripts/registry.sh down

.PHONY: push-images
push-images: ## Push every image of .cache/images/oci to $(REGISTRY)/countersign/<name>, by digest plus the chart's appVersion tag
	@$(IMAGES_TOOL) push --registry $(REGISTRY)/countersign
