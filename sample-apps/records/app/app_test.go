package app

import (
	"io"
	"strings"
	"testing"
)

// The inference protocol: default REST; environment, then flags; bad values name the flag.
func TestParseInferenceProtocol(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	cases := []struct {
		name      string
		args      []string
		env       map[string]string
		proto     string
		addr      string
		errNaming string
	}{
		{"default", nil, nil, "rest", "127.0.0.1:7002", ""},
		{"env", nil, map[string]string{"RECORDS_INFERENCE_PROTOCOL": "grpc", "RECORDS_INFERENCE_GRPC_ADDR": "127.0.0.1:9"}, "grpc", "127.0.0.1:9", ""},
		{"flag over env", []string{"--inference-protocol", "rest"}, map[string]string{"RECORDS_INFERENCE_PROTOCOL": "grpc"}, "rest", "127.0.0.1:7002", ""},
		{"flags", []string{"--inference-protocol", "grpc", "--inference-grpc-addr", "localhost:7003"}, nil, "grpc", "localhost:7003", ""},
		{"bad protocol", []string{"--inference-protocol", "soap"}, nil, "", "", "--inference-protocol"},
		{"bad address", []string{"--inference-protocol", "grpc", "--inference-grpc-addr", "nope"}, nil, "", "", "--inference-grpc-addr"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse(c.args, env(c.env), io.Discard)
			if c.errNaming != "" {
				if err == nil || !strings.Contains(err.Error(), c.errNaming+":") {
					t.Fatalf("err %v, want one naming %s", err, c.errNaming)
				}
				return
			}
			if err != nil || cfg.InferenceProto != c.proto || cfg.InferenceGRPC != c.addr {
				t.Fatalf("got %q %q %v, want %q %q", cfg.InferenceProto, cfg.InferenceGRPC, err, c.proto, c.addr)
			}
		})
	}
}
