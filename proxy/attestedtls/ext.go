// Package attestedtls is attested mutual TLS between proxies: a self-signed certificate whose
// key the enclave made carries the enclave's MAA token in a non-critical X.509 extension; each
// side checks the other's token against policy and that the token's runtime data names the
// certificate's key. The TLS 1.3 handshake then proves possession of that key.
package attestedtls

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"runtime"
	"sync"
	"time"
	"weak"
)

// OIDToken is the extension that carries the MAA token (docs/protocol.md, "Attested
// certificates"). The value is the compact JWS in ASCII, not further wrapped.
var OIDToken = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 59963, 1, 1}

// MaxTokenBytes bounds the token in a certificate (the verifier's own bound is the same).
const MaxTokenBytes = 64 << 10

// MaxCertBytes bounds a peer certificate's DER.
const MaxCertBytes = MaxTokenBytes + 8<<10

// NewCertificate makes the self-signed certificate for key carrying token; it is valid until
// notAfter (the token's exp).
func NewCertificate(key *ecdsa.PrivateKey, token, commonName string, now, notAfter time.Time) ([]byte, error) {
	if err := checkTokenValue([]byte(token)); err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:    serial,
		Subject:         pkix.Name{CommonName: commonName, Organization: []string{"Countersign attested proxy"}},
		NotBefore:       now.Add(-time.Minute),
		NotAfter:        notAfter,
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		ExtraExtensions: []pkix.Extension{{Id: OIDToken, Critical: false, Value: []byte(token)}},
	}
	return x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
}

// TokenFromCertificate returns the token in cert's extension. Exactly one non-critical
// extension must be present; its value must be a plausible compact JWS of bounded size.
func TokenFromCertificate(cert *x509.Certificate) (string, error) {
	if len(cert.Raw) > MaxCertBytes {
		return "", fmt.Errorf("certificate of %d bytes, at most %d allowed", len(cert.Raw), MaxCertBytes)
	}
	var found *pkix.Extension
	for i := range cert.Extensions {
		e := &cert.Extensions[i]
		if !e.Id.Equal(OIDToken) {
			continue
		}
		if found != nil {
			return "", errors.New("certificate carries the token extension twice")
		}
		found = e
	}
	if found == nil {
		return "", fmt.Errorf("certificate has no attestation token extension (%s): not an attested peer", OIDToken)
	}
	if found.Critical {
		return "", errors.New("the token extension is marked critical; it must not be")
	}
	if err := checkTokenValue(found.Value); err != nil {
		return "", err
	}
	return string(found.Value), nil
}

// ParseTokenValue parses an extension value.
func ParseTokenValue(v []byte) (string, error) {
	if err := checkTokenValue(v); err != nil {
		return "", err
	}
	return string(v), nil
}

// checkTokenValue accepts three non-empty base64url segments separated by dots.
func checkTokenValue(v []byte) error {
	if len(v) == 0 {
		return errors.New("the token extension is empty")
	}
	if len(v) > MaxTokenBytes {
		return fmt.Errorf("token extension of %d bytes, at most %d allowed", len(v), MaxTokenBytes)
	}
	dots, seg := 0, 0
	for _, c := range v {
		switch {
		case c == '.':
			if seg == 0 {
				return errors.New("token extension: empty JWS segment")
			}
			dots++
			seg = 0
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			seg++
		default:
			return fmt.Errorf("token extension: byte 0x%02x is not base64url or '.'", c)
		}
	}
	if dots != 2 || seg == 0 {
		return errors.New("token extension: expected a compact JWS (three base64url segments)")
	}
	return nil
}

// CheckKey requires an ECDSA P-256 key, the only kind proxies use (it also signs chain entries).
func CheckKey(pub crypto.PublicKey) (*ecdsa.PublicKey, error) {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k.Curve != elliptic.P256() {
		return nil, fmt.Errorf("certificate key is %T, expected ECDSA P-256", pub)
	}
	return k, nil
}

// tokenByCert remembers, per live certificate object, the token TokenFromCertificate
// extracted from it: an established connection's peer certificate is the same object on
// every request, so PeerOf does not scan and copy the token's several KB again each time.
// Entries go when their certificate is garbage collected. Only successful extractions are
// remembered; a certificate's extensions do not change.
var tokenByCert sync.Map // weak.Pointer[x509.Certificate] → string

func tokenOf(cert *x509.Certificate) (string, error) {
	wp := weak.Make(cert)
	if v, ok := tokenByCert.Load(wp); ok {
		return v.(string), nil
	}
	raw, err := TokenFromCertificate(cert)
	if err != nil {
		return "", err
	}
	if _, loaded := tokenByCert.LoadOrStore(wp, raw); !loaded {
		runtime.AddCleanup(cert, func(k weak.Pointer[x509.Certificate]) { tokenByCert.Delete(k) }, wp)
	}
	return raw, nil
}
