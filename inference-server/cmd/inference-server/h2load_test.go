package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"
)

// h2Conn is the gRPC analogue of loadConn: a wrk-like (h2load-like) client of one plaintext
// HTTP/2 connection that sends one prebuilt unary call at a time and reads the answer with as
// little work as HTTP/2 allows (HPACK-encoded request headers, the message split into DATA
// frames within the peer's frame size and the connection's send window, window updates for
// what it receives, PING and SETTINGS acknowledged). Like loadConn it exists so that on a
// machine shared by client and server the figures are the server's: grpc-go's client costs
// about as much CPU per call as its server.
type h2Conn struct {
	conn     net.Conn
	bw       *bufio.Writer
	fr       *http2.Framer
	henc     *hpack.Encoder
	hbuf     bytes.Buffer
	path     string
	host     string
	msg      []byte // the length-prefixed gRPC message
	stream   uint32
	sendWin  int64 // the connection's send window
	maxFrame int
	recvd    int64 // DATA bytes received since the last connection window update
}

const h2RecvWindow = 1 << 30

func dialH2(addr, path string, m proto.Message) (*h2Conn, error) {
	pm, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &h2Conn{
		conn:     conn,
		bw:       bufio.NewWriterSize(conn, 64<<10),
		path:     path,
		host:     addr,
		stream:   1,
		sendWin:  65535,
		maxFrame: 16384,
	}
	c.msg = binary.BigEndian.AppendUint32([]byte{0}, uint32(len(pm)))
	c.msg = append(c.msg, pm...)
	c.fr = http2.NewFramer(c.bw, bufio.NewReaderSize(conn, 64<<10))
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	if _, err := c.bw.WriteString(http2.ClientPreface); err != nil {
		conn.Close()
		return nil, err
	}
	if err := c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: h2RecvWindow}); err != nil {
		conn.Close()
		return nil, err
	}
	if err := c.fr.WriteWindowUpdate(0, h2RecvWindow-65535); err != nil {
		conn.Close()
		return nil, err
	}
	return c, c.bw.Flush()
}

// handle processes a frame that is not part of the answer.
func (c *h2Conn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		if v, ok := f.Value(http2.SettingMaxFrameSize); ok {
			c.maxFrame = int(v)
		}
		return c.fr.WriteSettingsAck()
	case *http2.WindowUpdateFrame:
		if f.StreamID == 0 {
			c.sendWin += int64(f.Increment)
		}
	case *http2.PingFrame:
		if !f.IsAck() {
			return c.fr.WritePing(true, f.Data)
		}
	case *http2.GoAwayFrame:
		return fmt.Errorf("GOAWAY %v %q", f.ErrCode, f.DebugData())
	case *http2.RSTStreamFrame:
		return fmt.Errorf("RST_STREAM %v", f.ErrCode)
	}
	return nil
}

func (c *h2Conn) do() error {
	c.hbuf.Reset()
	for _, h := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", c.path}, {":authority", c.host},
		{"content-type", "application/grpc"}, {"te", "trailers"}} {
		if err := c.henc.WriteField(hpack.HeaderField{Name: h[0], Value: h[1]}); err != nil {
			return err
		}
	}
	id := c.stream
	c.stream += 2
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true}); err != nil {
		return err
	}
	for rest := c.msg; len(rest) > 0; {
		for c.sendWin <= 0 {
			if err := c.bw.Flush(); err != nil {
				return err
			}
			f, err := c.fr.ReadFrame()
			if err != nil {
				return err
			}
			if err := c.handle(f); err != nil {
				return err
			}
		}
		n := min(len(rest), c.maxFrame, int(c.sendWin))
		if err := c.fr.WriteData(id, n == len(rest), rest[:n]); err != nil {
			return err
		}
		c.sendWin -= int64(n)
		rest = rest[n:]
	}
	if err := c.bw.Flush(); err != nil {
		return err
	}
	got, status := 0, ""
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return err
		}
		switch f := f.(type) {
		case *http2.DataFrame:
			got += len(f.Data())
			c.recvd += int64(f.Length)
		case *http2.MetaHeadersFrame:
			if v := f.PseudoValue("status"); v != "" && v != "200" {
				return fmt.Errorf("HTTP status %s", v)
			}
			for _, h := range f.RegularFields() {
				if h.Name == "grpc-status" {
					status = h.Value
				}
			}
			if f.StreamEnded() {
				if status != "0" {
					return fmt.Errorf("grpc-status %q", status)
				}
				if got <= 5 {
					return errors.New("no response message")
				}
				if c.recvd > h2RecvWindow/2 {
					if err := c.fr.WriteWindowUpdate(0, uint32(c.recvd)); err != nil {
						return err
					}
					c.recvd = 0
				}
				return nil
			}
		default:
			if err := c.handle(f); err != nil {
				return err
			}
		}
	}
}

// h2Clients returns a constructor of connected h2Conns calling method with m; the connections
// are closed when the benchmark ends.
func h2Clients(tb testing.TB, addr, method string, m proto.Message) func() func() error {
	var mu sync.Mutex
	var conns []*h2Conn
	tb.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.conn.Close()
		}
	})
	return func() func() error {
		c, err := dialH2(addr, method, m)
		if err != nil {
			return func() error { return err }
		}
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		return c.do
	}
}
