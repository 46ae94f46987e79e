package app

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/injector/certs"
)

// clientCert issues a certificate for the "proxy" from ca, for client authentication (or, to be
// refused, for serving: eku ExtKeyUsageServerAuth).
func clientCert(t *testing.T, ca certs.Pair, eku x509.ExtKeyUsage) tls.Certificate {
	if eku == x509.ExtKeyUsageServerAuth {
		p, err := certs.NewLeaf(ca, []string{"proxy"}, time.Now(), time.Now().Add(time.Hour))
		return keyPair(t, p, err)
	}
	return namedClientCert(t, ca, "proxy")
}

// namedClientCert issues a client certificate from ca with common name cn and DNS names dns.
func namedClientCert(t *testing.T, ca certs.Pair, cn string, dns ...string) tls.Certificate {
	p, err := certs.NewClientLeaf(ca, cn, dns, time.Now(), time.Now().Add(time.Hour))
	return keyPair(t, p, err)
}

func keyPair(t *testing.T, p certs.Pair, err error) tls.Certificate {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair(p.CertPEM, p.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// serveTLS accepts on ln until it closes; each connection that completes its handshake is
// sent reply(its state) and closed.
func serveTLS(ln net.Listener, reply func(tls.ConnectionState) string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			if tc := c.(*tls.Conn); tc.Handshake() == nil {
				_, _ = c.Write([]byte(reply(tc.ConnectionState())))
			}
		}()
	}
}

// TestXDSTLS: the control plane's TLS requires a client certificate issued by the CA in
// --xds-client-ca-file (a certificate for another use, from another CA, or none is refused),
// negotiates h2 for gRPC, and follows a replaced CA file without a restart.
func TestXDSTLS(t *testing.T) {
	now := time.Now()
	ca1, _ := certs.NewCA("ca1", now, now.Add(time.Hour))
	ca2, _ := certs.NewCA("ca2", now, now.Add(time.Hour))
	leaf, err := certs.NewLeaf(ca1, []string{"127.0.0.1"}, now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	srvCert, _ := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, ca1.CertPEM, 0o600)
	pool := &certs.PoolSource{File: caFile, Log: slog.New(slog.DiscardHandler)}
	if err := pool.Reload(); err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", XDSTLS(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &srvCert, nil }, pool.Pool))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go serveTLS(ln, func(tls.ConnectionState) string { return "ok" })
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca1.CertPEM)
	dial := func(certs ...tls.Certificate) (string, error) {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(),
			&tls.Config{RootCAs: roots, ServerName: "127.0.0.1", Certificates: certs, NextProtos: []string{"h2"}})
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 2)
		if _, err := c.Read(b); err != nil { // TLS 1.3: a refused client certificate shows here
			return "", err
		}
		return c.ConnectionState().NegotiatedProtocol, nil
	}
	if proto, err := dial(clientCert(t, ca1, x509.ExtKeyUsageClientAuth)); err != nil || proto != "h2" {
		t.Fatalf("a proxy with a certificate from the CA: %q %v", proto, err)
	}
	for name, c := range map[string][]tls.Certificate{
		"none":         nil,
		"other CA":     {clientCert(t, ca2, x509.ExtKeyUsageClientAuth)},
		"server usage": {clientCert(t, ca1, x509.ExtKeyUsageServerAuth)},
	} {
		if _, err := dial(c...); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("client certificate %s: %v, want a certificate error", name, err)
		}
	}
	// The CA file is replaced (CA rotation): the new CA's proxies get in, the old one's not.
	os.WriteFile(caFile, ca2.CertPEM, 0o600)
	if err := pool.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(clientCert(t, ca2, x509.ExtKeyUsageClientAuth)); err != nil {
		t.Errorf("after the CA file changed, a certificate from the new CA: %v", err)
	}
	if _, err := dial(clientCert(t, ca1, x509.ExtKeyUsageClientAuth)); err == nil {
		t.Error("after the CA file changed, a certificate from the old CA is still accepted")
	}
}
