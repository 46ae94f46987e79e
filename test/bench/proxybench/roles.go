package proxybench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// RoleEnv names the environment variable that turns the harness's own executable (the
// proxybench program or its test binary) into one of its helper processes: the app or the
// plain Go reverse proxy. Helpers run as separate processes so that their memory and CPU are
// measured like the proxies'.
const RoleEnv = "PROXYBENCH_ROLE"

// PayloadSize is the app's response body.
const PayloadSize = 1024

// payload is the app's answer to every GET.
var payload = func() []byte {
	b := make([]byte, PayloadSize)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}()

// RunRole runs the helper named by $PROXYBENCH_ROLE and reports whether there was one; main
// functions and TestMain call it first. The helper serves until SIGTERM.
func RunRole() (bool, error) {
	role := os.Getenv(RoleEnv)
	if role == "" {
		return false, nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fs := flag.NewFlagSet(role, flag.ContinueOnError)
	switch role {
	case "app":
		return true, runApp(ctx, fs)
	case "goproxy":
		return true, runGoProxy(ctx, fs)
	}
	if run, ok := grpcRoles[role]; ok {
		return true, run(ctx, fs)
	}
	return true, fmt.Errorf("%s=%q: unknown role", RoleEnv, role)
}

// server is how every helper serves HTTP: HTTP/1.1 only, keep-alive, with timeouts.
func server(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
}

// serveAll serves each server on its listener until ctx ends.
func serveAll(ctx context.Context, srvs map[*http.Server]net.Listener) error {
	errc := make(chan error, len(srvs))
	for s, ln := range srvs {
		go func() {
			if s.TLSConfig != nil {
				ln = tls.NewListener(ln, s.TLSConfig)
			}
			errc <- s.Serve(ln)
		}()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for s := range srvs {
		_ = s.Shutdown(sctx)
	}
	return nil
}

func appHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", "1024")
		_, _ = w.Write(payload)
	})
}

// relayHandler is an app that answers by calling another service, as the records API calls
// the inference server: it forwards the chain headers its inbound proxy handed it (so that
// its outbound proxy continues that chain) and relays the answer.
func relayHandler(upstream string) http.Handler {
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute}}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, upstream+r.URL.RequestURI(), nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		for _, h := range []string{"Countersign-Chain", "Countersign-Chain-Tokens"} {
			if v := r.Header.Get(h); v != "" {
				req.Header.Set(h, v)
			}
		}
		resp, err := c.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(b)
	})
}

func listen(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }

// runApp serves the 1 KiB payload in plaintext, and the two relays.
func runApp(ctx context.Context, fs *flag.FlagSet) error {
	plain := fs.String("plain", "", "plaintext listen address")
	relayDirect := fs.String("relay-direct", "", "listen address of the relay that calls the app directly")
	relayChain := fs.String("relay-chain", "", "listen address of the relay that calls through an outbound proxy")
	relayChainTo := fs.String("relay-chain-to", "", "the outbound proxy's URL")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	srvs := map[*http.Server]net.Listener{}
	add := func(addr string, h http.Handler) error {
		if addr == "" {
			return nil
		}
		ln, err := listen(addr)
		if err != nil {
			return err
		}
		srvs[server(h)] = ln
		return nil
	}
	err := errors.Join(add(*plain, appHandler()), add(*relayDirect, relayHandler("http://"+*plain)))
	if err == nil && *relayChain != "" {
		err = add(*relayChain, relayHandler(*relayChainTo))
	}
	if err != nil {
		return err
	}
	return serveAll(ctx, srvs)
}

// runGoProxy is one proxy of the plain Go mTLS pair: httputil.ReverseProxy with Rewrite, the
// same upstream pool sizes as our proxy's listeners. The front one (A) listens in plaintext
// and calls its upstream over TLS 1.3 with a client certificate; the back one (B) terminates
// TLS 1.3, requires a client certificate signed by the bench's CA, and calls the app.
func runGoProxy(ctx context.Context, fs *flag.FlagSet) error {
	addr := fs.String("listen", "", "listen address")
	to := fs.String("to", "", "upstream URL (http:// or https://)")
	cert := fs.String("cert", "", "certificate file: served (with -client-ca) and presented to an https upstream")
	key := fs.String("key", "", "key file")
	ca := fs.String("ca", "", "CA file: required of clients when serving TLS, and of an https upstream")
	serveTLS := fs.Bool("tls", false, "terminate TLS 1.3 and require a client certificate")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	up, err := url.Parse(*to)
	if err != nil {
		return err
	}
	var pool *x509.CertPool
	var pair tls.Certificate
	if *cert != "" {
		if pair, err = tls.LoadX509KeyPair(*cert, *key); err != nil {
			return err
		}
		b, err := os.ReadFile(*ca)
		if err != nil {
			return err
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return fmt.Errorf("%s: no certificate", *ca)
		}
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     2 * time.Minute,
		TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, Certificates: []tls.Certificate{pair},
			ServerName: up.Hostname()},
		// HTTP/1.1 between the pair, like ours.
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(up)
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport: tr,
	}
	ln, err := listen(*addr)
	if err != nil {
		return err
	}
	s := server(rp)
	if *serveTLS {
		s.TLSConfig = &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{pair},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    pool,
			NextProtos:   []string{"http/1.1"},
		}
	}
	return serveAll(ctx, map[*http.Server]net.Listener{s: ln})
}
