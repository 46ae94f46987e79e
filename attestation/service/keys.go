package service

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Validity of the certificates the service generates for itself.
const (
	signingCertValidity = 10 * 365 * 24 * time.Hour
	tlsCAValidity       = 10 * 365 * 24 * time.Hour
	tlsServingValidity  = 365 * 24 * time.Hour
)

// LoadOrCreateSigningKey returns the token signing key and certificate stored at keyPath and
// certPath. When neither file exists it generates an RSA 2048 key and a self-signed
// certificate and writes them (the key with mode 0600) so the kid stays the same across
// restarts; when only one exists it refuses, so that a lost file is never silently replaced.
// created reports whether new files were written.
func LoadOrCreateSigningKey(keyPath, certPath string, now time.Time) (key *rsa.PrivateKey, cert *x509.Certificate, created bool, err error) {
	keyExists, err := exists(keyPath)
	if err != nil {
		return nil, nil, false, err
	}
	certExists, err := exists(certPath)
	if err != nil {
		return nil, nil, false, err
	}
	switch {
	case keyExists && certExists:
		key, cert, err := loadSigningKey(keyPath, certPath)
		return key, cert, false, err
	case keyExists:
		return nil, nil, false, fmt.Errorf("signing key %s exists but its certificate %s does not: restore the certificate, or remove both to generate a new pair", keyPath, certPath)
	case certExists:
		return nil, nil, false, fmt.Errorf("signing certificate %s exists but its key %s does not: restore the key, or remove both to generate a new pair", certPath, keyPath)
	}
	key, err = rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, false, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "Countersign local attestation service token signing", Organization: []string{"Countersign"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(signingCertValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, false, err
	}
	cert, err = x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, false, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, false, err
	}
	if err := writeNew(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, nil, false, err
	}
	if err := writeNew(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		os.Remove(keyPath) // never leave a key without its certificate
		return nil, nil, false, err
	}
	return key, cert, true, nil
}

func loadSigningKey(keyPath, certPath string) (*rsa.PrivateKey, *x509.Certificate, error) {
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	block, _ := pem.Decode(kb)
	if block == nil {
		return nil, nil, fmt.Errorf("%s: no PEM block, expected an RSA private key", keyPath)
	}
	var key *rsa.PrivateKey
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", keyPath, err)
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, nil, fmt.Errorf("%s: a %T key, expected RSA (tokens are RS256)", keyPath, k)
		}
		key = rk
	case "RSA PRIVATE KEY":
		if key, err = x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", keyPath, err)
		}
	default:
		return nil, nil, fmt.Errorf("%s: PEM block %q, expected \"PRIVATE KEY\" or \"RSA PRIVATE KEY\"", keyPath, block.Type)
	}
	cb, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, err
	}
	block, _ = pem.Decode(cb)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("%s: no CERTIFICATE PEM block", certPath)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certPath, err)
	}
	if pub, ok := cert.PublicKey.(*rsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return nil, nil, fmt.Errorf("%s is not the certificate of the key in %s", certPath, keyPath)
	}
	return key, cert, nil
}

// GenerateTLS makes a throwaway ECDSA P-256 CA and a serving certificate it signs for hosts
// (DNS names or IP addresses), for a service started without --tls-cert/--tls-key. It returns
// the serving certificate (chain: leaf, CA) and the CA certificate in PEM for clients to trust.
func GenerateTLS(hosts []string, now time.Time) (tls.Certificate, []byte, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "Countersign local attestation service CA", Organization: []string{"Countersign"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(tlsCAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: "Countersign local attestation service", Organization: []string{"Countersign"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(tlsServingValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	seen := map[string]bool{}
	for _, h := range hosts {
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			leafTmpl.IPAddresses = append(leafTmpl.IPAddresses, ip)
		} else {
			leafTmpl.DNSNames = append(leafTmpl.DNSNames, h)
		}
	}
	if len(seen) == 0 {
		return tls.Certificate{}, nil, errors.New("no host names for the serving certificate")
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, leafKey.Public(), caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	cert := tls.Certificate{Certificate: [][]byte{leafDER, caDER}, PrivateKey: crypto.Signer(leafKey), Leaf: leaf}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), nil
}

// WriteCA writes a CA certificate PEM for clients (mode 0644), replacing an older one
// atomically so a reader never sees half a file.
func WriteCA(path string, caPEM []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".ca-*.pem")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(caPEM); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	}
	return false, err
}

// writeNew creates path with the given mode, refusing to overwrite.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic("crypto/rand: " + err.Error())
	}
	return n.Add(n, big.NewInt(1))
}
