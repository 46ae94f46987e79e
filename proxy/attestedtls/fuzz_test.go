package attestedtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/fuzzcorpus"
)

const seedToken = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln"

// FuzzCertExtension parses arbitrary DER as a certificate and arbitrary bytes as the token
// extension's value; neither may panic, and an accepted token is always a compact JWS.
func FuzzCertExtension(f *testing.F) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := NewCertificate(k, seedToken, "seed", time.Unix(1700000000, 0), time.Unix(1800000000, 0))
	if err != nil {
		f.Fatal(err)
	}
	seeds := [][]any{
		{der, []byte(seedToken)},
		{der[:len(der)/2], []byte("a.b")},
		{[]byte{0x30, 0x00}, []byte("a.b.c.d")},
		{[]byte{}, []byte("..")},
		{der, []byte("a.b.\x00")},
	}
	if *fuzzcorpus.Update {
		if err := fuzzcorpus.Write("FuzzCertExtension", seeds...); err != nil {
			f.Fatal(err)
		}
	}
	for _, s := range seeds {
		f.Add(s[0].([]byte), s[1].([]byte))
	}
	f.Fuzz(func(t *testing.T, certDER, value []byte) {
		if tok, err := ParseTokenValue(value); err == nil {
			if len(tok) == 0 || len(tok) > MaxTokenBytes {
				t.Fatalf("accepted a token of %d bytes", len(tok))
			}
		}
		c, err := x509.ParseCertificate(certDER)
		if err != nil {
			return
		}
		if tok, err := TokenFromCertificate(c); err == nil {
			if _, err := ParseTokenValue([]byte(tok)); err != nil {
				t.Fatalf("TokenFromCertificate returned an unparseable token: %v", err)
			}
		}
	})
}

func TestTokenFromCertificate(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := NewCertificate(k, seedToken, "x", time.Now(), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	if tok, err := TokenFromCertificate(c); err != nil || tok != seedToken {
		t.Fatalf("%q %v", tok, err)
	}
	for _, bad := range []string{"", "a.b", "a.b.c.d", "a..c", "a.b.c\n"} {
		if _, err := ParseTokenValue([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}
