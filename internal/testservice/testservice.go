// Package testservice runs the real local attestation service (attestation/service) in-process
// on a loopback TLS listener, with a simulated platform key written to disk, for tests of
// everything that attests or verifies.
package testservice

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/attestation/quote"
	"github.com/countersign/countersign/attestation/service"
)

// Service is a running local attestation service.
type Service struct {
	URL             string // https://127.0.0.1:port, the tokens' iss
	CAFile          string // PEM of the TLS certificate, for clients and policies
	PlatformKeyFile string // simulated platform private key (its public half is trusted)
	Platform        ed25519.PrivateKey
	Server          *httptest.Server
	Svc             *service.Service
}

var (
	signingOnce sync.Once
	signingKey  *rsa.PrivateKey
)

// Start starts a service trusting a fresh simulated platform key. mutate may adjust the
// configuration (lifetime, policy, clock) before the service is built.
func Start(t testing.TB, mutate func(*service.Config)) *Service {
	t.Helper()
	dir := t.TempDir()
	s := &Service{PlatformKeyFile: filepath.Join(dir, "platform.pem")}
	var err error
	if s.Platform, err = quote.GeneratePlatformKey(s.PlatformKeyFile); err != nil {
		t.Fatal(err)
	}
	signingOnce.Do(func() {
		if signingKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test attestation signing"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &signingKey.PublicKey, signingKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	s.Server = httptest.NewUnstartedServer(nil)
	s.Server.StartTLS()
	t.Cleanup(s.Server.Close)
	s.URL = s.Server.URL
	cfg := service.Config{
		Issuer: s.URL, SigningKey: signingKey, SigningCert: cert,
		SimPlatformKeys: []ed25519.PublicKey{s.Platform.Public().(ed25519.PublicKey)},
	}
	if mutate != nil {
		mutate(&cfg)
	}
	if s.Svc, err = service.New(cfg); err != nil {
		t.Fatal(err)
	}
	s.Server.Config.Handler = s.Svc.Handler()
	s.CAFile = filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(s.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Server.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}
