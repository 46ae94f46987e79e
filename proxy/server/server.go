// Package server assembles a proxy from its configuration: the trust core (policy engine),
// the attested identity with its refresh loop, the inbound, outbound and admin listeners.
// The binary's `proxy run` and the integration tests both use it.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/attestation/attester"
	"github.com/countersign/countersign/attestation/maa"
	"github.com/countersign/countersign/attestation/policy"
	"github.com/countersign/countersign/attestation/token"
	"github.com/countersign/countersign/proxy/admin"
	"github.com/countersign/countersign/proxy/attestedtls"
	"github.com/countersign/countersign/proxy/chain"
	"github.com/countersign/countersign/proxy/config"
	"github.com/countersign/countersign/proxy/httpframe"
	"github.com/countersign/countersign/proxy/httpproxy"
	"github.com/countersign/countersign/proxy/identity"
	"github.com/countersign/countersign/proxy/metrics"
	"github.com/countersign/countersign/proxy/tcpproxy"
)

// Options are what tests and the binary may inject.
type Options struct {
	Logger *slog.Logger
	// Now is the clock of the verifier, the chain and the identity; nil means time.Now.
	Now func() time.Time
	// TokenConfig, if set, adjusts the token verifier's configuration.
	TokenConfig func(*token.Config)
	// Attester replaces the configured one (tests).
	Attester attester.Attester
	// Listen, if set, binds the listener called name (tests); nil means net.Listen.
	Listen func(name, addr string) (net.Listener, error)
}

// Server is a running proxy.
type Server struct {
	cfg      *config.Config
	log      *slog.Logger
	now      func() time.Time
	Engine   *policy.Engine
	Identity *identity.Source
	Metrics  *metrics.Metrics
	deps     *httpproxy.Deps
	cp       controlPlane // the xDS side (proxy/mesh); nil without a control plane
	listen   func(name, addr string) (net.Listener, error)

	addrMu sync.Mutex
	addrs  map[string]string
	tasks  []task // the data path's listeners, bound by Start

	group       *errgroup.Group
	serveCtx    context.Context         // ends when serving must stop: ctx ended or a listener failed
	cancelServe context.CancelCauseFunc // called by fail
	admin       func(ctx context.Context) error
	adminDone   chan struct{}
	adminErr    error
	stopAdmin   context.CancelFunc
	stopping    atomic.Bool                  // serving has ended or is ending: not ready
	failure     atomic.Pointer[failureCause] // the first listener failure
}

// task is one listener's serving loop: it returns nil once ctx has ended and it has drained,
// and an error if it stops serving before.
type task struct {
	name string
	run  func(ctx context.Context) error
}

type failureCause struct{ err error }

// controlPlane is what the wiring needs of proxy/mesh. A build with -tags noxds has none
// (noxds.go), and refuses a configuration with an xds section.
type controlPlane interface {
	Run(ctx context.Context)
	LivePolicy(in config.Inbound, port uint16) func() (attestedtls.Checker, []string)
	Outbound(out config.Outbound) (http.Handler, func(ctx context.Context) (net.Conn, error))
	Route(dst netip.AddrPort) (ok, isHTTP bool)
	ServeRoute(w http.ResponseWriter, r *http.Request, listener string, dst netip.AddrPort)
	PipeRoute(ctx context.Context, c net.Conn, listener string, dst netip.AddrPort)
}

// New builds a proxy without starting it.
func New(cfg *config.Config, opts Options) (*Server, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	p, err := policy.Load(cfg.PolicyFile)
	if err != nil {
		return nil, fmt.Errorf("policyFile: %w", err)
	}
	if err := cfg.CheckPolicy(p); err != nil {
		return nil, err
	}
	eng, err := policy.NewEngine(p, log, func(c *token.Config) {
		c.Now = now
		if opts.TokenConfig != nil {
			opts.TokenConfig(c)
		}
	})
	if err != nil {
		return nil, err
	}
	a := opts.Attester
	if a == nil {
		sim := cfg.Attester.SimIdentity
		id := attester.SimIdentity{MREnclave: sim.MREnclave, MRSigner: sim.MRSigner, ProductID: sim.ProductID, SVN: sim.SVN}
		a, err = attester.New(cfg.Attester.Type, attester.Options{SimPlatformKey: cfg.Attester.SimPlatformKey, SimIdentity: id})
		if err != nil {
			return nil, fmt.Errorf("attester: %w", err)
		}
	}
	hc, err := maa.NewHTTPClient(cfg.AttestationService.CAFile, cfg.AttestationService.Timeout.D())
	if err != nil {
		return nil, fmt.Errorf("attestationService.caFile: %w", err)
	}
	m := metrics.New()
	src, err := identity.New(identity.Config{
		Attester:      a,
		Issuer:        &maa.Client{BaseURL: cfg.AttestationService.URL, Endpoint: maa.Endpoint(cfg.AttestationService.Endpoint), HTTP: hc},
		Checker:       eng,
		Identity:      cfg.Identity,
		Claimed:       cfg.Claimed,
		RefreshAt:     cfg.Refresh.At,
		Jitter:        cfg.Refresh.Jitter,
		MinBackoff:    cfg.Refresh.MinBackoff.D(),
		MaxBackoff:    cfg.Refresh.MaxBackoff.D(),
		AttestTimeout: cfg.AttestationService.Timeout.D(),
		Now:           now,
		Logger:        log,
		OnRefresh:     m.Refreshed,
	})
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		log:      log,
		now:      now,
		Engine:   eng,
		Identity: src,
		Metrics:  m,
		addrs:    map[string]string{},
		listen:   opts.Listen,
	}
	if s.listen == nil {
		s.listen = func(_, addr string) (net.Listener, error) { return net.Listen("tcp", addr) }
	}
	s.deps = &httpproxy.Deps{
		Checker:  eng,
		Identity: src,
		Metrics:  m,
		Logger:   log,
		Limits:   cfg.Limits,
		Chain:    cfg.Chain,
		Now:      now,
		Live: &chain.Live{
			Checker: eng, Window: cfg.Chain.Window.D(), Replay: chain.NewTTLSet[[32]byte, struct{}](1 << 20),
			Limits: chain.Limits{
				MaxHops:     cfg.Chain.MaxHops,
				MaxBytes:    cfg.Chain.MaxBytes,
				MaxAge:      cfg.Chain.MaxAge.D(),
				Skew:        cfg.Chain.Window.D(),
				ChannelLast: cfg.Chain.PeerSignatures == config.PeerSignaturesChannel,
			},
		},
		Forwarded: chain.NewTTLSet[string, *chain.Chain](1 << 16),
	}
	if cfg.XDS != nil {
		if s.cp, err = s.newControlPlane(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Addr returns the bound address of the listener called name ("admin" for the admin listener).
// It is safe to call while Run binds them, and "" until then.
func (s *Server) Addr(name string) string {
	s.addrMu.Lock()
	defer s.addrMu.Unlock()
	return s.addrs[name]
}

func (s *Server) onReject(listener string, rej *attestation.Rejection) {
	s.Metrics.Reject(listener, rej.Code)
}

// Run serves until ctx ends or a listener fails, whichever is first, then drains: it returns
// nil after a clean shutdown and the first listener failure otherwise (the process then exits
// non-zero and the kubelet restarts it).
func (s *Server) Run(ctx context.Context) error {
	if err := s.Start(ctx); err != nil {
		return err
	}
	return s.Wait()
}

// Start binds every listener and starts serving and refreshing; it returns once the listeners
// are bound. Serving stops when ctx ends or a listener fails; Wait then returns after draining.
func (s *Server) Start(ctx context.Context) error {
	// Keys first, so that the first peer check does not wait for them (failure is not fatal:
	// the verifier retries, and handshakes fail closed meanwhile).
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if err := s.Engine.Verifier.Prefetch(pctx); err != nil {
		s.log.Warn("cannot fetch the attestation service's keys yet", "err", err)
	}
	cancel()
	s.serveCtx, s.cancelServe = context.WithCancelCause(ctx)
	var bound []net.Listener
	fail := func(err error) error {
		for _, l := range bound {
			l.Close()
		}
		return err
	}
	listen := func(name, addr string) (net.Listener, error) {
		ln, err := s.listen(name, addr)
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", name, err)
		}
		bound = append(bound, ln)
		s.addrMu.Lock()
		s.addrs[name] = ln.Addr().String()
		s.addrMu.Unlock()
		return &watchedListener{Listener: ln, name: name, s: s}, nil
	}
	for _, in := range s.cfg.Inbound {
		ln, err := listen(in.Name, in.Listen)
		if err != nil {
			return fail(err)
		}
		if err := s.inbound(in, ln, listenPort(ln)); err != nil {
			return fail(fmt.Errorf("inbound %s: %w", in.Name, err))
		}
	}
	for _, out := range s.cfg.Outbound {
		ln, err := listen(out.Name, out.Listen)
		if err != nil {
			return fail(err)
		}
		s.outbound(out, ln)
	}
	if err := s.startTransparent(listen); err != nil {
		return fail(err)
	}
	if s.cfg.Admin.Listen != "" {
		ln, err := listen("admin", s.cfg.Admin.Listen)
		if err != nil {
			return fail(err)
		}
		srv := s.httpServer(admin.Handler(readiness{s}, s.cfg.Identity, s.Metrics.Registry), nil)
		s.admin = s.serveHTTP(srv, ln)
	}

	// Every reason code starts at zero on every data-path listener, so that a rate or an
	// alert on a code exists before the first rejection.
	for name := range s.addrs {
		if name != "admin" {
			for _, c := range Codes() {
				s.Metrics.Rejections.WithLabelValues(name, string(c))
			}
		}
	}
	g, gctx := errgroup.WithContext(s.serveCtx)
	s.group = g
	for _, t := range s.tasks {
		g.Go(func() error {
			err := t.run(gctx)
			if err == nil && gctx.Err() == nil {
				err = errors.New("stopped serving")
			}
			if err != nil {
				return s.fail(fmt.Errorf("listener %s: %w", t.name, err))
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		s.stopping.Store(true) // not ready while draining
		s.Metrics.Ready.Set(0)
		return nil
	})
	g.Go(func() error { s.Identity.Run(gctx); return nil })
	g.Go(func() error {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			if s.Ready() {
				s.Metrics.Ready.Set(1)
			} else {
				s.Metrics.Ready.Set(0)
			}
			select {
			case <-gctx.Done():
				return nil
			case <-t.C:
			}
		}
	})
	// Last: the control plane reads the inbound listeners registered above.
	if s.cp != nil {
		g.Go(func() error { s.cp.Run(gctx); return nil })
	}
	// The admin listener outlives the data path's drain, so that /readyz says no meanwhile;
	// Wait stops it. Its own failure fails the group like any listener's.
	s.adminDone = make(chan struct{})
	if s.admin == nil {
		close(s.adminDone)
		return nil
	}
	actx, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.stopAdmin = stop
	go func() {
		defer close(s.adminDone)
		s.adminErr = s.admin(actx)
	}()
	g.Go(func() error {
		select {
		case <-s.adminDone:
			err := s.adminErr
			if err == nil {
				err = errors.New("stopped serving")
			}
			return s.fail(fmt.Errorf("listener admin: %w", err))
		case <-gctx.Done():
			return nil
		}
	})
	return nil
}

// Codes is every reason code this proxy can report (in Countersign-Reject, the rejection
// metric's reason label and logs), each package's list joined; docs/protocol.md section 6
// documents each (TestReasonCodesDocumented).
func Codes() []attestation.Code {
	seen := map[attestation.Code]bool{}
	var out []attestation.Code
	for _, l := range [][]attestation.Code{attestation.Codes, attestedtls.Codes, chain.Codes, httpproxy.Codes, tcpproxy.Codes, {CodeNoRoute}, meshCodes} {
		for _, c := range l {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
			}
		}
	}
	return out
}

// fail records the first listener failure (readiness turns false at once) and returns err.
func (s *Server) fail(err error) error {
	if s.failure.CompareAndSwap(nil, &failureCause{err}) {
		s.stopping.Store(true)
		s.Metrics.Ready.Set(0)
		s.log.Error("a listener failed: stopping the proxy", "err", err)
		s.cancelServe(err) // every other listener drains now, not when this one has drained
	}
	return err
}

// watchedListener reports its listener's failure the moment Accept fails for good, so that
// /readyz turns false and the other listeners start draining at once (not when this
// listener's own connections have drained). Errors after serving was told to stop are ours.
type watchedListener struct {
	net.Listener
	name string
	s    *Server
}

func (l *watchedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil && l.s.serveCtx.Err() == nil && !transient(err) {
		l.s.fail(fmt.Errorf("listener %s: %w", l.name, err))
	}
	return c, err
}

// transient is whether an accept error is one the serving loops back off from and retry
// (EMFILE, ECONNABORTED, a timeout), as net/http's server does.
func transient(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var tmp interface{ Temporary() bool }
	return errors.As(err, &tmp) && tmp.Temporary()
}

// Ready is whether the proxy holds a valid token and is serving (not draining, no listener
// failed): what /readyz reports.
func (s *Server) Ready() bool { return !s.stopping.Load() && s.Identity.Ready() }

// Failure is the first listener failure, nil while every listener serves.
func (s *Server) Failure() error {
	if f := s.failure.Load(); f != nil {
		return f.err
	}
	return nil
}

// readiness is the admin listener's view of the proxy: its identity, ready only while serving.
type readiness struct{ s *Server }

func (r readiness) Current() *identity.Current { return r.s.Identity.Current() }
func (r readiness) Ready() bool                { return r.s.Ready() }

// Wait blocks until every listener has drained after ctx ended or a listener failed, then
// stops the admin listener; it returns the first listener failure.
func (s *Server) Wait() error {
	err := s.group.Wait()
	if f := s.Failure(); f != nil {
		err = f
	}
	if s.stopAdmin != nil {
		s.stopAdmin()
	}
	<-s.adminDone
	return err
}

func (s *Server) httpServer(h http.Handler, tlsCfg *tls.Config) *http.Server {
	l := s.cfg.Limits
	return &http.Server{
		Handler:           h,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: l.ReadHeaderTimeout.D(),
		IdleTimeout:       l.IdleTimeout.D(),
		MaxHeaderBytes:    l.MaxHeaderBytes,
		// HTTP/1.1 only: no h2 over TLS and no h2c.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ErrorLog:     slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

// serveHTTP returns the serving loop of srv on ln: it shuts srv down (closing what is left
// after the drain time) when ctx ends or ln fails; a failure is returned after the drain.
func (s *Server) serveHTTP(srv *http.Server, ln net.Listener) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(ln) }()
		var failed error
		select {
		case failed = <-errc:
			// The listener died: drain what it had accepted like a shutdown, so that no
			// connection outlives the server, and report why.
			if failed == nil || errors.Is(failed, http.ErrServerClosed) {
				failed = errors.New("stopped serving")
			}
		case <-ctx.Done():
		}
		dctx, cancel := context.WithTimeout(context.Background(), s.cfg.Limits.ShutdownTimeout.D())
		defer cancel()
		err := srv.Shutdown(dctx)
		if errors.Is(err, context.DeadlineExceeded) {
			srv.Close()
		}
		if failed != nil {
			return failed
		}
		if e := <-errc; e != nil && !errors.Is(e, http.ErrServerClosed) {
			return e
		}
		return nil
	}
}

func (s *Server) addTask(name string, run func(ctx context.Context) error) {
	s.tasks = append(s.tasks, task{name: name, run: run})
}

// serveProxy serves a data-path HTTP listener: TLS-terminated when tlsCfg is set, and behind
// the request-framing guard (proxy/httpframe), which reads the plaintext (above TLS) and lets
// h (wrapped in Deps.Framed) refuse request smuggling shapes that Go's server would otherwise
// normalize away. connCtx, if set, adds to each connection's context; it gets the connection
// the guard wraps.
func (s *Server) serveProxy(name string, h http.Handler, ln net.Listener, tlsCfg *tls.Config, connCtx func(context.Context, net.Conn) context.Context) {
	l := s.cfg.Limits
	srv := s.httpServer(s.deps.Framed(name, h), tlsCfg)
	srv.DisableGeneralOptionsHandler = true // "OPTIONS *" too is numbered by Framed
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if connCtx != nil {
			ctx = connCtx(ctx, httpframe.Inner(c))
		}
		return httpframe.WithConn(ctx, c)
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	s.addTask(name, s.serveHTTP(srv, httpframe.NewListener(ln, httpframe.Options{
		MaxHeaderBytes: l.MaxHeaderBytes, HandshakeTimeout: l.HandshakeTimeout.D(), Logger: s.log,
		OnUnserved: func(why httpframe.Reason) {
			s.log.Warn("request refused", "listener", name, "reason", string(httpproxy.CodeSmuggling), "detail", why.String())
			s.Metrics.Reject(name, httpproxy.CodeSmuggling)
		},
	})))
}

// limitListener refuses connections beyond n (they are closed at once and counted).
type limitListener struct {
	net.Listener
	sem    chan struct{}
	name   string
	reject func(string, attestation.Code)
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.sem <- struct{}{}:
			return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
		default:
			l.reject(l.name, tcpproxy.CodeConnLimit)
			c.Close()
		}
	}
}

// inbound serves an inbound listener. port is the key under which the control plane may narrow
// who may call it (the listener's port, or the app port in transparent mode).
func (s *Server) inbound(in config.Inbound, ln net.Listener, port uint16) error {
	l := s.cfg.Limits
	var tlsCfg *tls.Config
	var live func() (attestedtls.Checker, []string)
	if s.cp != nil && !in.Public && port != 0 {
		live = s.cp.LivePolicy(in, port)
	}
	if in.Public {
		cert, err := tls.LoadX509KeyPair(in.CertFile, in.KeyFile)
		if err != nil {
			return fmt.Errorf("certFile/keyFile: %w", err)
		}
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
	} else {
		tlsCfg = attestedtls.ServerConfig(s.Identity, s.Engine, attestedtls.Options{
			Listener:   in.Name,
			Identities: in.Allow,
			Current:    live,
			Logger:     s.log,
			OnReject:   s.onReject,
			NextProtos: []string{"http/1.1"},
		})
	}
	if in.Protocol == config.ProtocolTCP {
		app := in.ForwardTo
		d := &net.Dialer{Timeout: l.DialTimeout.D()}
		// tcpproxy.NewListener: TLS reads the socket without EAGAIN reads (TCP_INQ).
		s.serveTCP(in.Name, tls.NewListener(tcpproxy.NewListener(ln), tlsCfg), func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", app) })
		return nil
	}
	h := httpproxy.NewInbound(s.deps, in)
	if live != nil {
		h.WithPolicy(live)
	}
	if config.IsHTTP2(in.Protocol) {
		s.serveH2TLS(in.Name, h, s.limit(in.Name, ln), tlsCfg)
		return nil
	}
	s.serveProxy(in.Name, h, s.limit(in.Name, ln), tlsCfg, func(ctx context.Context, _ net.Conn) context.Context { return attestedtls.WithRecorder(ctx) })
	return nil
}

func (s *Server) outbound(out config.Outbound, ln net.Listener) {
	if out.Cluster != "" { // Validate requires xds, so s.cp is set
		h, dial := s.cp.Outbound(out)
		if dial != nil {
			s.serveTCP(out.Name, ln, dial)
		} else {
			s.serveProxy(out.Name, h, s.limit(out.Name, ln), nil, nil)
		}
		return
	}
	if out.Protocol == config.ProtocolTCP {
		host, _, _ := net.SplitHostPort(out.Upstream)
		d := attestedtls.Dialer(s.Identity, s.Engine, host, s.cfg.Limits.DialTimeout.D(), attestedtls.Options{
			Listener: out.Name, Identities: out.UpstreamIdentity, Logger: s.log, OnReject: s.onReject,
		})
		s.serveTCP(out.Name, ln, func(ctx context.Context) (net.Conn, error) {
			if !s.Identity.Ready() {
				return nil, attestation.Rejectf(httpproxy.CodeNoIdentity, "%v", identity.ErrNoIdentity)
			}
			raw, err := d.NetDialer.DialContext(ctx, "tcp", out.Upstream)
			if err != nil {
				return nil, err
			}
			tc := tls.Client(tcpproxy.NewConn(raw), d.Config) // TLS over the TCP_INQ reader
			if err := tc.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, err
			}
			return tc, nil
		})
		return
	}
	if config.IsHTTP2(out.Protocol) {
		s.serveH2c(out.Name, httpproxy.NewOutbound(s.deps, out), s.limit(out.Name, ln))
		return
	}
	s.serveProxy(out.Name, httpproxy.NewOutbound(s.deps, out), s.limit(out.Name, ln), nil, nil)
}

// serveTCP serves a TCP listener: each accepted connection is piped to one dial returns.
func (s *Server) serveTCP(name string, ln net.Listener, dial func(ctx context.Context) (net.Conn, error)) {
	l := s.cfg.Limits
	p := tcpproxy.New(tcpproxy.Options{
		Name:             name,
		MaxConns:         l.MaxConnections,
		IdleTimeout:      l.IdleTimeout.D(),
		HandshakeTimeout: l.HandshakeTimeout.D(),
		Dial:             dial,
		Logger:           s.log,
		OnReject:         s.Metrics.Reject,
		OnConn:           s.connGauge(name),
		Lifetime:         s.peerLifetime,
	})
	s.addTask(name, func(ctx context.Context) error { return p.Serve(ctx, ln, l.ShutdownTimeout.D()) })
}

// limit bounds an HTTP listener's open connections.
func (s *Server) limit(name string, ln net.Listener) net.Listener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, s.cfg.Limits.MaxConnections), name: name, reject: s.Metrics.Reject}
}

func (s *Server) connGauge(name string) func(int) {
	g := s.Metrics.Connections.WithLabelValues(name)
	return func(d int) { g.Add(float64(d)) }
}

// peerLifetime is when a TCP connection must end: when the attested side's token (the peer's;
// its certificate's NotAfter if earlier) or this proxy's own token expires, whichever is first. Attestation is checked at the
// handshake; a stream does not outlive the tokens that allowed it.
func (s *Server) peerLifetime(c net.Conn) time.Time {
	var end time.Time
	if cur := s.Identity.Current(); cur != nil {
		end = cur.Expiry
	}
	if tc, ok := c.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		if len(cs.PeerCertificates) == 1 {
			if exp := attestedtls.Expiry(cs.PeerCertificates[0]); end.IsZero() || exp.Before(end) {
				end = exp
			}
		}
	}
	return end
}
