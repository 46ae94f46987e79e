// Package app is the records API binary: configuration (defaults, then environment, then
// flags), the Redis client, the inference client, the HTTP and admin servers, and graceful
// shutdown. cmd/records only calls Run.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	pb "github.com/countersign/countersign/inference-server/oipgrpc/inferencepb"
	"github.com/countersign/countersign/internal/cmdexit"
	"github.com/countersign/countersign/sample-apps/records/api"
	"github.com/countersign/countersign/sample-apps/records/inference"
	"github.com/countersign/countersign/sample-apps/records/store"
)

// Config is the whole configuration.
type Config struct {
	Listen          string
	AdminListen     string
	RedisAddr       string
	InferenceURL    string
	InferenceProto  string // "rest" or "grpc"
	InferenceGRPC   string // host:port of the gRPC endpoint, with InferenceProto "grpc"
	Model           string
	PortalDir       string
	PortalConfig    string
	InferTimeout    time.Duration
	ShutdownTimeout time.Duration
	LogLevel        string
}

// Defaults returns the default configuration.
func Defaults() Config {
	return Config{
		Listen:          "127.0.0.1:8081",
		AdminListen:     "127.0.0.1:9081",
		RedisAddr:       "127.0.0.1:6380",
		InferenceURL:    "http://127.0.0.1:7001",
		InferenceProto:  "rest",
		InferenceGRPC:   "127.0.0.1:7002",
		Model:           "chest-scan-classifier",
		InferTimeout:    30 * time.Second,
		ShutdownTimeout: 10 * time.Second,
		LogLevel:        "info",
	}
}

// envNames maps environment variables to flag names.
var envNames = map[string]string{
	"RECORDS_LISTEN":              "listen",
	"RECORDS_ADMIN_LISTEN":        "admin-listen",
	"RECORDS_REDIS_ADDR":          "redis-addr",
	"RECORDS_INFERENCE_URL":       "inference-url",
	"RECORDS_INFERENCE_PROTOCOL":  "inference-protocol",
	"RECORDS_INFERENCE_GRPC_ADDR": "inference-grpc-addr",
	"RECORDS_MODEL":               "model",
	"RECORDS_PORTAL_DIR":          "portal-dir",
	"RECORDS_PORTAL_CONFIG":       "portal-config",
	"RECORDS_LOG_LEVEL":           "log-level",
}

// Parse applies environment (getenv) then flags over the defaults, and validates.
func Parse(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	c := Defaults()
	fs := flag.NewFlagSet("records", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Listen, "listen", c.Listen, "API and portal address (plain HTTP; the sidecar's inbound listener forwards here) (env RECORDS_LISTEN)")
	fs.StringVar(&c.AdminListen, "admin-listen", c.AdminListen, "address for /healthz, /readyz and /metrics; empty disables (env RECORDS_ADMIN_LISTEN)")
	fs.StringVar(&c.RedisAddr, "redis-addr", c.RedisAddr, "Redis address: the sidecar's outbound TCP listener (env RECORDS_REDIS_ADDR)")
	fs.StringVar(&c.InferenceURL, "inference-url", c.InferenceURL, "inference server base URL: the sidecar's outbound HTTP listener (env RECORDS_INFERENCE_URL)")
	fs.StringVar(&c.InferenceProto, "inference-protocol", c.InferenceProto, "how to call the inference server: rest (--inference-url) or grpc (--inference-grpc-addr, plaintext HTTP/2) (env RECORDS_INFERENCE_PROTOCOL)")
	fs.StringVar(&c.InferenceGRPC, "inference-grpc-addr", c.InferenceGRPC, "inference server gRPC host:port with --inference-protocol grpc: the sidecar's outbound listener (env RECORDS_INFERENCE_GRPC_ADDR)")
	fs.StringVar(&c.Model, "model", c.Model, "model name on the inference server (env RECORDS_MODEL)")
	fs.StringVar(&c.PortalDir, "portal-dir", c.PortalDir, "directory of the portal's static files, served at / (env RECORDS_PORTAL_DIR)")
	fs.StringVar(&c.PortalConfig, "portal-config", c.PortalConfig, "file served at /config.json for the portal (env RECORDS_PORTAL_CONFIG)")
	fs.DurationVar(&c.InferTimeout, "inference-timeout", c.InferTimeout, "timeout of one inference call")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "how long to drain on SIGTERM")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error (env RECORDS_LOG_LEVEL)")
	for env, name := range envNames {
		if v := getenv(env); v != "" {
			if err := fs.Set(name, v); err != nil {
				return c, cmdexit.UsageError(fmt.Errorf("%s: %v", env, err))
			}
		}
	}
	if err := fs.Parse(args); err != nil {
		return c, cmdexit.UsageError(err)
	}
	if fs.NArg() > 0 {
		return c, cmdexit.UsageError(fmt.Errorf("unexpected argument %q: all settings are flags", fs.Arg(0)))
	}
	return c, c.Validate()
}

// Validate names the flag at fault.
func (c Config) Validate() error {
	var errs []error
	hostport := func(flag, v string, empty bool) {
		if v == "" && empty {
			return
		}
		if _, _, err := net.SplitHostPort(v); err != nil {
			errs = append(errs, fmt.Errorf("--%s: %q is not host:port", flag, v))
		}
	}
	hostport("listen", c.Listen, false)
	hostport("admin-listen", c.AdminListen, true)
	hostport("redis-addr", c.RedisAddr, false)
	if !strings.HasPrefix(c.InferenceURL, "http://") && !strings.HasPrefix(c.InferenceURL, "https://") {
		errs = append(errs, fmt.Errorf("--inference-url: %q, expected http://host:port", c.InferenceURL))
	}
	switch c.InferenceProto {
	case "rest":
	case "grpc":
		hostport("inference-grpc-addr", c.InferenceGRPC, false)
	default:
		errs = append(errs, fmt.Errorf("--inference-protocol: %q, expected rest or grpc", c.InferenceProto))
	}
	if c.Model == "" {
		errs = append(errs, errors.New("--model: required"))
	}
	if c.PortalDir != "" {
		if st, err := os.Stat(c.PortalDir); err != nil || !st.IsDir() {
			errs = append(errs, fmt.Errorf("--portal-dir: %q is not a directory", c.PortalDir))
		}
	}
	if c.PortalConfig != "" {
		if _, err := os.Stat(c.PortalConfig); err != nil {
			errs = append(errs, fmt.Errorf("--portal-config: %v", err))
		}
	}
	if c.InferTimeout <= 0 {
		errs = append(errs, errors.New("--inference-timeout: must be positive"))
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(c.LogLevel)); err != nil {
		errs = append(errs, fmt.Errorf("--log-level: %v", err))
	}
	if err := errors.Join(errs...); err != nil {
		return cmdexit.UsageError(err)
	}
	return nil
}

// Run parses args, serves until ctx is done, then drains.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c, err := Parse(args, getenv, stderr)
	if err != nil {
		return err
	}
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(c.LogLevel))
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lv}))

	rdb := redis.NewClient(&redis.Options{
		Addr:            c.RedisAddr,
		DialTimeout:     3 * time.Second,
		ReadTimeout:     5 * time.Second,
		WriteTimeout:    5 * time.Second,
		MaxRetries:      3,
		MinRetryBackoff: 50 * time.Millisecond,
		MaxRetryBackoff: 500 * time.Millisecond,
		// The sidecar's outbound TCP listener is the only Redis this app knows.
		Protocol: 2,
	})
	defer rdb.Close()
	st := store.NewRedis(rdb)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var ic inference.Client = &inference.OIP{BaseURL: c.InferenceURL, Model: c.Model, HTTP: &http.Client{Timeout: c.InferTimeout}}
	inferenceAt := c.InferenceURL
	if c.InferenceProto == "grpc" {
		conn, err := inference.DialGRPC(c.InferenceGRPC)
		if err != nil {
			return fmt.Errorf("--inference-grpc-addr: %w", err)
		}
		defer conn.Close()
		ic = &inference.GRPC{Client: pb.NewGRPCInferenceServiceClient(conn), Model: c.Model, Timeout: c.InferTimeout}
		inferenceAt = "grpc://" + c.InferenceGRPC
	}
	h := api.New(api.Options{
		Store:        st,
		Inference:    ic,
		Logger:       log,
		Registry:     reg,
		PortalDir:    c.PortalDir,
		PortalConfig: c.PortalConfig,
	})

	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	servers := []*http.Server{{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}}
	lns := []net.Listener{ln}
	if c.AdminListen != "" {
		aln, err := net.Listen("tcp", c.AdminListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("--admin-listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
		mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
			pctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			defer cancel()
			if err := st.Ping(pctx); err != nil {
				http.Error(w, "not ready: redis: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
			_, _ = io.WriteString(w, "ok\n")
		})
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		servers = append(servers, &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second})
		lns = append(lns, aln)
		fmt.Fprintf(stdout, "records: admin on http://%s\n", aln.Addr())
	}
	fmt.Fprintf(stdout, "records: listening on http://%s\n", ln.Addr())
	log.Info("records API started", "listen", ln.Addr().String(), "redis", c.RedisAddr, "inference", inferenceAt)

	errc := make(chan error, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Add(1)
		go func(s *http.Server, l net.Listener) {
			defer wg.Done()
			if err := s.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}(s, lns[i])
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	log.Info("draining", "timeout", c.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), c.ShutdownTimeout)
	defer cancel()
	for _, s := range servers {
		if err := s.Shutdown(sctx); err != nil && runErr == nil {
			runErr = fmt.Errorf("shutdown: %w", err)
		}
	}
	wg.Wait()
	return runErr
}
