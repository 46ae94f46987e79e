package tcpproxy

import (
	"encoding/binary"
	"io"
	"net"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// raw copies from a plain TCP source by reading its socket itself, and reports false (having
// done nothing) when src is not one or the kernel lacks TCP_INQ (Linux 4.18).
//
// net.Conn.Read always tries read(2) first and waits for readiness only after EAGAIN, so a
// stream of small requests and replies pays, per message, one read that finds nothing. With
// TCP_INQ every recvmsg also says how much the receive queue still holds (non-zero after a
// FIN, so that an EOF is never left unread); when it says nothing, raw waits for the next
// readiness event instead of asking again. Whatever arrives after that recvmsg is an edge
// for Go's edge-triggered poller, which keeps it for this waiter. The copy and the wait stay
// inside one RawConn.Read, because its first step drops a pending readiness event.
//
// Only the exact type *net.TCPConn: a wrapper may hold bytes it has already read.
func (c *copier) raw() bool {
	tc, ok := c.src.(*net.TCPConn)
	if !ok {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_INQ, 1) }); err != nil || serr != nil {
		return false
	}
	oob := make([]byte, unix.CmsgSpace(4)) // heap: aligned for a Cmsghdr
	for {
		c.moveReadDeadline(time.Now())
		var rerr, werr error
		err := rc.Read(func(fd uintptr) bool {
			for {
				n, oobn, _, _, e := unix.Recvmsg(int(fd), c.buf, oob, 0)
				switch {
				case e == unix.EINTR:
					continue
				case e == unix.EAGAIN:
					c.moveReadDeadline(time.Now())
					return false
				case e != nil:
					rerr = e
					return true
				case n == 0:
					rerr = io.EOF
					return true
				}
				if werr = c.write(n); werr != nil {
					return true
				}
				if inq(oob[:oobn]) == 0 {
					c.moveReadDeadline(time.Now())
					return false // the queue is empty: wait for the next arrival
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

// inq is the TCP_CM_INQ value in a recvmsg's control data: the bytes left in the receive
// queue (1 after a FIN). Without one it says 1, so the caller reads again.
func inq(oob []byte) int {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			break
		}
		if h.Level == unix.SOL_TCP && h.Type == unix.TCP_CM_INQ && l >= unix.CmsgLen(4) {
			return int(int32(binary.NativeEndian.Uint32(oob[unix.CmsgLen(0):])))
		}
		oob = oob[min(unix.CmsgSpace(l-unix.CmsgLen(0)), len(oob)):]
	}
	return 1
}
