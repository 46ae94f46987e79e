package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/countersign/countersign/injector/certs"
	"github.com/countersign/countersign/injector/events"
	"github.com/countersign/countersign/injector/metrics"
	"github.com/countersign/countersign/injector/webhook"
	"github.com/countersign/countersign/injector/xds"
	"github.com/countersign/countersign/internal/cmdexit"
)

// Run loads the configuration from args and the environment and serves until ctx ends.
func Run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := Load(args, getenv, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return cmdexit.UsageError(err)
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return cmdexit.Usagef("--log-level: %v", err)
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lv}))
	return Serve(ctx, cfg, log)
}

// Serve runs the injector with a validated configuration. Every goroutine it starts (the
// certificate reloaders, the event recorder, the control plane, the two servers) runs in one
// errgroup, and Serve returns only after all of them have: the first to fail stops the rest.
func Serve(ctx context.Context, cfg *Config, log *slog.Logger) (err error) {
	ctx, cancel := context.WithCancel(ctx)
	g, ctx := errgroup.WithContext(ctx)
	defer func() {
		// Any return, early or not, stops and joins what was started.
		cancel()
		if werr := g.Wait(); err == nil {
			err = werr
		}
	}()
	m := metrics.New()
	var client kubernetes.Interface
	if cfg.TLSMode == TLSSelf || cfg.Events || cfg.XDSListen != "" {
		rc, err := restConfig(cfg.Kubeconfig)
		if err != nil {
			return err
		}
		rc.UserAgent = "countersign-injector"
		// Protobuf, as Kubernetes' own controllers: the control plane's informers decode every
		// pod, Service and EndpointSlice event, at a fraction of JSON's CPU (which the webhook,
		// in the same process, would otherwise wait behind).
		rc.ContentType = "application/vnd.kubernetes.protobuf"
		rc.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
		if client, err = kubernetes.NewForConfig(rc); err != nil {
			return err
		}
	}
	loaded := func(t time.Time) { m.CertNotAfter.Set(float64(t.Unix())) }
	var src certs.Source
	switch cfg.TLSMode {
	case TLSSelf:
		mgr := &certs.Manager{
			Client:       client,
			Namespace:    cfg.Namespace,
			SecretName:   cfg.CertSecret,
			WebhookName:  cfg.WebhookConfig,
			Hosts:        cfg.Hosts(),
			Validity:     cfg.CertValidity,
			RotateBefore: cfg.CertRotateBefore,
			Overlap:      cfg.CertOverlap,
			Interval:     cfg.CertSyncInterval,
			Log:          log,
			Hooks: certs.Hooks{
				Step: func(s string) { m.Rotations.WithLabelValues(s).Inc() }, Loaded: loaded,
				CABundle: m.CABundle.Inc,
			},
		}
		if err := mgr.Validate(); err != nil {
			return err
		}
		g.Go(func() error { mgr.Run(ctx); return nil })
		src = mgr
	case TLSFiles:
		fsrc := &certs.FileSource{CertFile: cfg.TLSCertFile, KeyFile: cfg.TLSKeyFile, Log: log, Loaded: loaded}
		if err := fsrc.Reload(); err != nil {
			return fmt.Errorf("--tls-cert-file: %w", err)
		}
		g.Go(func() error { fsrc.Run(ctx, 10*time.Second); return nil })
		src = fsrc
	}
	h := &webhook.Handler{Config: cfg.Inject(), Log: log, Metrics: m}
	if cfg.Events {
		rec := events.New(client, log, 256, m.EventsDropped.Inc)
		g.Go(func() error { rec.Run(ctx); return nil })
		h.Events = rec
	}
	mux := http.NewServeMux()
	h.Mux(mux)
	ready := src
	if cfg.XDSListen != "" {
		cp, xsrc, err := startXDS(ctx, g, cfg, client, log, m)
		if err != nil {
			return err
		}
		ready = both{src, xsrc}
		log.Info("control plane started", "listen", cp.Addr(), "advertised", cfg.Inject().XDS.Address, "watch_namespace", cfg.XDSWatchNamespace)
	}
	whLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	defer whLn.Close() // on an early return; Shutdown closes it otherwise
	adLn, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		return fmt.Errorf("--admin-listen: %w", err)
	}
	defer adLn.Close()
	wh := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    64 << 10,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: src.GetCertificate},
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	if cfg.HTTP2 {
		wh.TLSConfig.NextProtos = []string{"h2", "http/1.1"}
	} else {
		// HTTP/1.1 only: no ALPN "h2", and no HTTP/2 server behind it. Also the shorter path
		// per review: the connection's goroutine reads the body and runs the handler, where
		// HTTP/2 hands each request and its body between goroutines.
		wh.TLSConfig.NextProtos = []string{"http/1.1"}
		wh.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	}
	if cfg.ClientCAFile != "" {
		cas := &certs.PoolSource{File: cfg.ClientCAFile, Log: log}
		if err := cas.Reload(); err != nil {
			return fmt.Errorf("--client-ca-file: %w", err)
		}
		g.Go(func() error { cas.Run(ctx, 10*time.Second); return nil })
		RequireClientCert(wh.TLSConfig, cas.Pool, cfg.ClientNames)
	}
	admin := &http.Server{Handler: AdminHandler(ready, m), ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 16 << 10}
	serve := func(name string, serve func() error) {
		g.Go(func() error {
			if err := serve(); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	}
	serve("webhook", func() error { return wh.ServeTLS(whLn, "", "") })
	serve("admin", func() error { return admin.Serve(adLn) })
	log.Info("injector started", "listen", whLn.Addr().String(), "admin", adLn.Addr().String(), "tls_mode", cfg.TLSMode, "namespace", cfg.Namespace)
	// On SIGTERM, or when any goroutine of the group fails: stop the rest (the control plane
	// and reloaders by the context), drain the servers, and join everything.
	<-ctx.Done()
	cancel()
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	_ = wh.Shutdown(sctx)
	_ = admin.Shutdown(sctx)
	if err := g.Wait(); err != nil {
		return err
	}
	log.Info("injector stopped")
	return nil
}

// startXDS binds and runs the control plane: its serving certificate from files (reloaded),
// client certificates required and verified against --xds-client-ca-file (reloaded). Its
// goroutines run in g; an error of the control plane while ctx is live fails the group.
func startXDS(ctx context.Context, g *errgroup.Group, cfg *Config, client kubernetes.Interface, log *slog.Logger, m *metrics.Metrics) (*xds.Server, certs.Source, error) {
	fsrc := &certs.FileSource{CertFile: cfg.XDSTLSCertFile, KeyFile: cfg.XDSTLSKeyFile, Name: "control plane", Log: log}
	if err := fsrc.Reload(); err != nil {
		return nil, nil, fmt.Errorf("--xds-tls-cert-file: %w", err)
	}
	cas := &certs.PoolSource{File: cfg.XDSClientCAFile, Log: log}
	if err := cas.Reload(); err != nil {
		return nil, nil, fmt.Errorf("--xds-client-ca-file: %w", err)
	}
	g.Go(func() error { fsrc.Run(ctx, 10*time.Second); return nil })
	g.Go(func() error { cas.Run(ctx, 10*time.Second); return nil })
	cp, err := xds.New(xds.Config{
		Listen:    cfg.XDSListen,
		TLS:       XDSTLS(fsrc.GetCertificate, cas.Pool),
		Client:    client,
		Namespace: cfg.XDSWatchNamespace,
		Debounce:  cfg.XDSDebounce,
		Logger:    log,
		OnNack: func(_, typeURL, _ string) {
			t := typeURL[strings.LastIndexByte(typeURL, '.')+1:]
			if !slices.Contains(metrics.XDSTypes, t) {
				t = "other"
			}
			m.XDSNacks.WithLabelValues(t).Inc()
		},
		OnSnapshot: func(string) { m.XDSSnapshots.Inc() },
	})
	if err != nil {
		return nil, nil, fmt.Errorf("--xds-listen: %w", err)
	}
	g.Go(func() error {
		// After ctx ends (shutdown, or another goroutine failed) its error is not news.
		if err := cp.Run(ctx); err != nil && ctx.Err() == nil {
			return fmt.Errorf("control plane: %w", err)
		}
		return nil
	})
	return cp, fsrc, nil
}

// XDSTLS is the control plane's server TLS: TLS 1.3, a client certificate required and
// verified against the pool current at each handshake, HTTP/2 (gRPC) by ALPN.
func XDSTLS(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error), pool func() (*x509.CertPool, error)) *tls.Config {
	base := &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: getCert, NextProtos: []string{"h2"}}
	RequireClientCert(base, pool, nil)
	return base
}

// RequireClientCert makes base (a server's TLS configuration, NextProtos set) require a client
// certificate that chains to the pool current at each handshake and, if names are given, whose
// CN or a DNS SAN is one of them.
func RequireClientCert(base *tls.Config, pool func() (*x509.CertPool, error), names []string) {
	base.ClientAuth = tls.RequireAndVerifyClientCert // what the handshakes do (and say they do)
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		p, err := pool()
		if err != nil {
			return nil, err
		}
		c := base.Clone()
		c.GetConfigForClient = nil
		c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, p
		if len(names) > 0 {
			c.VerifyPeerCertificate = func(_ [][]byte, chains [][]*x509.Certificate) error {
				leaf := chains[0][0]
				if slices.Contains(names, leaf.Subject.CommonName) || slices.ContainsFunc(leaf.DNSNames, func(n string) bool { return slices.Contains(names, n) }) {
					return nil
				}
				return fmt.Errorf("client certificate %q (DNS names %v) is not one of --client-names %v", leaf.Subject.CommonName, leaf.DNSNames, names)
			}
		}
		return c, nil
	}
}

// both is ready when both sources are (the webhook's and the control plane's certificates).
type both struct {
	certs.Source
	other certs.Source
}

func (b both) Ready() bool { return b.Source.Ready() && b.other.Ready() }

// AdminHandler serves /healthz, /readyz (a serving certificate is loaded) and /metrics.
func AdminHandler(src certs.Source, m *metrics.Metrics) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !src.Ready() {
			http.Error(w, "not ready: no valid serving certificate loaded", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry}))
	return mux
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig: %w", err)
		}
		return rc, nil
	}
	rc, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("no --kubeconfig and not in a cluster: %w", err)
	}
	return rc, nil
}
