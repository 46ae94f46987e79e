package service

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadOrCreateSigningKey(t *testing.T) {
	dir := t.TempDir()
	keyPath, certPath := filepath.Join(dir, "k.pem"), filepath.Join(dir, "c.pem")
	key, cert, created, err := LoadOrCreateSigningKey(keyPath, certPath, testNow)
	if err != nil || !created {
		t.Fatalf("create: created=%v err=%v", created, err)
	}
	if key.N.BitLen() != 2048 {
		t.Errorf("key of %d bits, want 2048", key.N.BitLen())
	}
	if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		t.Errorf("certificate is not self-signed: %v", err)
	}
	for path, mode := range map[string]os.FileMode{keyPath: 0o600, certPath: 0o644} {
		info, err := os.Stat(path)
		if err != nil || info.Mode().Perm() != mode {
			t.Errorf("%s mode %v (%v), want %v", filepath.Base(path), info.Mode().Perm(), err, mode)
		}
	}
	key2, cert2, created, err := LoadOrCreateSigningKey(keyPath, certPath, testNow.Add(time.Hour))
	if err != nil || created {
		t.Fatalf("reload: created=%v err=%v", created, err)
	}
	if !key2.Equal(key) || !cert2.Equal(cert) || KeyID(cert2) != KeyID(cert) {
		t.Error("reload returned another key or certificate: the kid would change across restarts")
	}

	// PKCS#1 keys load too.
	pkcs1 := filepath.Join(dir, "pkcs1.pem")
	if err := os.WriteFile(pkcs1, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
	if k, _, _, err := LoadOrCreateSigningKey(pkcs1, certPath, testNow); err != nil || !k.Equal(key) {
		t.Errorf("PKCS#1 key: %v", err)
	}

	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	otherPath := filepath.Join(dir, "other.pem")
	der, _ := x509.MarshalPKCS8PrivateKey(other)
	if err := os.WriteFile(otherPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, key, cert, msg string
	}{
		{"only the key", keyPath, filepath.Join(dir, "none.pem"), "exists but its certificate"},
		{"only the certificate", filepath.Join(dir, "none.pem"), certPath, "exists but its key"},
		{"mismatched pair", otherPath, certPath, "is not the certificate of the key"},
		{"not PEM", garbage, certPath, "no PEM block"},
		{"certificate not PEM", keyPath, garbage, "no CERTIFICATE PEM block"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, _, err := LoadOrCreateSigningKey(tt.key, tt.cert, testNow)
			if err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %v, want it to say %q", err, tt.msg)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "none.pem")); !os.IsNotExist(err) {
		t.Error("a missing half was created instead of refused")
	}
}

func TestGenerateTLS(t *testing.T) {
	cert, caPEM, err := GenerateTLS([]string{"attest.test", "localhost", "127.0.0.1", "::1", "localhost"}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(caPEM)
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil || !ca.IsCA {
		t.Fatalf("CA: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	for _, host := range []string{"attest.test", "localhost", "127.0.0.1", "::1"} {
		if _, err := cert.Leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: pool, CurrentTime: testNow}); err != nil {
			t.Errorf("%s: %v", host, err)
		}
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{DNSName: "other.test", Roots: pool, CurrentTime: testNow}); err == nil {
		t.Error("certificate valid for a host it was not made for")
	}
	if len(cert.Leaf.DNSNames) != 2 || len(cert.Leaf.IPAddresses) != 2 || !cert.Leaf.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) {
		t.Errorf("names %v %v", cert.Leaf.DNSNames, cert.Leaf.IPAddresses)
	}
	// It serves TLS to a client that trusts only the CA.
	c, s := net.Pipe()
	go func() {
		srv := tls.Server(s, &tls.Config{Certificates: []tls.Certificate{cert}})
		_ = srv.Handshake()
		srv.Close()
	}()
	cli := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: "attest.test", Time: func() time.Time { return testNow }})
	if err := cli.Handshake(); err != nil {
		t.Errorf("TLS handshake: %v", err)
	}
	cli.Close()
	if _, _, err := GenerateTLS(nil, testNow); err == nil {
		t.Error("no hosts accepted")
	}

	path := filepath.Join(t.TempDir(), "ca.pem")
	for range 2 { // a second write replaces the first
		if err := WriteCA(path, caPEM); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != string(caPEM) {
		t.Errorf("WriteCA wrote %q (%v)", got, err)
	}
}
