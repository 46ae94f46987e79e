package app

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/injector/certs"
)

// clientCert issues a client certificate from ca (certs.Pair) for the "proxy".
func clientCert(t *testing.T, ca certs.Pair, eku x509.ExtKeyUsage) tls.Certificate {
	return namedClientCert(t, ca, eku, "proxy")
}

// namedClientCert issues a certificate from ca with common name cn, DNS names dns and usage eku.
func namedClientCert(t *testing.T, ca certs.Pair, eku x509.ExtKeyUsage, cn string, dns ...string) tls.Certificate {
	t.Helper()
	pair, err := tls.X509KeyPair(ca.CertPEM, ca.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn}, DNSNames: dns,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{eku}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, pair.Leaf, &k.PublicKey, pair.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
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
