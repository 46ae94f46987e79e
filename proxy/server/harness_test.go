package server_test

import (
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/testproxy"

	"github.com/countersign/countersign/attestation/quote"
	"github.com/countersign/countersign/attestation/service"
	"github.com/countersign/countersign/proxy/config"
	"github.com/countersign/countersign/proxy/server"
)

// Simulated measurements of the identities in the test policy.
var (
	mrFront = strings.Repeat("a1", 32)
	mrBack  = strings.Repeat("b2", 32)
	mrRogue = strings.Repeat("c3", 32)
	mrThird = strings.Repeat("d4", 32)
)

var (
	signingOnce sync.Once
	signingKey  *rsa.PrivateKey
	signingCert *x509.Certificate
)

// env is a local attestation service (in-process, TLS on loopback) and a policy.
type env struct {
	t        testing.TB
	dir      string
	url      string
	caFile   string
	platform string // sim platform key file
	policy   string
	down     atomic.Bool // the service answers 503 to everything
	svc      *service.Service
}

func newEnv(t testing.TB, lifetime time.Duration) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir()}
	signingOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cs-signing-")
		if err != nil {
			panic(err)
		}
		defer os.RemoveAll(dir)
		signingKey, signingCert, _, err = service.LoadOrCreateSigningKey(dir+"/k.pem", dir+"/c.pem", time.Now())
		if err != nil {
			panic(err)
		}
	})
	e.platform = filepath.Join(e.dir, "platform.pem")
	priv, err := quote.GeneratePlatformKey(e.platform)
	if err != nil {
		t.Fatal(err)
	}
	var h atomic.Pointer[http.Handler]
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e.down.Load() {
			http.Error(w, "down for the test", http.StatusServiceUnavailable)
			return
		}
		(*h.Load()).ServeHTTP(w, r)
	}))
	ts.StartTLS()
	t.Cleanup(ts.Close)
	e.url = ts.URL
	e.svc, err = service.New(service.Config{
		Issuer:          ts.URL,
		SigningKey:      signingKey,
		SigningCert:     signingCert,
		TokenLifetime:   lifetime,
		SimPlatformKeys: []ed25519.PublicKey{priv.Public().(ed25519.PublicKey)},
	})
	if err != nil {
		t.Fatal(err)
	}
	hh := e.svc.Handler()
	h.Store(&hh)
	e.caFile = filepath.Join(e.dir, "ca.pem")
	write(t, e.caFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw})))
	e.policy = filepath.Join(e.dir, "policy.yaml")
	write(t, e.policy, fmt.Sprintf(`
issuers:
  - url: %s
    caFile: %s
clockSkew: 1s
identities:
  front: {mrenclave: ["%s"], allowDebug: true}
  back:  {mrenclave: ["%s"], allowDebug: true}
  third: {mrenclave: ["%s"], allowDebug: true}
  rogue: {mrenclave: ["%s"], allowDebug: true}
`, e.url, e.caFile, mrFront, mrBack, mrThird, mrRogue))
	return e
}

func write(t testing.TB, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// cfg returns a proxy configuration for identity name claiming measurement mr.
func (e *env) cfg(name, mr string) *config.Config {
	m, err := config.ParseMeasurement(mr)
	if err != nil {
		panic(err)
	}
	c := &config.Config{
		Attester:           config.Attester{Type: "sim", SimPlatformKey: e.platform, SimIdentity: config.SimIdentity{MREnclave: m}},
		AttestationService: config.AttestationService{URL: e.url, CAFile: e.caFile},
		PolicyFile:         e.policy,
		Identity:           name,
		Claimed:            map[string]string{"app": "sha256:" + strings.Repeat("0", 64)},
		Admin:              config.Admin{Listen: "127.0.0.1:0"},
		Refresh:            config.Refresh{MinBackoff: config.Duration(100 * time.Millisecond), MaxBackoff: config.Duration(300 * time.Millisecond)},
		Limits:             config.Limits{ShutdownTimeout: config.Duration(2 * time.Second)},
	}
	return c
}

type proxyT struct {
	*server.Server
	logs *testproxy.Logs
}

// start validates c, starts the proxy and waits until it is ready.
func (e *env) start(c *config.Config) *proxyT {
	e.t.Helper()
	srv, logs := testproxy.Start(e.t, c)
	return &proxyT{Server: srv, logs: logs}
}

// app is a real HTTP app on loopback that echoes what it saw.
func newApp(t testing.TB) (*httptest.Server, *atomic.Pointer[http.Header]) {
	var last atomic.Pointer[http.Header]
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		last.Store(&h)
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "%s %s %s body=%d", r.Method, r.Host, r.URL.RequestURI(), len(b))
	}))
	t.Cleanup(s.Close)
	return s, &last
}

func big1() *big.Int { return big.NewInt(1) }

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
