package oip

// DecodeInferRequest parses an inference request body. It accepts standard JSON plus the bare
// tokens NaN, Infinity and -Infinity inside floating-point "data" (as Python's json writes them).
// Tensor data may be flat or nested arrays; nested data is flattened in row-major order. Every
// failure is an *Error.
func DecodeInferRequest(body []byte, lim Limits) (*InferRequest, error) {
	return (*Buffers)(nil).DecodeInferRequest(body, lim)
}

// DecodeInferRequestBinary parses a request that uses the binary tensor data extension: the
// first jsonLen bytes of body are the JSON request (the Inference-Header-Content-Length header),
// the rest is the raw data of the inputs that give "binary_data_size", in input order. Every
// byte must be accounted for.
func DecodeInferRequestBinary(body []byte, jsonLen int, lim Limits) (*InferRequest, error) {
	return (*Buffers)(nil).DecodeInferRequestBinary(body, jsonLen, lim)
}
