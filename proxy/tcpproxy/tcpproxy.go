// Package tcpproxy carries byte streams: an accepted connection is paired with a dialled one
// and bytes are copied both ways with half-close, an idle timeout and a connection limit.
// The attested side is a tls.Conn whose handshake checks the peer (attestedtls).
package tcpproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/countersign/countersign/attestation"
)

// CodeConnLimit is the reason for refusing a connection over the listener's limit.
const CodeConnLimit attestation.Code = "connection_limit"

// CodeUpstream is the reason for a connection whose other side could not be reached.
const CodeUpstream attestation.Code = "upstream_unavailable"

// Options configure a Proxy.
type Options struct {
	Name             string
	MaxConns         int
	IdleTimeout      time.Duration
	HandshakeTimeout time.Duration
	// Dial opens the other side of an accepted connection.
	Dial     func(ctx context.Context) (net.Conn, error)
	Logger   *slog.Logger
	OnReject func(listener string, code attestation.Code)
	OnConn   func(delta int)
	// Lifetime, if set, is called with each established pair's two sides (accepted first)
	// and returns when the pair must be closed (zero: no limit). Used to end streams when a
	// token that allowed them expires.
	Lifetime func(c net.Conn) time.Time
}

// Proxy serves one listener.
type Proxy struct {
	opts  Options
	sem   chan struct{}
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// New returns a Proxy.
func New(opts Options) *Proxy {
	if opts.MaxConns <= 0 {
		opts.MaxConns = 1024
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 2 * time.Minute
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Proxy{opts: opts, sem: make(chan struct{}, opts.MaxConns), conns: map[net.Conn]struct{}{}}
}

func (p *Proxy) reject(code attestation.Code) {
	if p.opts.OnReject != nil {
		p.opts.OnReject(p.opts.Name, code)
	}
}

// Serve accepts until ln is closed or ctx ends, then waits up to drain for open connections to
// finish before closing them.
func (p *Proxy) Serve(ctx context.Context, ln net.Listener, drain time.Duration) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var tempDelay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				p.shutdown(drain)
				return nil
			}
			// Transient accept errors (EMFILE, ECONNABORTED, a timeout) back off and retry,
			// as net/http's server does; anything else ends the listener, and the proxy.
			var tmp interface{ Temporary() bool }
			var ne net.Error
			if (errors.As(err, &ne) && ne.Timeout()) || (errors.As(err, &tmp) && tmp.Temporary()) {
				tempDelay = min(max(2*tempDelay, 5*time.Millisecond), time.Second)
				time.Sleep(tempDelay)
				continue
			}
			p.shutdown(drain)
			return err
		}
		tempDelay = 0
		select {
		case p.sem <- struct{}{}:
		default:
			p.opts.Logger.Warn("connection refused: listener at its limit", "listener", p.opts.Name, "limit", p.opts.MaxConns, "remote", c.RemoteAddr().String())
			p.reject(CodeConnLimit)
			c.Close()
			continue
		}
		p.track(c, true)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer func() { <-p.sem }()
			defer p.track(c, false)
			p.handle(ctx, c)
		}()
	}
}

func (p *Proxy) track(c net.Conn, add bool) {
	p.mu.Lock()
	if add {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
	p.mu.Unlock()
	if p.opts.OnConn != nil {
		if add {
			p.opts.OnConn(1)
		} else {
			p.opts.OnConn(-1)
		}
	}
}

func (p *Proxy) shutdown(drain time.Duration) {
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(drain):
	}
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	<-done
}

func (p *Proxy) handle(ctx context.Context, c net.Conn) {
	defer c.Close()
	if tc, ok := c.(*tls.Conn); ok {
		hctx, cancel := context.WithTimeout(ctx, p.opts.HandshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			// attestedtls has already logged and counted a refused peer.
			p.opts.Logger.Debug("handshake failed", "listener", p.opts.Name, "remote", c.RemoteAddr().String(), "err", err)
			return
		}
	}
	dctx, cancel := context.WithTimeout(ctx, p.opts.HandshakeTimeout)
	up, err := p.opts.Dial(dctx)
	cancel()
	if err != nil {
		p.opts.Logger.Warn("connection dropped: cannot reach the other side", "listener", p.opts.Name, "err", err)
		var rej *attestation.Rejection
		if !errors.As(err, &rej) {
			p.reject(CodeUpstream)
		}
		return
	}
	p.track(up, true)
	defer p.track(up, false)
	defer up.Close()
	if p.opts.Lifetime != nil {
		var end time.Time
		for _, x := range []net.Conn{c, up} {
			if e := p.opts.Lifetime(x); !e.IsZero() && (end.IsZero() || e.Before(end)) {
				end = e
			}
		}
		if !end.IsZero() {
			t := time.AfterFunc(time.Until(end), func() {
				p.opts.Logger.Info("closing a stream: a token that allowed it expired", "listener", p.opts.Name)
				c.Close()
				up.Close()
			})
			defer t.Stop()
		}
	}
	Pipe(c, up, p.opts.IdleTimeout)
}

// Pipe copies both ways until both directions are done: at EOF on one side it half-closes the
// other side's write direction. A connection idle in both directions for idle is closed.
func Pipe(a, b net.Conn, idle time.Duration) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); oneWay(b, a, idle, &last) }()
	go func() { defer wg.Done(); oneWay(a, b, idle, &last) }()
	wg.Wait()
}

type closeWriter interface{ CloseWrite() error }

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copier is one direction of a Pipe.
type copier struct {
	dst, src net.Conn
	idle     time.Duration
	last     *atomic.Int64
	buf      []byte
	// When the deadlines were last moved. Moving one costs a timer update; it is done only
	// when a quarter of idle has passed (so a read or write still fails after between 3/4
	// and all of idle without progress).
	readSet, writeSet time.Time
}

func oneWay(dst, src net.Conn, idle time.Duration, last *atomic.Int64) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	c := &copier{
		dst:  dst,
		src:  src,
		idle: idle,
		last: last,
		buf:  *bp,
	}
	if !c.raw() && !c.rawTLS() {
		c.loop()
	}
}

func (c *copier) moveReadDeadline(now time.Time) {
	if now.Sub(c.readSet) > c.idle/4 {
		_ = c.src.SetReadDeadline(now.Add(c.idle))
		c.readSet = now
	}
}

// write sends buf[:n] to dst.
func (c *copier) write(n int) error {
	now := time.Now()
	c.last.Store(now.UnixNano())
	if now.Sub(c.writeSet) > c.idle/4 {
		_ = c.dst.SetWriteDeadline(now.Add(c.idle))
		c.writeSet = now
	}
	_, err := c.dst.Write(c.buf[:n])
	return err
}

// retry says whether a read error is the idle deadline passing while the other direction
// was active (read on); otherwise this direction ends: at EOF by half-closing dst, else by
// closing both.
func (c *copier) retry(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && time.Since(time.Unix(0, c.last.Load())) < c.idle {
		c.readSet = time.Time{}
		return true // the other direction is active
	}
	if errors.Is(err, io.EOF) {
		if cw, ok := c.dst.(closeWriter); ok {
			_ = cw.CloseWrite()
			return false
		}
	}
	closeBoth(c.dst, c.src)
	return false
}

// loop copies with src.Read (a tls.Conn, or any other net.Conn).
func (c *copier) loop() {
	for {
		c.moveReadDeadline(time.Now())
		n, err := c.src.Read(c.buf)
		if n > 0 {
			if werr := c.write(n); werr != nil {
				closeBoth(c.dst, c.src)
				return
			}
		}
		if err != nil && !c.retry(err) {
			return
		}
	}
}

func closeBoth(a, b net.Conn) {
	a.Close()
	b.Close()
}

// Codes lists every reason code of this package (docs/protocol.md section 6).
var Codes = []attestation.Code{CodeConnLimit, CodeUpstream}
