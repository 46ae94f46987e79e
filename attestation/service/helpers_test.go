package service

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/attestation/maa"
	"github.com/countersign/countersign/attestation/quote"
)

const testIssuer = "https://attest.test:8443"

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

var (
	signingOnce sync.Once
	signingKey  *rsa.PrivateKey
	signingCert *x509.Certificate
)

// testSigning returns one RSA key and certificate for the whole test binary (generating RSA
// keys is slow).
func testSigning(t testing.TB) (*rsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	signingOnce.Do(func() {
		dir, err := os.MkdirTemp("", "countersign-signing-")
		if err != nil {
			panic(err)
		}
		defer os.RemoveAll(dir)
		signingKey, signingCert, _, err = LoadOrCreateSigningKey(dir+"/key.pem", dir+"/cert.pem", testNow)
		if err != nil {
			panic(err)
		}
	})
	return signingKey, signingCert
}

// platform is a simulated platform for building quotes.
type platform struct {
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
}

func newPlatform(t testing.TB) platform {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return platform{priv: priv, pub: pub}
}

// testReport is the enclave identity the tests attest.
func testReport(runtimeData []byte) *quote.Report {
	r := &quote.Report{ProductID: 7, SVN: 3, ReportData: maa.ReportDataFor(runtimeData)}
	for i := range r.MREnclave {
		r.MREnclave[i] = byte(0xA0 + i%16)
		r.MRSigner[i] = byte(0x10 + i)
	}
	r.SetDebug(false) // the token must still say debuggable: the quote is simulated
	return r
}

func (p platform) quote(r *quote.Report) []byte { return quote.NewSim(r, p.priv) }

// newTestService starts a Service trusting p with a fixed clock; mutate may change the config.
func newTestService(t testing.TB, p platform, mutate func(*Config)) *Service {
	t.Helper()
	key, cert := testSigning(t)
	cfg := Config{
		Issuer:          testIssuer,
		SigningKey:      key,
		SigningCert:     cert,
		SimPlatformKeys: []ed25519.PublicKey{p.pub},
		Now:             func() time.Time { return testNow },
	}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

type response struct {
	status int
	header http.Header
	body   []byte
}

var requestIDPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// do sends one request through the handler and checks what every response must carry: the
// JSON content type, MAA's headers, and a JSON body.
func do(t testing.TB, h http.Handler, method, target, contentType string, body []byte, header map[string]string) response {
	t.Helper()
	req := httptest.NewRequest(method, target, bytes.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
	if got := res.header.Get("Content-Type"); got != "application/json; charset=utf-8" {
		t.Errorf("%s %s: Content-Type %q", method, target, got)
	}
	if id := res.header.Get("x-ms-request-id"); !requestIDPattern.MatchString(id) {
		t.Errorf("%s %s: x-ms-request-id %q is not a random UUID", method, target, id)
	}
	if v := res.header.Get("x-ms-maa-service-version"); v != ServiceVersion {
		t.Errorf("%s %s: x-ms-maa-service-version %q", method, target, v)
	}
	if method != http.MethodHead && !json.Valid(res.body) {
		t.Errorf("%s %s: body is not JSON: %q", method, target, res.body)
	}
	return res
}

func postJSON(t testing.TB, h http.Handler, target string, v any) response {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, h, http.MethodPost, target, "application/json", b, nil)
}

// errorOf decodes an MAA error body, failing the test when the shape is wrong.
func errorOf(t testing.TB, res response) maa.ErrorBody {
	t.Helper()
	var e maa.ErrorResponse
	dec := json.NewDecoder(bytes.NewReader(res.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("status %d body %s is not MAA's error shape: %v", res.status, res.body, err)
	}
	if e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("error body without code or message: %s", res.body)
	}
	return e.Error
}

// tokenOf decodes a {"token": ...} body.
func tokenOf(t testing.TB, res response) string {
	t.Helper()
	if res.status != http.StatusOK {
		t.Fatalf("status %d: %s", res.status, res.body)
	}
	var tr maa.TokenResponse
	if err := json.Unmarshal(res.body, &tr); err != nil || tr.Token == "" {
		t.Fatalf("body %s is not {\"token\": ...}: %v", res.body, err)
	}
	return tr.Token
}

// verifyToken checks the RS256 signature with crypto/rsa (independently of the service's
// signing code) and returns the raw header, and the claims as a generic map.
func verifyToken(t testing.TB, token string, pub *rsa.PublicKey) (header string, claims map[string]any) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		t.Fatalf("header: %v", err)
	}
	pb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("payload: %v", err)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatalf("signature: %v", err)
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
		t.Fatalf("RS256 signature does not verify: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(pb))
	dec.UseNumber()
	if err := dec.Decode(&claims); err != nil {
		t.Fatalf("claims: %v", err)
	}
	return string(hb), claims
}

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
