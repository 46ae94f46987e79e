package httpframe

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// serve starts an HTTP server on loopback whose connections are guarded; h gets the verdict
// from Begin. It returns the address.
func serve(t testing.TB, tlsCfg *tls.Config, h func(w http.ResponseWriter, r *http.Request, c *Conn, why Reason)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var l net.Listener = ln
	if tlsCfg != nil {
		l = tls.NewListener(ln, tlsCfg)
	}
	srv := &http.Server{
		ReadHeaderTimeout:            5 * time.Second,
		DisableGeneralOptionsHandler: true,
		ConnContext:                  WithConn,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := FromContext(r.Context())
			h(w, r, c, c.Begin(r))
		}),
	}
	go func() { _ = srv.Serve(NewListener(l, Options{})) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// TestBodyShapeStopsTheStream: a shape in the body of the request being served fails the
// handler's body read (nothing after it is delivered) and shows in Current.
func TestBodyShapeStopsTheStream(t *testing.T) {
	got := make(chan string, 1)
	addr := serve(t, nil, func(w http.ResponseWriter, r *http.Request, c *Conn, why Reason) {
		b, err := io.ReadAll(r.Body)
		got <- fmt.Sprintf("begin=%v body=%q err=%v current=%v", why, b, err, c.Current())
		w.Header().Set("Connection", "close")
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
	time.Sleep(100 * time.Millisecond) // the handler is reading the body now
	_, _ = io.WriteString(c, "2\nxy\r\n0\r\n\r\n")
	select {
	case s := <-got:
		if !strings.HasPrefix(s, "begin=no smuggling shape body=\"abc\" err=") || !strings.Contains(s, ErrFraming.Error()) || !strings.HasSuffix(s, "current="+BadChunkFraming.String()) {
			t.Errorf("handler saw %s", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler did not finish")
	}
}

// TestTLSConnectionState: above TLS, the server still gets Request.TLS (the handshake is
// completed by ConnectionState, with the connection's context), and the guard sees plaintext.
func TestTLSConnectionState(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"x"}}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	cfg := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: k}}, NextProtos: []string{"http/1.1"},
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			if FromContext(h.Context()) == nil {
				return nil, fmt.Errorf("handshake without the connection's context")
			}
			return nil, nil
		}}
	addr := serve(t, cfg, func(w http.ResponseWriter, r *http.Request, c *Conn, why Reason) {
		fmt.Fprintf(w, "tls=%v verdict=%v", r.TLS != nil && r.TLS.HandshakeComplete, why)
	})
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i, req := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	} {
		_, _ = io.WriteString(c, req)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := []string{"tls=true verdict=no smuggling shape", "tls=true verdict=" + CLAndTE.String()}[i]
		if string(b) != want {
			t.Errorf("request %d: %q, want %q", i, b, want)
		}
	}
}
