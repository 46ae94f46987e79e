package httpframe

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// ErrFraming is what a guarded connection's Read returns once the request being served has a
// smuggling shape in its body (chunked framing): the handler's body read fails, so the rest of
// that request is never forwarded.
var ErrFraming = errors.New("httpframe: request smuggling shape in the request body")

// Options configure a guarded listener.
type Options struct {
	// MaxHeaderBytes is the server's MaxHeaderBytes (default http.DefaultMaxHeaderBytes). The
	// guard allows a head as large as the server reads (that plus 4 KiB), so that the server's
	// own limit (431) applies first.
	MaxHeaderBytes int
	// HandshakeTimeout bounds the TLS handshake of a TLS listener's connections (default 10s).
	HandshakeTimeout time.Duration
	// OnUnserved, if set, is called once when a connection whose guard found a shape closes
	// without a handler having refused the request (the server refused it itself: a head it
	// cannot parse, an unsupported transfer coding; or the client went away).
	OnUnserved func(Reason)
	// Logger receives TLS handshake failures at debug level (the server's ErrorLog would).
	Logger *slog.Logger
}

// NewListener returns ln with every accepted connection guarded. ln may be a TLS listener
// (tls.NewListener): the guard then reads the plaintext, above TLS, and the connection
// still reports its tls.ConnectionState to the server (see TLSConn).
func NewListener(ln net.Listener, o Options) net.Listener {
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = http.DefaultMaxHeaderBytes
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	return &listener{Listener: ln, o: o}
}

type listener struct {
	net.Listener
	o Options
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return guardConn(c, &l.o), nil
}

func guardConn(c net.Conn, o *Options) net.Conn {
	gc := &Conn{Conn: c, o: o}
	// The server's read limit for a head is MaxHeaderBytes + 4096 (net/http
	// initialReadLimitSize); the guard's is a little above, so the server answers 431 first.
	gc.g.init(o.MaxHeaderBytes + 4096 + 1024)
	gc.g.lines = gc.recordLine
	gc.firstBad.Store(math.MaxInt64)
	gc.cur.Store(-1)
	if tc, ok := c.(*tls.Conn); ok {
		gc.tc = tc
		return &TLSConn{gc}
	}
	return gc
}

// Conn is a guarded connection. Its Read feeds the framing guard with the bytes the server
// reads, before the server parses them; Begin, from the handler, numbers the request being
// served and returns the guard's verdict on it.
//
// The server serves one request of a connection at a time and reads ahead (one bufio buffer),
// so the guard may have parsed several pipelined requests beyond the one being served; its
// verdict is "every request from index firstBad on", which read-ahead does not change. A
// shape found in a head is left for the handler of that request to refuse (the server must
// parse the head for the handler to answer it); one found in the body of the request being
// served stops the stream (ErrFraming), so that body is not forwarded further.
type Conn struct {
	net.Conn
	o  *Options
	tc *tls.Conn

	g       guard // touched only by Read (the server serializes its reads)
	stopped bool  // Read fails from now on (Read only)

	firstBad atomic.Int64 // index of the first request with a shape; MaxInt64: none
	reason   atomic.Uint32
	cur      atomic.Int64 // index of the request being served (Begin); -1 before the first
	refused  atomic.Bool  // a handler refused (and reported) the shape
	closed   atomic.Bool
	lines    [lineRing]atomic.Uint64 // (index+1)<<32 | request-line length

	ctx    context.Context // the server's connection context (WithConn), for the handshake
	hsOnce sync.Once
}

func (c *Conn) recordLine(req int64, n int) {
	c.lines[req%lineRing].Store(uint64(req+1)<<32 | uint64(uint32(n)))
}

// Read reads from the connection and feeds the guard.
func (c *Conn) Read(p []byte) (int, error) {
	if c.stopped {
		return 0, ErrFraming
	}
	n, err := c.Conn.Read(p)
	if n > 0 && c.g.st != sPoisoned {
		if k := c.g.feed(p[:n]); c.g.st == sPoisoned {
			c.reason.Store(uint32(c.g.bad))
			c.firstBad.Store(c.g.badReq)
			if c.g.badBody && c.g.badReq == c.cur.Load() {
				// The body of the request being served: its handler is reading it.
				c.stopped = true
				if k == 0 {
					return 0, ErrFraming
				}
				return k, nil
			}
		}
	}
	return n, err
}

// CloseWrite half-closes the connection when the underlying one can (the server uses it for
// a graceful close after an error response).
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Close closes the connection; a shape no handler refused is reported to Options.OnUnserved.
func (c *Conn) Close() error {
	if c.closed.CompareAndSwap(false, true) && c.firstBad.Load() != math.MaxInt64 && !c.refused.Load() && c.o.OnUnserved != nil {
		c.o.OnUnserved(Reason(c.reason.Load()))
	}
	return c.Conn.Close()
}

// NetConn returns the connection the guard wraps (a *tls.Conn on TLS listeners).
func (c *Conn) NetConn() net.Conn { return c.Conn }

// Begin numbers the request r the server hands a handler on this connection and returns the
// guard's verdict on it: OK, or the shape found in it or in an earlier request of the
// connection. Call it exactly once per request, before anything reads r.Body. Besides the
// verdict, it checks that the server's request starts where the guard's does (same index, same
// request-line length) and returns Disagreement when not.
func (c *Conn) Begin(r *http.Request) Reason {
	n := c.cur.Add(1)
	if why := c.verdict(n); why != OK {
		return why
	}
	slot := c.lines[n%lineRing].Load()
	switch idx := int64(slot>>32) - 1; {
	case idx == n:
		if int(uint32(slot)) != len(r.Method)+len(r.RequestURI)+len(r.Proto)+2 {
			c.disagree(n)
			return Disagreement
		}
	case idx < n:
		// The server is serving a request whose request line the guard has not seen.
		if why := c.verdict(n); why != OK { // the guard stopped parsing meanwhile
			return why
		}
		c.disagree(n)
		return Disagreement
	}
	// idx > n: the guard is more than lineRing requests ahead; not cross-checked.
	return OK
}

func (c *Conn) disagree(n int64) {
	c.reason.Store(uint32(Disagreement))
	c.firstBad.Store(n)
	c.refused.Store(true)
}

// Current is the verdict on the request being served (numbered by Begin): a shape found
// since Begin, in its body, shows here.
func (c *Conn) Current() Reason { return c.verdict(c.cur.Load()) }

func (c *Conn) verdict(n int64) Reason {
	if n < 0 || c.firstBad.Load() > n {
		return OK
	}
	c.refused.Store(true)
	return Reason(c.reason.Load())
}

// TLSConn is a guarded TLS connection. Its ConnectionState, which net/http calls once before
// reading the first request (to fill Request.TLS for connections that are not a *tls.Conn),
// completes the handshake first, with the server's connection context (as net/http does for
// a *tls.Conn), within Options.HandshakeTimeout.
type TLSConn struct{ *Conn }

// ConnectionState completes the handshake (once) and returns its state.
func (c *TLSConn) ConnectionState() tls.ConnectionState {
	c.hsOnce.Do(c.handshake)
	return c.tc.ConnectionState()
}

func (c *TLSConn) handshake() {
	ctx := c.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	dl := time.Now().Add(c.o.HandshakeTimeout)
	_ = c.tc.SetReadDeadline(dl)
	_ = c.tc.SetWriteDeadline(dl)
	err := c.tc.HandshakeContext(ctx)
	_ = c.tc.SetReadDeadline(time.Time{})
	_ = c.tc.SetWriteDeadline(time.Time{})
	if err == nil {
		return
	}
	// The next Read returns the handshake error and the server closes the connection.
	var re tls.RecordHeaderError
	if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
		_, _ = io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		re.Conn.Close()
	}
	if c.o.Logger != nil {
		c.o.Logger.Debug("TLS handshake error", "remote", c.RemoteAddr().String(), "err", err)
	}
}

func looksLikeHTTP(h [5]byte) bool {
	switch string(h[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

type connKey struct{}

// WithConn is for http.Server.ConnContext: it returns ctx carrying the guarded connection c
// (a *Conn or *TLSConn; other connections leave ctx unchanged), and remembers ctx as the
// context of c's TLS handshake, so values added before (attestedtls.WithRecorder) reach it.
func WithConn(ctx context.Context, c net.Conn) context.Context {
	var gc *Conn
	switch x := c.(type) {
	case *Conn:
		gc = x
	case *TLSConn:
		gc = x.Conn
	default:
		return ctx
	}
	ctx = context.WithValue(ctx, connKey{}, gc)
	gc.ctx = ctx
	return ctx
}

// FromContext returns the guarded connection of a request's context, or nil.
func FromContext(ctx context.Context) *Conn {
	c, _ := ctx.Value(connKey{}).(*Conn)
	return c
}

// Inner returns the connection a guarded one wraps, or c itself.
func Inner(c net.Conn) net.Conn {
	switch x := c.(type) {
	case *Conn:
		return x.Conn
	case *TLSConn:
		return x.Conn.Conn
	}
	return c
}
