package tcpproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/benchratio"
)

// tlsPair is a server and a client config that trust one self-signed P-256 certificate.
func tlsPair(tb testing.TB) (srv, cli *tls.Config) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "tcpproxy"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}},
		&tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "127.0.0.1"}
}

func listen(tb testing.TB) net.Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	return ln
}

// serve runs a Proxy on ln until the test ends.
func serve(tb testing.TB, ln net.Listener, o Options) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = New(o).Serve(ctx, ln, time.Second); close(done) }()
	tb.Cleanup(func() { cancel(); <-done })
}

// pair starts the shape of our TCP pair: a plaintext front that dials the back over TLS, and
// the back (TLS listener) that dials upstream. It returns the front's address. The TLS
// connections are over a Conn (NewConn, NewListener).
func pair(tb testing.TB, upstream string, idle time.Duration) string {
	return pairOf(tb, upstream, idle, true)
}

// pairOf is pair with the TLS connections over a Conn (wrap) or over the plain *net.TCPConn.
func pairOf(tb testing.TB, upstream string, idle time.Duration, wrap bool) string {
	srv, cli := tlsPair(tb)
	backLn := listen(tb)
	var ln net.Listener = backLn
	if wrap {
		ln = NewListener(backLn)
	}
	serve(tb, tls.NewListener(ln, srv), Options{Name: "back", IdleTimeout: idle,
		Dial: func(ctx context.Context) (net.Conn, error) { return (&net.Dialer{}).DialContext(ctx, "tcp", upstream) }})
	frontLn := listen(tb)
	serve(tb, frontLn, Options{Name: "front", IdleTimeout: idle,
		Dial: func(ctx context.Context) (net.Conn, error) {
			raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", backLn.Addr().String())
			if err != nil {
				return nil, err
			}
			if wrap {
				raw = NewConn(raw)
			}
			tc := tls.Client(raw, cli)
			if err := tc.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, err
			}
			return tc, nil
		}})
	return frontLn.Addr().String()
}

// overBoth runs f with the TLS legs over a Conn and over the plain *net.TCPConn.
func overBoth(t *testing.T, f func(t *testing.T, wrap bool)) {
	t.Run("Conn", func(t *testing.T) { f(t, true) })
	t.Run("TCPConn", func(t *testing.T) { f(t, false) })
}

// lineServer answers every line with reply, like Redis answering inline commands.
func lineServer(tb testing.TB, reply []byte) string {
	ln := listen(tb)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					if _, err := r.ReadSlice('\n'); err != nil {
						return
					}
					// One reply per buffered batch of lines, as Redis writes once per loop.
					k := 1
					for r.Buffered() > 0 {
						if _, err := r.ReadSlice('\n'); err != nil {
							return
						}
						k++
					}
					if _, err := c.Write(bytes.Repeat(reply, k)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// echoServer copies back what it reads and half-closes at EOF.
func echoServer(tb testing.TB) string {
	ln := listen(tb)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().String()
}

// TestPairCarriesBytesAndHalfClose: a megabyte goes through the TLS pair and back intact, and
// the client's half-close reaches the server, whose EOF comes back.
func TestPairCarriesBytesAndHalfClose(t *testing.T) {
	overBoth(t, func(t *testing.T, wrap bool) {
		front := pairOf(t, echoServer(t), time.Minute, wrap)
		c, err := net.Dial("tcp", front)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		want := make([]byte, 1<<20)
		_, _ = rand.Read(want)
		errc := make(chan error, 1)
		go func() {
			_, err := c.Write(want)
			if err == nil {
				err = c.(*net.TCPConn).CloseWrite()
			}
			errc <- err
		}()
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		got, err := io.ReadAll(c) // ends only when the server's EOF comes back through the pair
		if err != nil {
			t.Fatalf("read: %v after %d bytes", err, len(got))
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("got %d bytes, want the %d sent, in order", len(got), len(want))
		}
	})
}

// TestPipelinedRoundTrips: many small pipelined requests get every reply, in order.
func TestPipelinedRoundTrips(t *testing.T) {
	overBoth(t, func(t *testing.T, wrap bool) {
		front := pairOf(t, lineServer(t, []byte("+OK\r\n")), time.Minute, wrap)
		c, err := net.Dial("tcp", front)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		r := bufio.NewReader(c)
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		for i := range 200 {
			if _, err := c.Write(bytes.Repeat([]byte("PING\r\n"), 16)); err != nil {
				t.Fatal(err)
			}
			for k := range 16 {
				line, err := r.ReadString('\n')
				if err != nil || line != "+OK\r\n" {
					t.Fatalf("batch %d reply %d: %q, %v", i, k, line, err)
				}
			}
		}
	})
}

// TestLoneWritesArriveAtOnce: a write followed by silence crosses the pair without waiting for
// more data, in both directions, at sizes around the copy buffer (a short read, then a wait
// for the next arrival; a full buffer, then a read at once). A lost readiness event would
// stall a round trip until the idle timeout, an hour here.
func TestLoneWritesArriveAtOnce(t *testing.T) {
	overBoth(t, func(t *testing.T, wrap bool) {
		front := pairOf(t, echoServer(t), time.Hour, wrap)
		c, err := net.Dial("tcp", front)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		sizes := []int{1, 5, 100, 16 << 10, 32<<10 - 1, 32 << 10, 32<<10 + 1, 64 << 10, 1}
		for i := range 40 {
			sizes = append(sizes, 1+i%7)
		}
		for i, n := range sizes {
			want := make([]byte, n)
			_, _ = rand.Read(want)
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write(want); err != nil {
				t.Fatalf("write %d (%d B): %v", i, n, err)
			}
			got := make([]byte, n)
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatalf("round trip %d (%d B): %v: the bytes were held back", i, n, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("round trip %d (%d B): wrong bytes", i, n)
			}
			if i%3 == 0 {
				time.Sleep(5 * time.Millisecond) // let every side park before the next write
			}
		}
	})
}

// TestPipeHalfCloseAfterLoneWrite: bytes written just before a half-close all arrive, then the
// EOF, with a plain TCP source on both sides of Pipe.
func TestPipeHalfCloseAfterLoneWrite(t *testing.T) {
	up := echoServer(t)
	ln := listen(t)
	serve(t, ln, Options{Name: "plain", IdleTimeout: time.Hour,
		Dial: func(ctx context.Context) (net.Conn, error) { return (&net.Dialer{}).DialContext(ctx, "tcp", up) }})
	for _, n := range []int{1, 7, 32 << 10, 100 << 10} {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		want := make([]byte, n)
		_, _ = rand.Read(want)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			_, _ = c.Write(want)
			_ = c.(*net.TCPConn).CloseWrite()
		}()
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%d B then a half-close: got %d B, %v", n, len(got), err)
		}
	}
}

// TestIdleTimeoutCloses: a pair idle in both directions is closed after the idle timeout, and
// one busy in a single direction is not.
func TestIdleTimeoutCloses(t *testing.T) {
	const idle = 400 * time.Millisecond
	front := pair(t, lineServer(t, []byte("+OK\r\n")), idle)
	c, err := net.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	// Busy: a round trip every idle/4 for 3 idle periods keeps it open.
	for i := range 12 {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if _, err := r.ReadString('\n'); err != nil {
			t.Fatalf("round trip %d while busy: %v", i, err)
		}
		time.Sleep(idle / 4)
	}
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.ReadByte(); err == nil {
		t.Fatal("read a byte nobody sent")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the idle pair was not closed within 5 s (idle timeout %s)", idle)
	}
	if d := time.Since(start); d < idle/2 {
		t.Errorf("closed after %s, before the idle timeout %s", d, idle)
	}
}

// BenchmarkPairRoundTrip is the Redis shape through the TLS pair in one process: 16
// connections, each writing a batch of `pipeline` commands and reading the replies. ns/op
// and cpu-ns/op are per command; CPU counts the whole process (client, pair and server).
func BenchmarkPairRoundTrip(b *testing.B) {
	for _, pipeline := range []int{1, 16} {
		for _, wrap := range []bool{true, false} {
			b.Run(map[int]string{1: "P1", 16: "P16"}[pipeline]+map[bool]string{true: "/Conn", false: "/TCPConn"}[wrap], func(b *testing.B) {
				front := pairOf(b, lineServer(b, []byte("+OK\r\n")), time.Minute, wrap)
				const workers = 16
				cs := benchratio.DialConns(b, front, workers)
				req := bytes.Repeat([]byte("SET key:000000000 xxx\r\n"), pipeline)
				op := func(w int) error {
					c := cs[w]
					if _, err := c.Write(req); err != nil {
						return err
					}
					for range pipeline {
						if _, err := c.R.ReadSlice('\n'); err != nil {
							return err
						}
					}
					return nil
				}
				if _, err := benchratio.RunLoad(workers, 200, op); err != nil { // warm-up: handshakes
					b.Fatal(err)
				}
				b.ResetTimer()
				l, err := benchratio.RunLoad(workers, max(b.N/pipeline, 1), op)
				if err != nil {
					b.Fatal(err)
				}
				n := float64(max(b.N/pipeline, 1) * pipeline)
				b.ReportMetric(float64(l.CPU.Nanoseconds())/n, "cpu-ns/op")
			})
		}
	}
}
