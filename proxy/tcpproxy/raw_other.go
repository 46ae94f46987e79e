//go:build !linux

package tcpproxy

// raw is the Linux socket reader (raw_linux.go); elsewhere every source is read with Read.
func (c *copier) raw() bool { return false }
