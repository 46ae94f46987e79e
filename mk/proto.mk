# Generated protocol code (issue 16): the OIP v2 gRPC service of the inference server.

.PHONY: proto
proto: ## Regenerate inference-server/oipgrpc/inferencepb from grpc_predict_v2.proto (protoc + pinned plugins)
	@./scripts/install-deps.sh
	./scripts/gen-proto.sh
