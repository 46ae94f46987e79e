package app

import (
	"context"
	"encoding/json"
	"github.com/countersign/countersign/internal/syncbuf"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/injector/certs"
	"github.com/countersign/countersign/internal/cmdexit"
)

// filesConfig is a valid configuration serving certificate files on loopback, without
// Kubernetes.
func filesConfig(t *testing.T) *Config {
	t.Helper()
	dir := t.TempDir()
	ca, err := certs.NewCA("test CA", time.Now(), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := certs.NewLeaf(ca, []string{"localhost"}, time.Now(), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Defaults()
	cfg.TLSMode, cfg.Listen, cfg.AdminListen = TLSFiles, "127.0.0.1:0", "127.0.0.1:0"
	cfg.TLSCertFile, cfg.TLSKeyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	cfg.Events, cfg.XDSListen = false, ""
	cfg.ProxyImage = "registry.test/proxy@sha256:" + strings.Repeat("a", 64)
	cfg.ProxySimImage = "registry.test/proxy-sim@sha256:" + strings.Repeat("b", 64)
	cfg.AttestationURL = "https://attest.test"
	if cfg.Namespace == "" {
		cfg.Namespace = "countersign"
	}
	for path, b := range map[string][]byte{cfg.TLSCertFile: leaf.CertPEM, cfg.TLSKeyFile: leaf.KeyPEM} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return &cfg
}

// TestServeStopsAndJoins: Serve answers on its admin port, and returns nil once its context
// ends (after joining its reloader and both servers).
func TestServeStopsAndJoins(t *testing.T) {
	cfg := filesConfig(t)
	var logs syncbuf.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, cfg, slog.New(slog.NewJSONHandler(&logs, nil))) }()
	var admin string
	for deadline := time.Now().Add(10 * time.Second); admin == ""; {
		if time.Now().After(deadline) {
			t.Fatalf("no start line:\n%s", logs.String())
		}
		for _, line := range strings.Split(logs.String(), "\n") {
			var m struct{ Msg, Admin string }
			if json.Unmarshal([]byte(line), &m) == nil && m.Msg == "injector started" {
				admin = m.Admin
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp, err := http.Get("http://" + admin + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %s", resp.Status)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if !strings.Contains(logs.String(), "injector stopped") {
		t.Errorf("no stop line:\n%s", logs.String())
	}
}

// TestServeFailsOnBusyPort: a listener that cannot be bound fails Serve with the flag's name,
// and Serve returns (having stopped the reloader it had started) without its context ending.
func TestServeFailsOnBusyPort(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := filesConfig(t)
	cfg.AdminListen = busy.Addr().String()
	done := make(chan error, 1)
	go func() { done <- Serve(context.Background(), cfg, slog.New(slog.DiscardHandler)) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "--admin-listen") {
			t.Errorf("error %v, want one naming --admin-listen", err)
		}
		if code := cmdexit.Code(err); code != cmdexit.Failure {
			t.Errorf("exit %d for a port in use, want %d (not a usage error)", code, cmdexit.Failure)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return")
	}
}

// TestRunExitCodes: configuration mistakes are usage errors (exit 2), naming the flag or
// variable; -h is not an error.
func TestRunExitCodes(t *testing.T) {
	cfg := filesConfig(t)
	env := map[string]string{
		EnvPrefix + "PROXY_IMAGE":     cfg.ProxyImage,
		EnvPrefix + "PROXY_SIM_IMAGE": cfg.ProxySimImage,
		EnvPrefix + "ATTESTATION_URL": cfg.AttestationURL,
		"POD_NAMESPACE":               "countersign",
	}
	base := []string{"--tls-mode=files", "--tls-cert-file", cfg.TLSCertFile, "--tls-key-file", cfg.TLSKeyFile}
	for _, c := range []struct {
		name string
		args []string
		env  map[string]string
		code int
		msg  string
	}{
		{"help", []string{"-h"}, env, cmdexit.OK, ""},
		{"unknown flag", []string{"--nope"}, env, cmdexit.Usage, "-nope"},
		{"stray argument", append(base, "x"), env, cmdexit.Usage, "unexpected arguments"},
		{"bad log level", append(base, "--log-level", "loud"), env, cmdexit.Usage, "--log-level"},
		{"invalid configuration", []string{"--tls-mode=nope"}, env, cmdexit.Usage, "tls-mode"},
		{"bad environment", base, map[string]string{EnvPrefix + "HTTP2": "maybe"}, cmdexit.Usage, EnvPrefix + "HTTP2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := Run(context.Background(), c.args, func(k string) string { return c.env[k] }, io.Discard)
			if got := cmdexit.Code(err); got != c.code {
				t.Errorf("exit %d (%v), want %d", got, err, c.code)
			}
			if c.msg != "" && (err == nil || !strings.Contains(err.Error(), c.msg)) {
				t.Errorf("error %v does not say %q", err, c.msg)
			}
		})
	}
}
