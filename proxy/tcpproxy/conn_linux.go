package tcpproxy

import (
	"crypto/tls"
	"io"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Conn is a TCP connection to put under a tls.Conn whose plaintext Pipe copies: while Pipe
// reads it, a read that the kernel says would find nothing (TCP_INQ, as in raw) returns
// errWouldBlock at once, with no read(2) to learn it, and Pipe waits for readiness. At any
// other time (the handshake, Close, any other reader) it is the plain *net.TCPConn.
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn
	// Set only on Pipe's goroutine, inside its RawConn.Read.
	fd      int
	inRaw   bool
	drained bool // the last recvmsg left the receive queue empty
	oob     []byte
}

// NewConn returns c as a *Conn if it is a *net.TCPConn and the kernel has TCP_INQ, else c.
func NewConn(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_INQ, 1) }); err != nil || serr != nil {
		return c
	}
	return &Conn{TCPConn: tc, rc: rc, oob: make([]byte, unix.CmsgSpace(4))}
}

// NewListener returns ln with every accepted connection passed through NewConn.
func NewListener(ln net.Listener) net.Listener { return connListener{ln} }

type connListener struct{ net.Listener }

func (l connListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return NewConn(c), nil
}

// wouldBlock is what Conn.Read returns inside Pipe when the socket has nothing: a temporary
// net.Error, which tls.Conn passes up without failing the connection (it keeps a partial
// record for the next read).
type wouldBlock struct{}

func (wouldBlock) Error() string   { return "tcpproxy: would block" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

var errWouldBlock error = wouldBlock{}

func (c *Conn) Read(p []byte) (int, error) {
	if !c.inRaw {
		return c.TCPConn.Read(p)
	}
	if c.drained || len(p) == 0 {
		return 0, errWouldBlock
	}
	for {
		n, oobn, _, _, e := unix.Recvmsg(c.fd, p, c.oob, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
			c.drained = true
			return 0, errWouldBlock
		case e != nil:
			return 0, &net.OpError{
				Op:     "read",
				Net:    "tcp",
				Source: c.LocalAddr(),
				Addr:   c.RemoteAddr(),
				Err:    e,
			}
		case n == 0:
			return 0, io.EOF
		}
		c.drained = inq(c.oob[:oobn]) == 0
		return n, nil
	}
}

// rawTLS copies from a tls.Conn over a *Conn, waiting for readiness instead of reading when
// the socket is drained and tls.Conn holds no whole record (it reads buffered records first).
func (c *copier) rawTLS() bool {
	tc, ok := c.src.(*tls.Conn)
	if !ok || !tc.ConnectionState().HandshakeComplete {
		return false
	}
	cc, ok := tc.NetConn().(*Conn)
	if !ok {
		return false
	}
	for {
		c.moveReadDeadline(time.Now())
		var rerr, werr error
		err := cc.rc.Read(func(fd uintptr) bool {
			// Called first, and after each readiness event: the socket must be read.
			cc.fd, cc.inRaw, cc.drained = int(fd), true, false
			defer func() { cc.inRaw = false }()
			for {
				n, err := tc.Read(c.buf)
				if n > 0 {
					if werr = c.write(n); werr != nil {
						return true
					}
				}
				if err == errWouldBlock {
					c.moveReadDeadline(time.Now())
					return false
				}
				if err != nil {
					rerr = err
					return true
				}
			}
		})
		switch {
		case werr != nil:
			closeBoth(c.dst, c.src)
			return true
		case rerr != nil:
			err = rerr
		}
		if err != nil && !c.retry(err) {
			return true
		}
	}
}
