package app

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/countersign/countersign/injector/certs"
)

// TestRequireClientCert: with --client-ca-file the webhook's TLS refuses a caller without a
// certificate, with one from another CA, or (with --client-names) with another name; it keeps
// the webhook's ALPN.
func TestRequireClientCert(t *testing.T) {
	now := time.Now()
	ca1, _ := certs.NewCA("ca1", now, now.Add(time.Hour))
	ca2, _ := certs.NewCA("ca2", now, now.Add(time.Hour))
	leaf, _ := certs.NewLeaf(ca1, []string{"127.0.0.1"}, now, now.Add(time.Hour))
	srvCert, _ := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca1.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	pool := &certs.PoolSource{File: caFile, Log: slog.New(slog.DiscardHandler)}
	if err := pool.Reload(); err != nil {
		t.Fatal(err)
	}
	issue := func(ca certs.Pair, cn string, dns ...string) tls.Certificate {
		return namedClientCert(t, ca, cn, dns...)
	}
	serve := func(names []string) string {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &srvCert, nil },
			NextProtos: []string{"http/1.1"}}
		RequireClientCert(cfg, pool.Pool, names)
		ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go serveTLS(ln, func(st tls.ConnectionState) string { return st.NegotiatedProtocol })
		return ln.Addr().String()
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca1.CertPEM)
	dial := func(addr string, certs ...tls.Certificate) (string, error) {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
			&tls.Config{RootCAs: roots, ServerName: "127.0.0.1", Certificates: certs, NextProtos: []string{"h2", "http/1.1"}})
		if err != nil {
			return "", err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c) // TLS 1.3: a refused certificate shows on the first read
		return string(b), err
	}

	anyName := serve(nil)
	if got, err := dial(anyName, issue(ca1, "kube-apiserver")); err != nil || got != "http/1.1" {
		t.Errorf("certificate from the CA: %q, %v; want accepted with http/1.1", got, err)
	}
	if _, err := dial(anyName); err == nil {
		t.Error("no client certificate: accepted")
	}
	if _, err := dial(anyName, issue(ca2, "kube-apiserver")); err == nil {
		t.Error("client certificate from another CA: accepted")
	}

	pinned := serve([]string{"kube-apiserver", "apiserver.example"})
	if _, err := dial(pinned, issue(ca1, "kube-apiserver")); err != nil {
		t.Errorf("pinned CN: %v", err)
	}
	if _, err := dial(pinned, issue(ca1, "other", "apiserver.example")); err != nil {
		t.Errorf("pinned DNS SAN: %v", err)
	}
	if _, err := dial(pinned, issue(ca1, "someone-else")); err == nil {
		t.Error("a name not in --client-names: accepted")
	}
}
