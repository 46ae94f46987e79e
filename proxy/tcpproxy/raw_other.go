//go:build !linux

package tcpproxy

import "net"

// raw and rawTLS are the Linux socket readers (raw_linux.go, conn_linux.go); elsewhere every
// source is read with Read.
func (c *copier) raw() bool    { return false }
func (c *copier) rawTLS() bool { return false }

// NewConn returns c: the TCP_INQ reader is Linux's (conn_linux.go).
func NewConn(c net.Conn) net.Conn { return c }

// NewListener returns ln.
func NewListener(ln net.Listener) net.Listener { return ln }
