package server_test

import (
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/proxy/attestedtls"
	"github.com/countersign/countersign/proxy/config"
)

// echoApp is a TCP echo server on loopback.
func echoApp(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return l.Addr().String()
}

// TestTCPStreamBoundToToken: tokens live 5 s. A hostile peer presents its genuine token in a
// certificate valid for an hour: the stream used to stay open until the certificate's
// NotAfter, which the peer chooses; such a certificate is now refused
// (certificate_outlives_token). A stream through the proxies ends when the token expires.
func TestTCPStreamBoundToToken(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	bc := e.cfg("back", mrBack)
	bc.Inbound = []config.Inbound{{
		Name:      "tcp",
		Listen:    "127.0.0.1:0",
		Protocol:  "tcp",
		ForwardTo: echoApp(t),
		Allow:     []string{"front"},
	}}
	back := e.start(bc)
	fc := e.cfg("front", mrFront)
	fc.Outbound = []config.Outbound{{
		Name:             "to-back",
		Listen:           "127.0.0.1:0",
		Protocol:         "tcp",
		Upstream:         back.Addr("tcp"),
		UpstreamIdentity: []string{"back"},
	}}
	front := e.start(fc)

	cur := front.Identity.Current()
	der, err := attestedtls.NewCertificate(cur.Key, cur.Token.Raw, "front", time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.Dial("tcp", back.Addr("tcp"), &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: cur.Key}}})
	if err == nil {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(c, "ping")
		buf := make([]byte, 4)
		_, err = io.ReadFull(c, buf)
		c.Close()
	}
	if err == nil {
		t.Fatal("a certificate valid beyond its token carried a stream")
	}
	waitMetric(t, back, "tcp", string(attestedtls.CodeCertOutlivesToken), 1)

	// Through the proxies: the stream is closed once the token that allowed it expires.
	s, err := net.Dial("tcp", front.Addr("to-back"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := time.Now()
	exp := front.Identity.Current().Expiry
	_ = s.SetDeadline(time.Now().Add(15 * time.Second))
	buf := make([]byte, 4)
	for {
		if _, err := io.WriteString(s, "ping"); err != nil {
			break
		}
		if _, err := io.ReadFull(s, buf); err != nil {
			break
		}
		if string(buf) != "ping" {
			t.Fatalf("echo %q", buf)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if d := time.Since(start); d > 8*time.Second || time.Now().Before(exp.Add(-2*time.Second)) {
		t.Errorf("stream closed after %v (token expiry %v from the start)", d, exp.Sub(start))
	}
	if !strings.Contains(back.logs.String()+front.logs.String(), "token that allowed it expired") {
		t.Errorf("no log of the stream closed at token expiry")
	}
}
