package cli

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/countersign/countersign/internal/cmdexit"
	"github.com/countersign/countersign/proxy/config"
	"github.com/countersign/countersign/proxy/server"
)

func runRun(ctx context.Context, args []string, s Streams) error {
	fs := newFlagSet("run", s)
	cfgFile := fs.String("config", "", "configuration file (YAML, see docs/proxy-config.md) (required)")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *cfgFile == "" {
		return cmdexit.Usagef("--config FILE is required")
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		return cmdexit.Usagef("--log-level: %v", err)
	}
	cfg, err := config.Load(*cfgFile)
	if err != nil {
		return cmdexit.Usagef("%v", err)
	}
	log := slog.New(slog.NewJSONHandler(s.Err, &slog.HandlerOptions{Level: lv}))
	srv, err := server.New(cfg, server.Options{Logger: log})
	if err != nil {
		return cmdexit.Usagef("%v", err)
	}
	log.Info("proxy starting", "identity", cfg.Identity)
	// Run returns on SIGTERM after draining (nil: exit 0), or on the first listener failure
	// (exit 1, so that the kubelet restarts the sidecar instead of leaving a dead port behind).
	if err := srv.Run(ctx); err != nil {
		return cmdexit.WithCode(ExitFailed, fmt.Errorf("proxy stopped: %w", err))
	}
	log.Info("proxy stopped")
	return nil
}
