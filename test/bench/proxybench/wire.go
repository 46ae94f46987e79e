package proxybench

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// counter is a TCP relay that counts the bytes it carries each way: placed between the two
// proxies of a pair, it measures what the pair puts on the wire (TLS records included) per
// request. It runs in the harness's process; no figure but bytes is taken through it.
type counter struct {
	ln       net.Listener
	to       string
	up, down atomic.Int64 // client→server, server→client
	accepted atomic.Int64
	mu       sync.Mutex
	conns    []net.Conn
	wg       sync.WaitGroup
}

func newCounter(to string) (*counter, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c := &counter{ln: ln, to: to}
	c.wg.Add(1)
	go c.serve()
	return c, nil
}

func (c *counter) addr() string { return c.ln.Addr().String() }

func (c *counter) serve() {
	defer c.wg.Done()
	for {
		a, err := c.ln.Accept()
		if err != nil {
			return
		}
		b, err := net.DialTimeout("tcp", c.to, 5*time.Second)
		if err != nil {
			a.Close()
			continue
		}
		c.accepted.Add(1)
		c.mu.Lock()
		c.conns = append(c.conns, a, b)
		c.mu.Unlock()
		c.wg.Add(2)
		go c.copy(b, a, &c.up)
		go c.copy(a, b, &c.down)
	}
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (cw countingWriter) Write(p []byte) (int, error) {
	// Counted before the write: once the last response reaches the client it is counted.
	cw.n.Add(int64(len(p)))
	return cw.w.Write(p)
}

func (c *counter) copy(dst, src net.Conn, n *atomic.Int64) {
	defer c.wg.Done()
	_, _ = io.Copy(countingWriter{dst, n}, src)
	dst.Close()
	src.Close()
}

func (c *counter) close() {
	c.ln.Close()
	c.mu.Lock()
	for _, x := range c.conns {
		x.Close()
	}
	c.mu.Unlock()
	c.wg.Wait()
}

// WireResult is the bytes a pair puts between its two proxies per request, each way,
// measured over Requests sequential requests on a warm connection.
type WireResult struct {
	Path     string
	Requests int
	Up, Down float64 // bytes per request, request direction and response direction
	NewConns int64   // connections opened during the measurement (their handshakes are in the figures)
}

// measureWire sends n requests one after another over one keep-alive connection through url
// and returns the bytes per request the counter saw. A warm-up request first opens the
// pair's connection, so that no handshake is counted unless the pair opened another one.
func measureWire(ctx context.Context, t *topology, name, url string, c *counter, n int) (WireResult, error) {
	cl := newClient(t.roots, 1)
	defer cl.CloseIdleConnections()
	for range 20 {
		if err := get(ctx, cl, url); err != nil {
			return WireResult{}, fmt.Errorf("%s warm-up: %w", name, err)
		}
	}
	up0, down0, acc0 := c.up.Load(), c.down.Load(), c.accepted.Load()
	for range n {
		if err := get(ctx, cl, url); err != nil {
			return WireResult{}, fmt.Errorf("%s: %w", name, err)
		}
	}
	// The last response's bytes have reached the client, so they passed the counter.
	return WireResult{
		Path:     name,
		Requests: n,
		Up:       float64(c.up.Load()-up0) / float64(n),
		Down:     float64(c.down.Load()-down0) / float64(n),
		NewConns: c.accepted.Load() - acc0,
	}, nil
}
