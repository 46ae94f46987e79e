// Package inferencepb is the Go code generated from the Open Inference Protocol v2 gRPC service
// definition (../proto/grpc_predict_v2.proto, the KServe protocol's open_inference_grpc.proto as
// published): the messages and the inference.GRPCInferenceService client and server. Regenerate
// with `make proto`; a test fails when the committed code is stale.
package inferencepb
