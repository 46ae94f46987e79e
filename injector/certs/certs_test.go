package certs

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLeafChainsToCA(t *testing.T) {
	now := time.Now()
	ca, err := NewCA("test-ca", now, now.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := NewLeaf(ca, []string{"svc.ns.svc", "127.0.0.1"}, now, now.Add(3*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseCert(leaf.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := ParseCert(ca.CertPEM)
	if c.NotAfter.After(caCert.NotAfter) {
		t.Error("leaf outlives its CA")
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	for _, h := range []string{"svc.ns.svc", "127.0.0.1"} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: h}); err != nil {
			t.Errorf("verify for %s: %v", h, err)
		}
	}
	if !covers(c, []string{"127.0.0.1", "svc.ns.svc"}) || covers(c, []string{"other.svc"}) {
		t.Error("covers")
	}
	other, _ := NewCA("other", now, now.Add(time.Hour))
	otherCert, _ := ParseCert(other.CertPEM)
	bad := x509.NewCertPool()
	bad.AddCert(otherCert)
	if _, err := c.Verify(x509.VerifyOptions{Roots: bad, DNSName: "svc.ns.svc"}); err == nil {
		t.Error("leaf verified against another CA")
	}
}

func TestFileSourceKeepsOldOnBadReload(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	ca, _ := NewCA("ca", now, now.Add(time.Hour))
	leaf, _ := NewLeaf(ca, []string{"a"}, now, now.Add(time.Hour))
	cf, kf := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	os.WriteFile(cf, leaf.CertPEM, 0o600)
	os.WriteFile(kf, leaf.KeyPEM, 0o600)
	f := &FileSource{CertFile: cf, KeyFile: kf, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if f.Ready() {
		t.Fatal("ready before load")
	}
	if err := f.Reload(); err != nil {
		t.Fatal(err)
	}
	first, _ := f.GetCertificate(&tls.ClientHelloInfo{})
	os.WriteFile(cf, []byte("garbage"), 0o600)
	if err := f.Reload(); err == nil {
		t.Fatal("bad file accepted")
	}
	if c, _ := f.GetCertificate(&tls.ClientHelloInfo{}); c != first || !f.Ready() {
		t.Error("failed reload replaced the certificate")
	}
	leaf2, _ := NewLeaf(ca, []string{"a"}, now, now.Add(time.Hour))
	os.WriteFile(cf, leaf2.CertPEM, 0o600)
	os.WriteFile(kf, leaf2.KeyPEM, 0o600)
	if err := f.Reload(); err != nil {
		t.Fatal(err)
	}
	if c, _ := f.GetCertificate(&tls.ClientHelloInfo{}); c == first {
		t.Error("new certificate not loaded")
	}
}

func TestManagerValidate(t *testing.T) {
	m := &Manager{
		Namespace:    "ns",
		SecretName:   "s",
		WebhookName:  "w",
		Hosts:        []string{"h"},
		Validity:     24 * time.Second,
		RotateBefore: 16 * time.Second,
		Overlap:      2 * time.Second,
		Interval:     250 * time.Millisecond,
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	m.Overlap = 16 * time.Second
	if err := m.Validate(); err == nil || !strings.Contains(err.Error(), "cert-overlap") {
		t.Errorf("overlap longer than rotate-before: %v", err)
	}
}
