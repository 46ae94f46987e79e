package main

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

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"

	"github.com/countersign/countersign/inference-server/modelrepo"
	"github.com/countersign/countersign/inference-server/oipgrpc"
	"github.com/countersign/countersign/inference-server/ortsession"
	"github.com/countersign/countersign/inference-server/server"
	"github.com/countersign/countersign/internal/cmdexit"
	"github.com/countersign/countersign/internal/version"
)

// run serves until ctx is cancelled, then drains in-flight requests. ready, if not nil, receives
// the listening addresses once the server accepts requests (tests use it).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runWithReady(ctx, args, stdout, stderr, os.Getenv, nil)
}

func runWithReady(ctx context.Context, args []string, _ io.Writer, stderr io.Writer, getenv func(string) string, ready chan<- listening) error {
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return cmdexit.UsageError(err)
	}
	log := newLogger(cfg, stderr)

	models, err := modelrepo.Load(cfg.ModelRepository)
	if err != nil {
		return err
	}
	if err := ortsession.Init(cfg.ORTLib); err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var served []server.Model
	for _, m := range models {
		s, err := ortsession.New(m, ortsession.Options{IntraOpThreads: cfg.IntraOpThreads})
		if err != nil {
			return err
		}
		defer s.Close()
		served = append(served, server.Model{Config: m.Config, Session: s})
		log.Info("model loaded", "model", m.Name, "version", m.Version, "sha256", m.SHA256, "max_batch_size", m.MaxBatchSize)
	}
	srv, err := server.New(server.Options{
		Models:       served,
		Logger:       log,
		Registry:     reg,
		MaxBodyBytes: cfg.MaxBodyBytes,
		Batch:        server.BatchConfig{MaxSize: cfg.BatchMaxSize, MaxDelay: cfg.BatchMaxDelay, QueueSize: cfg.BatchQueueSize, Workers: cfg.BatchWorkers},
	})
	if err != nil {
		return err
	}
	defer srv.Close()

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: cfg.ReadHeaderTO,
		ReadTimeout:       cfg.ReadTO,
		WriteTimeout:      cfg.WriteTO,
		IdleTimeout:       cfg.IdleTO,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	var gs *grpc.Server
	var gln net.Listener
	if cfg.GRPCListen != "" {
		if gln, err = net.Listen("tcp", cfg.GRPCListen); err != nil {
			ln.Close()
			return err
		}
		gs = oipgrpc.NewServer(srv, oipgrpc.Options{
			MaxRecvMsgBytes:      int(cfg.MaxBodyBytes),
			MaxConcurrentStreams: uint32(cfg.GRPCMaxStreams),
			MaxHeaderListBytes:   uint32(cfg.MaxHeaderBytes),
			KeepaliveMinTime:     cfg.GRPCKeepaliveMin,
			MaxConnectionIdle:    cfg.IdleTO,
			ConnectionTimeout:    cfg.ReadHeaderTO,
		})
		log.Info("serving gRPC (h2c)", "addr", gln.Addr().String())
	}
	log.Info("serving", "addr", ln.Addr().String(), "version", version.Version, "onnxruntime", cfg.ORTLib,
		"batch_max_size", cfg.BatchMaxSize, "batch_max_delay", cfg.BatchMaxDelay, "intra_op_threads", cfg.IntraOpThreads)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	gerrc := make(chan error, 1)
	at := listening{HTTP: ln.Addr().String()}
	if gs != nil {
		go func() { gerrc <- gs.Serve(gln) }()
		at.GRPC = gln.Addr().String()
	}
	if ready != nil {
		ready <- at
	}
	select {
	case err := <-errc:
		if gs != nil {
			gs.Stop()
		}
		return err
	case err := <-gerrc:
		_ = hs.Close()
		return fmt.Errorf("grpc: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: draining in-flight requests", "timeout", cfg.ShutdownTO)
	srv.SetReady(false)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTO)
	defer cancel()
	if gs != nil {
		// GracefulStop waits for in-flight calls; past the drain timeout, Stop cuts them.
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		defer func() {
			select {
			case <-stopped:
			case <-sctx.Done():
				gs.Stop()
				<-stopped
			}
		}()
	}
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	// Shutdown has closed the listener: join the Serve goroutine before returning.
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("stopped")
	return nil
}

// listening is where a running server accepts requests; GRPC is empty without --grpc-listen.
type listening struct{ HTTP, GRPC string }

func newLogger(cfg config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
