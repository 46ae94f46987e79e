package attestedtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"
)

// tokenOf remembers the token of a certificate object; a certificate without one is refused
// every time, never remembered.
func TestTokenOf(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := NewCertificate(k, seedToken, "x", time.Now(), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if got, err := tokenOf(cert); err != nil || got != seedToken {
			t.Fatalf("tokenOf = %q, %v", got, err)
		}
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "plain"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, _ = x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	plain, _ := x509.ParseCertificate(der)
	for range 2 {
		if _, err := tokenOf(plain); err == nil {
			t.Fatal("a certificate without the token extension was accepted")
		}
	}
}
