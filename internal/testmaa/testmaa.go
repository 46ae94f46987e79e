// Package testmaa is a minimal MAA stand-in for tests: an RSA signing key, a TLS server that
// serves {url}/certs, and a Sign function that mints tokens with any header and claims,
// including malformed and malicious ones. It is not the local attestation service (that is
// attestation/service); it exists so the verifier's tests control every byte.
package testmaa

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// CertsMode selects how /certs answers, for fault tests.
type CertsMode int32

// Modes of /certs.
const (
	CertsOK      CertsMode = iota // the key set
	CertsDown                     // 503
	CertsGarbage                  // 200 with a body that is not a key set
)

// Issuer is a fake attestation service.
type Issuer struct {
	URL    string
	Key    *rsa.PrivateKey
	Cert   *x509.Certificate
	Kid    string
	Server *httptest.Server
	// CAFile is a PEM file with the server's TLS certificate, for IssuerConfig.CAFile.
	CAFile string
	// Client trusts the server.
	Client *http.Client

	mode      atomic.Int32
	certsHits atomic.Int64
	mu        sync.Mutex
	extraKeys []jwk
}

type jwk struct {
	Kty string   `json:"kty"`
	Kid string   `json:"kid"`
	X5c []string `json:"x5c"`
}

// New starts a fake issuer; it stops with the test.
func New(t testing.TB) *Issuer {
	t.Helper()
	key := rsaKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "testmaa signing"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	sum := sha256.Sum256(der)
	is := &Issuer{Key: key, Cert: cert, Kid: base64.RawURLEncoding.EncodeToString(sum[:])}
	mux := http.NewServeMux()
	mux.HandleFunc("/certs", is.serveCerts)
	is.Server = httptest.NewTLSServer(mux)
	t.Cleanup(is.Server.Close)
	is.URL = is.Server.URL
	is.Client = is.Server.Client()
	is.CAFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(is.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: is.Server.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return is
}

var (
	keyOnce sync.Once
	keyPool []*rsa.PrivateKey
	keyNext atomic.Int64
)

// rsaKey returns a 2048-bit key from a small pool generated once per test binary (key
// generation is slow under -race).
func rsaKey(t testing.TB) *rsa.PrivateKey {
	keyOnce.Do(func() {
		for i := 0; i < 4; i++ {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			keyPool = append(keyPool, k)
		}
	})
	return keyPool[int(keyNext.Add(1))%len(keyPool)]
}

// OtherKey returns an RSA key that is not this issuer's.
func (is *Issuer) OtherKey(t testing.TB) *rsa.PrivateKey {
	for {
		k := rsaKey(t)
		if !k.Equal(is.Key) {
			return k
		}
	}
}

// SetCertsMode changes how /certs answers.
func (is *Issuer) SetCertsMode(m CertsMode) { is.mode.Store(int32(m)) }

// CertsHits is how many times /certs was requested.
func (is *Issuer) CertsHits() int64 { return is.certsHits.Load() }

// AddKey publishes another signing key under kid (key rotation).
func (is *Issuer) AddKey(kid string, key *rsa.PrivateKey) {
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	is.mu.Lock()
	is.extraKeys = append(is.extraKeys, jwk{Kty: "RSA", Kid: kid, X5c: []string{base64.StdEncoding.EncodeToString(der)}})
	is.mu.Unlock()
}

func (is *Issuer) serveCerts(w http.ResponseWriter, _ *http.Request) {
	is.certsHits.Add(1)
	switch CertsMode(is.mode.Load()) {
	case CertsDown:
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	case CertsGarbage:
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"keys":[{"kty":"RSA","kid":"x","x5c":["bm90IGEgY2VydA=="]}]}`))
		return
	}
	is.mu.Lock()
	keys := append([]jwk{{Kty: "RSA", Kid: is.Kid, X5c: []string{base64.StdEncoding.EncodeToString(is.Cert.Raw)}}}, is.extraKeys...)
	is.mu.Unlock()
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(map[string]any{"keys": keys})
}

// Header returns the header MAA sends.
func (is *Issuer) Header() map[string]any {
	return map[string]any{"alg": "RS256", "jku": is.URL + "/certs", "kid": is.Kid, "typ": "JWT"}
}

// Measurements used by Claims.
var (
	MRSigner  = hex.EncodeToString(bytesOf(0x51))
	MREnclave = hex.EncodeToString(bytesOf(0xe1))
)

func bytesOf(b byte) []byte {
	out := make([]byte, 32)
	for i := range out {
		out[i] = b
	}
	return out
}

// Claims returns a valid SGX claim set issued now, with runtime data naming keys (JWK objects).
func (is *Issuer) Claims(now time.Time, runtimeKeys ...any) map[string]any {
	c := map[string]any{
		"iss":                    is.URL,
		"iat":                    now.Unix(),
		"nbf":                    now.Unix(),
		"exp":                    now.Add(8 * time.Hour).Unix(),
		"jti":                    "00ff",
		"x-ms-ver":               "1.0",
		"x-ms-attestation-type":  "sgx",
		"x-ms-policy-hash":       "wm9mHlvTU82e8UqoOy1Yj1FBRSNkfe99-69IYDq9eWs",
		"x-ms-sgx-is-debuggable": false,
		"x-ms-sgx-mrsigner":      MRSigner,
		"x-ms-sgx-mrenclave":     MREnclave,
		"x-ms-sgx-product-id":    1,
		"x-ms-sgx-svn":           3,
	}
	if len(runtimeKeys) > 0 {
		c["x-ms-runtime"] = map[string]any{"keys": runtimeKeys}
	}
	return c
}

// Sign mints a compact RS256 token with the issuer's key.
func (is *Issuer) Sign(header, claims map[string]any) string {
	return SignWith(is.Key, header, claims)
}

// SignWith mints a compact RS256 token with any key.
func SignWith(key *rsa.PrivateKey, header, claims map[string]any) string {
	signing := Encode(header) + "." + Encode(claims)
	h := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, h[:])
	if err != nil {
		panic(err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// Encode is base64url(JSON(v)).
func Encode(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
