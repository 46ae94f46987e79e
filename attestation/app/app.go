// Package app is the attestation-service binary: options from flags, then their validation,
// then the service configuration they name, then Run, which serves until its context ends.
// The command's main is a few lines around Run (as the injector's is around injector/app).
package app

import (
	"context"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/countersign/countersign/attestation/maapolicy"
	"github.com/countersign/countersign/attestation/quote"
	"github.com/countersign/countersign/attestation/service"
	"github.com/countersign/countersign/internal/cmdexit"
	"github.com/countersign/countersign/internal/version"
)

// Server limits. Requests are small JSON documents; nothing streams.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 64 << 10
	shutdownTimeout   = 10 * time.Second
)

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

type options struct {
	listen, issuer            string
	signingKey, signingCert   string
	tlsCert, tlsKey, tlsCAOut string
	tokenLifetime             time.Duration
	simPlatformKeys           stringList
	policy, adminTokenFile    string
	maxBody                   int64
	logFormat                 string
	showVersion               bool
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("attestation-service", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8443", "address to serve HTTPS on (port 0 picks a free port)")
	fs.StringVar(&o.issuer, "issuer", "", "base URL clients use, https://host[:port] with no trailing slash (default: https://<listen address>)")
	fs.StringVar(&o.signingKey, "signing-key", "", "token signing key, PEM (RSA); generated with its certificate when neither file exists (required)")
	fs.StringVar(&o.signingCert, "signing-cert", "", "token signing certificate, PEM, published in /certs (required)")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "TLS serving certificate chain, PEM (default: generate a CA and a certificate at start)")
	fs.StringVar(&o.tlsKey, "tls-key", "", "TLS serving key, PEM (with --tls-cert)")
	fs.StringVar(&o.tlsCAOut, "tls-ca-out", "", "where to write the generated TLS CA certificate for clients to trust (required without --tls-cert)")
	fs.DurationVar(&o.tokenLifetime, "token-lifetime", service.DefaultTokenLifetime, "lifetime of issued tokens")
	fs.Var(&o.simPlatformKeys, "sim-platform-key", "trusted simulated platform public key, PEM (the .pub beside the platform key); repeatable")
	fs.StringVar(&o.policy, "policy", "", "initial attestation policy file, MAA policy text (default: MAA's default SGX policy)")
	fs.StringVar(&o.adminTokenFile, "admin-token-file", "", "file holding the bearer token that authorizes PUT /policies (default: policy updates disabled)")
	fs.Int64Var(&o.maxBody, "max-body", service.DefaultMaxBodyBytes, "largest request body accepted, in bytes")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format on stderr: text or json")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, cmdexit.UsageError(err)
	}
	if fs.NArg() > 0 {
		return nil, cmdexit.Usagef("unexpected argument %q: all settings are flags", fs.Arg(0))
	}
	return o, nil
}

// Run is the attestation-service command: `sim-request` prints a simulated attest request;
// otherwise it parses the flags (options), checks them (validate), loads what they name
// (serviceConfig) and serves until ctx ends.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "sim-request" {
		return simRequest(args[1:], stdout, stderr)
	}
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if o.showVersion {
		fmt.Fprintln(stdout, "attestation-service", version.Version)
		return nil
	}
	// Check the flags before touching anything.
	if err := o.validate(); err != nil {
		return err
	}
	handler := o.logHandler(stderr)
	log := slog.New(handler)
	cfg, err := o.serviceConfig(log)
	if err != nil {
		return err
	}
	return serve(ctx, o, cfg, handler, stdout)
}

// validate checks the flags on their own; every error is a usage error naming its flag.
func (o *options) validate() error {
	switch o.logFormat {
	case "text", "json":
	default:
		return cmdexit.Usagef("--log-format: %q, expected text or json", o.logFormat)
	}
	if o.signingKey == "" || o.signingCert == "" {
		return cmdexit.Usagef("--signing-key and --signing-cert: both are required (they are generated when neither file exists)")
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return cmdexit.Usagef("--tls-cert and --tls-key: give both, or neither to generate a certificate")
	}
	if o.tlsCert == "" && o.tlsCAOut == "" {
		return cmdexit.Usagef("--tls-ca-out: required when --tls-cert/--tls-key are not given, so that clients can trust the generated certificate")
	}
	if o.tokenLifetime < time.Second {
		return cmdexit.Usagef("--token-lifetime: %v, expected at least 1s", o.tokenLifetime)
	}
	if o.maxBody <= 0 {
		return cmdexit.Usagef("--max-body: %d, expected a positive number of bytes", o.maxBody)
	}
	return nil
}

// logHandler is the log handler --log-format selects (validated).
func (o *options) logHandler(stderr io.Writer) slog.Handler {
	if o.logFormat == "json" {
		return slog.NewJSONHandler(stderr, nil)
	}
	return slog.NewTextHandler(stderr, nil)
}

// serviceConfig loads the files the flags name into the service configuration (all but the
// issuer, which may depend on the bound address).
func (o *options) serviceConfig(log *slog.Logger) (service.Config, error) {
	cfg := service.Config{TokenLifetime: o.tokenLifetime, MaxBodyBytes: o.maxBody, Logger: log}
	for _, path := range o.simPlatformKeys {
		k, err := loadPlatformKey(path)
		if err != nil {
			return cfg, fmt.Errorf("--sim-platform-key: %w", err)
		}
		cfg.SimPlatformKeys = append(cfg.SimPlatformKeys, k)
	}
	if o.policy != "" {
		b, err := os.ReadFile(o.policy)
		if err != nil {
			return cfg, fmt.Errorf("--policy: %w", err)
		}
		if _, err := maapolicy.Parse(string(b)); err != nil {
			return cfg, fmt.Errorf("--policy: %s:%w", o.policy, err)
		}
		cfg.PolicyText = string(b)
	}
	if o.adminTokenFile != "" {
		b, err := os.ReadFile(o.adminTokenFile)
		if err != nil {
			return cfg, fmt.Errorf("--admin-token-file: %w", err)
		}
		if cfg.AdminToken = strings.TrimSpace(string(b)); cfg.AdminToken == "" {
			return cfg, fmt.Errorf("--admin-token-file: %s is empty", o.adminTokenFile)
		}
	}
	var err error
	cfg.SigningKey, cfg.SigningCert, err = loadSigning(o, log)
	return cfg, err
}

// serve binds the listener, completes the configuration (issuer, TLS certificate) and serves
// until ctx ends, then drains. The serving goroutine is joined before serve returns.
func serve(ctx context.Context, o *options, cfg service.Config, handler slog.Handler, stdout io.Writer) error {
	log := cfg.Logger
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	defer ln.Close()
	cfg.Issuer = o.issuer
	if cfg.Issuer == "" {
		cfg.Issuer = defaultIssuer(ln.Addr().(*net.TCPAddr))
	}
	svc, err := service.New(cfg)
	if err != nil {
		return flagError(err)
	}

	caPath := o.tlsCAOut
	var tlsCert tls.Certificate
	if o.tlsCert != "" {
		if tlsCert, err = tls.LoadX509KeyPair(o.tlsCert, o.tlsKey); err != nil {
			return fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		caPath = "(not generated: --tls-cert given)"
	} else {
		u, _ := url.Parse(cfg.Issuer)
		cert, caPEM, err := service.GenerateTLS([]string{u.Hostname(), "localhost", "127.0.0.1", "::1"}, time.Now())
		if err != nil {
			return fmt.Errorf("generate TLS certificate: %w", err)
		}
		if err := service.WriteCA(o.tlsCAOut, caPEM); err != nil {
			return fmt.Errorf("--tls-ca-out: %w", err)
		}
		tlsCert = cert
	}

	srv := &http.Server{
		Handler:           svc.Handler(),
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{tlsCert}},
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(handler, slog.LevelWarn),
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve: %w", err)
		}
		return nil
	})
	fmt.Fprintf(stdout, "attestation-service listening on %s issuer=%s ca=%s\n", ln.Addr(), cfg.Issuer, caPath)
	log.Info("listening", slog.String("addr", ln.Addr().String()), slog.String("issuer", cfg.Issuer), slog.String("kid", svc.KeyID()),
		slog.Int("sim_platform_keys", len(cfg.SimPlatformKeys)), slog.Bool("policy_updates", cfg.AdminToken != ""), slog.String("version", version.Version))

	<-gctx.Done()
	if ctx.Err() == nil {
		return g.Wait() // the server failed by itself
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		_ = g.Wait()
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := g.Wait(); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

func loadSigning(o *options, log *slog.Logger) (*rsa.PrivateKey, *x509.Certificate, error) {
	key, cert, created, err := service.LoadOrCreateSigningKey(o.signingKey, o.signingCert, time.Now())
	if err != nil {
		return nil, nil, fmt.Errorf("--signing-key/--signing-cert: %w", err)
	}
	if created {
		log.Info("generated a token signing key", slog.String("key", o.signingKey), slog.String("cert", o.signingCert))
	}
	return key, cert, nil
}

// loadPlatformKey reads a simulated platform's public key; given the private key file by
// mistake, it uses its public half.
func loadPlatformKey(path string) (ed25519.PublicKey, error) {
	pub, err := quote.LoadPlatformPublicKey(path)
	if err == nil {
		return pub, nil
	}
	if priv, perr := quote.LoadPlatformKey(path); perr == nil {
		return priv.Public().(ed25519.PublicKey), nil
	}
	return nil, err
}

// defaultIssuer is https://<listen address>, with localhost for an unspecified address.
func defaultIssuer(addr *net.TCPAddr) string {
	host := addr.IP.String()
	if addr.IP == nil || addr.IP.IsUnspecified() {
		host = "localhost"
	}
	return "https://" + net.JoinHostPort(host, fmt.Sprint(addr.Port))
}

// flagError maps a service.Config field error to the flag that sets it.
func flagError(err error) error {
	msg := err.Error()
	for field, flagName := range map[string]string{
		"Config.Issuer":          "--issuer",
		"Config.TokenLifetime":   "--token-lifetime",
		"Config.PolicyText":      "--policy",
		"Config.AdminToken":      "--admin-token-file",
		"Config.MaxBodyBytes":    "--max-body",
		"Config.SigningKey":      "--signing-key",
		"Config.SigningCert":     "--signing-cert",
		"Config.SimPlatformKeys": "--sim-platform-key",
	} {
		if strings.HasPrefix(msg, field) {
			return errors.New(flagName + strings.TrimPrefix(msg, field))
		}
	}
	return err
}
