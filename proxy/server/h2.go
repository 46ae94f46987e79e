package server

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/countersign/countersign/proxy/attestedtls"
	"github.com/countersign/countersign/proxy/httpframe"
	"github.com/countersign/countersign/proxy/httpproxy"
)

// HTTP/2 listeners (protocol http2 or grpc, docs/protocol.md section 11).
//
// An outbound listener speaks HTTP/2 over cleartext with prior knowledge to its app, nothing
// else. An inbound listener selects h2 or http/1.1 by ALPN: the TLS handshake runs here, before
// either server sees the connection, and the connection goes to an HTTP/2 server (Go's, which
// enforces the limits of h2Config) or to the HTTP/1.1 server behind the framing guard, as on an
// http listener. The certificate each connection presented is recorded during that handshake
// and handed to the server's connection context.

// h2Server is an HTTP/2 server for h (its protocols are set by the caller).
func (s *Server) h2Server(h http.Handler) *http.Server {
	srv := s.httpServer(h, nil)
	srv.TLSNextProto = nil // let net/http configure HTTP/2
	srv.HTTP2 = httpproxy.H2Config(s.cfg.Limits)
	srv.Protocols = new(http.Protocols)
	return srv
}

// serveH2c serves an outbound http2 or grpc listener: HTTP/2 with prior knowledge only.
func (s *Server) serveH2c(name string, h http.Handler, ln net.Listener) {
	srv := s.h2Server(s.deps.Framed(name, h))
	srv.Protocols.SetUnencryptedHTTP2(true)
	s.addTask(name, s.serveHTTP(srv, ln))
}

// serveH2TLS serves an inbound http2 or grpc listener: h2 and http/1.1 by ALPN.
func (s *Server) serveH2TLS(name string, h http.Handler, ln net.Listener, tlsCfg *tls.Config) {
	l := s.cfg.Limits
	tlsCfg = tlsCfg.Clone()
	tlsCfg.NextProtos = []string{"h2", "http/1.1"}
	sp := &alpnSplit{ln: ln, cfg: tlsCfg, timeout: l.HandshakeTimeout.D(), s: s}
	sp.h1 = newChanListener(sp)
	sp.h2 = newChanListener(sp)
	connCtx := func(ctx context.Context, c net.Conn) context.Context {
		if rec, ok := sp.recorded.LoadAndDelete(c); ok {
			return attestedtls.WithRecorded(ctx, rec.(*attestedtls.Recorded))
		}
		return attestedtls.WithRecorder(ctx)
	}

	h2 := s.h2Server(s.deps.Framed(name, h))
	h2.Protocols.SetHTTP2(true)
	h2.TLSConfig = tlsCfg
	h2.ConnContext = connCtx

	h1 := s.httpServer(s.deps.Framed(name, h), tlsCfg)
	h1.DisableGeneralOptionsHandler = true // "OPTIONS *" too is numbered by Framed
	h1.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return httpframe.WithConn(connCtx(ctx, httpframe.Inner(c)), c)
	}
	h1ln := httpframe.NewListener(sp.h1, httpframe.Options{
		MaxHeaderBytes: l.MaxHeaderBytes, HandshakeTimeout: l.HandshakeTimeout.D(), Logger: s.log,
		OnUnserved: func(why httpframe.Reason) {
			s.log.Warn("request refused", "listener", name, "reason", string(httpproxy.CodeSmuggling), "detail", why.String())
			s.Metrics.Reject(name, httpproxy.CodeSmuggling)
		},
	})
	serve1, serve2 := s.serveHTTP(h1, h1ln), s.serveHTTP(h2, sp.h2)
	s.addTask(name, func(ctx context.Context) error {
		go sp.run()
		g, gctx := errgroup.WithContext(ctx)
		g.Go(func() error { return serve1(gctx) })
		g.Go(func() error { return serve2(gctx) })
		err := g.Wait()
		sp.close()
		return err
	})
}

// alpnSplit accepts TLS connections, completes each handshake (within timeout, one goroutine
// per connection: the accept loop never waits for a client) and hands the connection to h1 or
// h2 by the protocol negotiated.
type alpnSplit struct {
	ln       net.Listener
	cfg      *tls.Config
	timeout  time.Duration
	s        *Server
	h1, h2   *chanListener
	recorded sync.Map // *tls.Conn -> *attestedtls.Recorded
	once     sync.Once
}

func (sp *alpnSplit) run() {
	for {
		c, err := sp.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			sp.h1.fail(err)
			sp.h2.fail(err)
			return
		}
		go sp.handshake(c)
	}
}

func (sp *alpnSplit) handshake(c net.Conn) {
	rec := &attestedtls.Recorded{}
	ctx, cancel := context.WithTimeout(attestedtls.WithRecorded(context.Background(), rec), sp.timeout)
	defer cancel()
	tc := tls.Server(c, sp.cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		sp.s.log.Debug("TLS handshake failed", "remote", c.RemoteAddr().String(), "error", err)
		tc.Close()
		return
	}
	sp.recorded.Store(tc, rec)
	to := sp.h1
	if tc.ConnectionState().NegotiatedProtocol == "h2" {
		to = sp.h2
	}
	if !to.deliver(tc) {
		sp.recorded.Delete(tc)
		tc.Close()
	}
}

func (sp *alpnSplit) close() {
	sp.once.Do(func() { sp.ln.Close() })
}

// chanListener is one side of an alpnSplit, as a net.Listener for an http.Server.
type chanListener struct {
	sp   *alpnSplit
	c    chan net.Conn
	done chan struct{}
	mu   sync.Mutex
	err  error
	shut sync.Once
}

func newChanListener(sp *alpnSplit) *chanListener {
	return &chanListener{sp: sp, c: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case l.c <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) fail(err error) {
	l.mu.Lock()
	if l.err == nil {
		l.err = err
	}
	l.mu.Unlock()
	l.shut.Do(func() { close(l.done) })
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.done:
		l.mu.Lock()
		defer l.mu.Unlock()
		return nil, l.err
	}
}

// Close stops this side only: the shared listener is closed once both servers have stopped
// (serveH2TLS), so that one server's shutdown never looks like the other's listener failing.
func (l *chanListener) Close() error {
	l.fail(net.ErrClosed)
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.sp.ln.Addr() }
