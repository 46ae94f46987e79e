package transparent

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Handler takes a redirected connection with its original destination. It owns the
// connection (and closes it).
type Handler func(c net.Conn, dst netip.AddrPort)

// Serve accepts redirected connections from ln until ctx ends, recovers each one's original
// destination and calls h in a new goroutine. A connection whose destination cannot be
// recovered is closed (fail closed) and logged; so is one addressed to the listener itself
// (not redirected: nothing to route by). Serve returns after every handler has returned.
func Serve(ctx context.Context, ln net.Listener, h Handler, log *slog.Logger) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	self, _ := netip.ParseAddrPort(ln.Addr().String())
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		dst, err := OriginalDst(c)
		if err == nil && dst.Port() == self.Port() && (dst.Addr() == self.Addr() || self.Addr().IsUnspecified()) {
			err = errors.New("the connection was addressed to the interception listener itself, not redirected")
		}
		if err != nil {
			log.Warn("connection refused: no original destination", "listener", ln.Addr().String(), "remote", c.RemoteAddr().String(), "err", err)
			c.Close()
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); h(c, dst) }()
	}
}

// ChanListener is a net.Listener fed by Push: it lets a connection accepted and routed by
// Serve be served by an ordinary server (http.Server, tcpproxy) for that route.
type ChanListener struct {
	addr   net.Addr
	ch     chan net.Conn
	once   sync.Once
	closed chan struct{}
}

// NewChanListener returns a listener reporting addr as its address.
func NewChanListener(addr net.Addr) *ChanListener {
	return &ChanListener{addr: addr, ch: make(chan net.Conn), closed: make(chan struct{})}
}

// Push hands c to the listener's server; it closes c if the listener is closed.
func (l *ChanListener) Push(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.closed:
		c.Close()
	}
}

// Accept returns the next pushed connection.
func (l *ChanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close stops Accept; pending and later Pushes close their connections.
func (l *ChanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

// Addr is the address given to NewChanListener.
func (l *ChanListener) Addr() net.Addr { return l.addr }
