package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/countersign/countersign/inference-server/ortsession"
)

// config is the whole configuration of the binary: defaults, then environment, then flags.
type config struct {
	Listen           string
	GRPCListen       string // "" : no gRPC endpoint
	GRPCMaxStreams   int
	GRPCKeepaliveMin time.Duration
	ModelRepository  string
	ORTLib           string
	IntraOpThreads   int
	MaxBodyBytes     int64
	BatchMaxSize     int
	BatchMaxDelay    time.Duration
	BatchQueueSize   int
	BatchWorkers     int
	ReadHeaderTO     time.Duration
	ReadTO           time.Duration
	WriteTO          time.Duration
	IdleTO           time.Duration
	ShutdownTO       time.Duration
	MaxHeaderBytes   int
	LogLevel         string
	LogFormat        string
}

func defaultConfig() config {
	lib := ortsession.LibraryPath("")
	if lib == "" {
		lib = ".cache/onnxruntime/" + ortsession.Version + "/libonnxruntime.so.1"
	}
	return config{
		Listen:           "127.0.0.1:8000",
		GRPCMaxStreams:   128,
		GRPCKeepaliveMin: 10 * time.Second,
		ORTLib:           lib,
		IntraOpThreads:   1,
		MaxBodyBytes:     8 << 20,
		BatchMaxSize:     0,
		BatchMaxDelay:    2 * time.Millisecond,
		BatchQueueSize:   256,
		BatchWorkers:     1,
		ReadHeaderTO:     5 * time.Second,
		ReadTO:           30 * time.Second,
		WriteTO:          60 * time.Second,
		IdleTO:           120 * time.Second,
		ShutdownTO:       30 * time.Second,
		MaxHeaderBytes:   64 << 10,
		LogLevel:         "info",
		LogFormat:        "text",
	}
}

// envVars maps environment variables to flags; flags given on the command line win.
var envVars = map[string]string{
	"ONNXRUNTIME_LIB":                   "onnxruntime-lib",
	"INFERENCE_SERVER_LISTEN":           "listen",
	"INFERENCE_SERVER_GRPC_LISTEN":      "grpc-listen",
	"INFERENCE_SERVER_MODEL_REPOSITORY": "model-repository",
}

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	c := defaultConfig()
	fs := flag.NewFlagSet("inference-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Listen, "listen", c.Listen, "address to serve the OIP v2 REST API and /metrics on")
	fs.StringVar(&c.GRPCListen, "grpc-listen", c.GRPCListen, "address to serve the OIP v2 gRPC API on, plaintext HTTP/2 (h2c); empty: no gRPC endpoint (e.g. 127.0.0.1:8001)")
	fs.IntVar(&c.GRPCMaxStreams, "grpc-max-concurrent-streams", c.GRPCMaxStreams, "gRPC: concurrent calls per connection")
	fs.DurationVar(&c.GRPCKeepaliveMin, "grpc-keepalive-min-time", c.GRPCKeepaliveMin, "gRPC: clients that send keepalive pings more often are disconnected")
	fs.StringVar(&c.ModelRepository, "model-repository", c.ModelRepository, "folder with one sub-folder per model (model.onnx + config.json)")
	fs.StringVar(&c.ORTLib, "onnxruntime-lib", c.ORTLib, "path of libonnxruntime.so.1 (ONNX Runtime "+ortsession.Version+"; env ONNXRUNTIME_LIB)")
	fs.IntVar(&c.IntraOpThreads, "intra-op-threads", c.IntraOpThreads, "ONNX Runtime threads per session run (0: one per core)")
	fs.Int64Var(&c.MaxBodyBytes, "max-body-bytes", c.MaxBodyBytes, "largest accepted request body; larger gets 413")
	fs.IntVar(&c.BatchMaxSize, "batch-max-size", c.BatchMaxSize, "dynamic batching: most rows per run (0 or 1: off)")
	fs.DurationVar(&c.BatchMaxDelay, "batch-max-delay", c.BatchMaxDelay, "dynamic batching: how long a batch waits to fill")
	fs.IntVar(&c.BatchQueueSize, "batch-queue-size", c.BatchQueueSize, "dynamic batching: requests queued at most per model; a full queue answers 503")
	fs.IntVar(&c.BatchWorkers, "batch-workers", c.BatchWorkers, "dynamic batching: batches run concurrently per model")
	fs.DurationVar(&c.ReadHeaderTO, "read-header-timeout", c.ReadHeaderTO, "time to read request headers")
	fs.DurationVar(&c.ReadTO, "read-timeout", c.ReadTO, "time to read a whole request")
	fs.DurationVar(&c.WriteTO, "write-timeout", c.WriteTO, "time to write a response")
	fs.DurationVar(&c.IdleTO, "idle-timeout", c.IdleTO, "keep-alive idle time")
	fs.DurationVar(&c.ShutdownTO, "shutdown-timeout", c.ShutdownTO, "time to drain in-flight requests on shutdown")
	fs.IntVar(&c.MaxHeaderBytes, "max-header-bytes", c.MaxHeaderBytes, "largest accepted request header block")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "text or json")
	// Environment first (over defaults), then flags over the environment.
	for env, name := range envVars {
		if v := getenv(env); v != "" {
			if err := fs.Set(name, v); err != nil {
				return c, fmt.Errorf("%s: %w", env, err)
			}
		}
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	return c, c.Validate()
}

// Validate checks the configuration; each error names its flag.
func (c *config) Validate() error {
	var errs []error
	bad := func(flag, format string, args ...any) {
		errs = append(errs, fmt.Errorf("--%s: %s", flag, fmt.Sprintf(format, args...)))
	}
	if _, port, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "%q is not host:port: %v", c.Listen, err)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		bad("listen", "port %q is not 0..65535", port)
	}
	if c.GRPCListen != "" {
		if _, port, err := net.SplitHostPort(c.GRPCListen); err != nil {
			bad("grpc-listen", "%q is not host:port: %v", c.GRPCListen, err)
		} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			bad("grpc-listen", "port %q is not 0..65535", port)
		}
	}
	if c.GRPCMaxStreams < 1 || c.GRPCMaxStreams > 1<<16 {
		bad("grpc-max-concurrent-streams", "%d is not 1..65536", c.GRPCMaxStreams)
	}
	if c.GRPCKeepaliveMin < time.Second || c.GRPCKeepaliveMin > time.Hour {
		bad("grpc-keepalive-min-time", "%s is not 1s..1h", c.GRPCKeepaliveMin)
	}
	if c.ModelRepository == "" {
		bad("model-repository", "required")
	} else if st, err := os.Stat(c.ModelRepository); err != nil || !st.IsDir() {
		bad("model-repository", "%q is not a folder", c.ModelRepository)
	}
	if c.ORTLib == "" {
		bad("onnxruntime-lib", "required")
	}
	if c.IntraOpThreads < 0 || c.IntraOpThreads > 256 {
		bad("intra-op-threads", "%d is not 0..256", c.IntraOpThreads)
	}
	if c.MaxBodyBytes < 1024 || c.MaxBodyBytes > 1<<30 {
		bad("max-body-bytes", "%d is not 1024..1073741824", c.MaxBodyBytes)
	}
	if c.BatchMaxSize < 0 || c.BatchMaxSize > 1<<16 {
		bad("batch-max-size", "%d is not 0..65536", c.BatchMaxSize)
	}
	if c.BatchMaxDelay < 0 || c.BatchMaxDelay > time.Second {
		bad("batch-max-delay", "%s is not 0..1s", c.BatchMaxDelay)
	}
	if c.BatchQueueSize < 1 || c.BatchQueueSize > 1<<20 {
		bad("batch-queue-size", "%d is not 1..1048576", c.BatchQueueSize)
	}
	if c.BatchWorkers < 1 || c.BatchWorkers > 64 {
		bad("batch-workers", "%d is not 1..64", c.BatchWorkers)
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"read-header-timeout", c.ReadHeaderTO}, {"read-timeout", c.ReadTO}, {"write-timeout", c.WriteTO}, {"idle-timeout", c.IdleTO}, {"shutdown-timeout", c.ShutdownTO}} {
		if d.v <= 0 {
			bad(d.flag, "must be positive")
		}
	}
	if c.MaxHeaderBytes < 1024 || c.MaxHeaderBytes > 1<<20 {
		bad("max-header-bytes", "%d is not 1024..1048576", c.MaxHeaderBytes)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log-level", "%q is not debug, info, warn or error", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		bad("log-format", "%q is not text or json", c.LogFormat)
	}
	return errors.Join(errs...)
}
