package server_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/countersign/countersign/proxy/config"
)

// h2conn is a raw HTTP/2 client connection (prior knowledge) for shapes no well-behaved client
// sends.
type h2conn struct {
	t  *testing.T
	c  net.Conn
	fr *http2.Framer
	// settings the server advertised
	settings map[http2.SettingID]uint32
}

func dialH2(t *testing.T, addr string) *h2conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	h := &h2conn{t: t, c: c, fr: http2.NewFramer(c, c), settings: map[http2.SettingID]uint32{}}
	h.fr.MaxHeaderListSize = 1 << 20
	if err := h.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := h.fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("first frame %T, want SETTINGS", f)
	}
	_ = sf.ForeachSetting(func(s http2.Setting) error { h.settings[s.ID] = s.Val; return nil })
	_ = h.fr.WriteSettingsAck()
	return h
}

func (h *h2conn) block(fields ...string) []byte {
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	for i := 0; i+1 < len(fields); i += 2 {
		_ = enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return b.Bytes()
}

func (h *h2conn) get(id uint32, extra ...string) { h.getPath(id, "/limits", extra...) }

func (h *h2conn) getPath(id uint32, path string, extra ...string) {
	h.t.Helper()
	f := append([]string{":method", "GET", ":scheme", "http", ":authority", "x", ":path", path}, extra...)
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.block(f...), EndStream: true, EndHeaders: true}); err != nil {
		h.t.Fatal(err)
	}
}

// until reads frames until match returns true (it is given every frame), the connection ends
// (ok false), or 10 s pass.
func (h *h2conn) until(match func(http2.Frame) bool) (closed bool) {
	_ = h.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			return true
		}
		if match(f) {
			return false
		}
	}
}

// TestH2Limits: each HTTP/2 shape docs/protocol.md section 11 bounds, by name, on an http2
// outbound listener (the inbound listeners' HTTP/2 server is configured by the same code).
func TestH2Limits(t *testing.T) {
	e := newEnv(t, time.Hour)
	// The app counts the requests in flight and holds each for a while.
	var inFlight, maxInFlight, served, connSpecific atomic.Int64
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		served.Add(1)
		if r.URL.Path == "/conn-specific" {
			connSpecific.Add(1)
		}
		for {
			m := maxInFlight.Load()
			if n <= m || maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(30 * time.Millisecond)
		w.Write([]byte("ok"))
	}), Protocols: new(http.Protocols)}
	app.Protocols.SetUnencryptedHTTP2(true)
	aln, _ := net.Listen("tcp", "127.0.0.1:0")
	go app.Serve(aln)
	defer app.Close()

	const streams = 8
	lim := config.Limits{ShutdownTimeout: config.Duration(2 * time.Second), MaxConcurrentStreams: streams, MaxHeaderBytes: 8192}
	bc := e.cfg("back", mrBack)
	bc.Limits = lim
	bc.Chain.MaxBytes = 8192
	bc.Inbound = []config.Inbound{{
		Name:      "api",
		Listen:    "127.0.0.1:0",
		Protocol:  config.ProtocolHTTP2,
		ForwardTo: aln.Addr().String(),
		Allow:     []string{"front"},
	}}
	back := e.start(bc)
	fc := e.cfg("front", mrFront)
	fc.Limits = lim
	fc.Chain.MaxBytes = 8192
	fc.Outbound = []config.Outbound{{
		Name:             "to-back",
		Listen:           "127.0.0.1:0",
		Protocol:         config.ProtocolHTTP2,
		Upstream:         back.Addr("api"),
		UpstreamIdentity: []string{"back"},
	}}
	front := e.start(fc)
	addr := front.Addr("to-back")

	t.Run("settings", func(t *testing.T) {
		h := dialH2(t, addr)
		for id, want := range map[http2.SettingID]uint32{
			http2.SettingMaxConcurrentStreams: streams,
			http2.SettingMaxFrameSize:         16384,
		} {
			if got, ok := h.settings[id]; !ok || got != want {
				t.Errorf("SETTINGS %v = %d (sent %v), want %d", id, got, ok, want)
			}
		}
		// maxHeaderBytes, plus net/http's allowance of 32 bytes for each of 10 fields.
		if got := h.settings[http2.SettingMaxHeaderListSize]; got != 8192+320 {
			t.Errorf("SETTINGS MAX_HEADER_LIST_SIZE = %d, want 8192 + 320", got)
		}
	})

	t.Run("concurrent streams", func(t *testing.T) {
		h := dialH2(t, addr)
		for i := uint32(0); i < streams+4; i++ {
			h.get(1 + 2*i)
		}
		refused, done := 0, 0
		h.until(func(f http2.Frame) bool {
			switch f := f.(type) {
			case *http2.RSTStreamFrame:
				if f.ErrCode == http2.ErrCodeRefusedStream || f.ErrCode == http2.ErrCodeProtocol {
					refused++
				}
			case *http2.DataFrame:
				if f.StreamEnded() {
					done++
				}
			case *http2.HeadersFrame:
				if f.StreamEnded() {
					done++
				}
			}
			return refused+done == streams+4
		})
		if refused != 4 || done != streams {
			t.Errorf("%d streams opened at once with a limit of %d: %d answered, %d refused; want %d and 4", streams+4, streams, done, refused, streams)
		}
	})

	t.Run("header list size", func(t *testing.T) {
		h := dialH2(t, addr)
		h.get(1, "x-big", strings.Repeat("a", 9000))
		var st string
		closed := h.until(func(f http2.Frame) bool {
			if hf, ok := f.(*http2.HeadersFrame); ok && hf.StreamID == 1 {
				fields, _ := hpack.NewDecoder(4096, nil).DecodeFull(hf.HeaderBlockFragment())
				for _, fl := range fields {
					if fl.Name == ":status" {
						st = fl.Value
					}
				}
				return true
			}
			_, rst := f.(*http2.RSTStreamFrame)
			return rst
		})
		if !closed && st != "" && st != "431" {
			t.Errorf("a header list over maxHeaderBytes: status %s, want 431 (or the stream or connection refused)", st)
		}
	})

	t.Run("continuation flood", func(t *testing.T) {
		h := dialH2(t, addr)
		frag := h.block(":method", "GET", ":scheme", "http", ":authority", "x", ":path", "/")
		if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: frag, EndHeaders: false}); err != nil {
			t.Fatal(err)
		}
		junk := h.block("x-junk", strings.Repeat("j", 4000))
		var sent int
		var werr error
		start := time.Now()
		for sent = 0; sent < 2000 && werr == nil; sent++ { // 8 MB of header block if nobody stops it
			werr = h.fr.WriteContinuation(1, false, junk)
		}
		var goaway bool
		closed := h.until(func(f http2.Frame) bool { _, goaway = f.(*http2.GoAwayFrame); return goaway })
		if !closed && !goaway {
			t.Fatal("the connection stayed open through a CONTINUATION flood")
		}
		if werr == nil && sent == 2000 && time.Since(start) > 8*time.Second {
			t.Errorf("the whole flood (%d frames) was read", sent)
		}
	})

	t.Run("frame size", func(t *testing.T) {
		h := dialH2(t, addr)
		if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.block(":method", "POST", ":scheme", "http", ":authority", "x", ":path", "/"), EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
		_ = h.fr.WriteData(1, true, make([]byte, 20000)) // over SETTINGS_MAX_FRAME_SIZE 16384
		var code http2.ErrCode = 1 << 30
		closed := h.until(func(f http2.Frame) bool {
			if g, ok := f.(*http2.GoAwayFrame); ok {
				code = g.ErrCode
				return true
			}
			return false
		})
		if code != http2.ErrCodeFrameSize && !(closed && code == 1<<30) {
			t.Errorf("a 20000-byte frame: GOAWAY %v, want FRAME_SIZE_ERROR", code)
		}
		if code == 1<<30 {
			t.Error("a 20000-byte frame: the connection closed without GOAWAY FRAME_SIZE_ERROR")
		}
	})

	t.Run("connection-specific fields", func(t *testing.T) {
		for _, f := range [][]string{{"connection", "keep-alive"}, {"keep-alive", "5"}, {"proxy-connection", "x"}, {"transfer-encoding", "chunked"}, {"upgrade", "h2c"}, {"te", "gzip"}} {
			h := dialH2(t, addr)
			h.getPath(1, "/conn-specific", f...)
			// RFC 9113 section 8.1.1: malformed, never forwarded; the server may answer before it
			// resets the stream (net/http answers 400).
			var code http2.ErrCode = 1 << 30
			st := ""
			h.until(func(fr http2.Frame) bool {
				switch fr := fr.(type) {
				case *http2.RSTStreamFrame:
					code = fr.ErrCode
					return true
				case *http2.HeadersFrame:
					fields, _ := hpack.NewDecoder(4096, nil).DecodeFull(fr.HeaderBlockFragment())
					for _, fl := range fields {
						if fl.Name == ":status" {
							st = fl.Value
						}
					}
					return true
				}
				return false
			})
			if code != http2.ErrCodeProtocol && st != "400" {
				t.Errorf("a request with %s: RST_STREAM %v, status %q; want PROTOCOL_ERROR or 400", f[0], code, st)
			}
		}
		time.Sleep(200 * time.Millisecond)
		if n := connSpecific.Load(); n != 0 {
			t.Errorf("%d requests with connection-specific fields reached the app", n)
		}
	})

	t.Run("rapid reset", func(t *testing.T) {
		maxInFlight.Store(0)
		h := dialH2(t, addr)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // keep reading so that the server's writes never block
			defer wg.Done()
			h.until(func(http2.Frame) bool { return false })
		}()
		for i := uint32(0); i < 1000; i++ {
			id := 1 + 2*i
			h.get(id)
			if err := h.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
				break // the server closed the connection: a bound too
			}
		}
		time.Sleep(300 * time.Millisecond)
		h.c.Close()
		wg.Wait()
		if m := maxInFlight.Load(); m > streams {
			t.Errorf("rapid reset: the app had %d requests in flight from one connection, more than maxConcurrentStreams %d", m, streams)
		}
		// The proxy still serves.
		resp, err := h2cClient().Get("http://" + addr + "/after")
		if err != nil {
			t.Fatalf("after a rapid reset: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("after a rapid reset: status %d", resp.StatusCode)
		}
	})

	t.Run("no h2c upgrade", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		if strings.Contains(line, "101") || strings.Contains(line, "200") {
			t.Errorf("an HTTP/1.1 upgrade to h2c on an http2 listener was answered %q", line)
		}
	})
}
