// Package service is the local attestation service: an MAA-compatible REST service for
// development, CI and air-gapped sites. It speaks Microsoft Azure Attestation's wire protocol
// (attest endpoints, token shape, /certs, OpenID discovery, policy management) so that MAA's
// clients and verifiers (EGo, Countersign's own) cannot tell it apart, but it verifies only
// Countersign's simulated quotes, signed by platform keys it is configured to trust: real SGX
// quotes need Intel's DCAP collateral, which an offline service cannot reach.
package service

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/countersign/countersign/attestation/maa"
	"github.com/countersign/countersign/attestation/maapolicy"
	"github.com/countersign/countersign/attestation/quote"
)

// Defaults of Config fields left zero.
const (
	DefaultTokenLifetime = 8 * time.Hour
	DefaultMaxBodyBytes  = 1 << 20
	// MinAdminTokenLength is the shortest admin token New accepts.
	MinAdminTokenLength = 16
	// ServiceVersion is sent in x-ms-maa-service-version.
	ServiceVersion = "countersign-local/1"
)

// Attestation types with their own policy, as in MAA's /policies/{type}.
const (
	TypeSgxEnclave  = "SgxEnclave"
	TypeOpenEnclave = "OpenEnclave"
)

// Config configures a Service.
type Config struct {
	// Issuer is the service's base URL, https://host[:port], with no path and no trailing
	// slash. It is the tokens' iss claim byte for byte and the base of jku and /certs.
	Issuer string
	// SigningKey signs tokens (RS256); at least 2048 bits.
	SigningKey *rsa.PrivateKey
	// SigningCert is SigningKey's certificate, published in /certs as x5c.
	SigningCert *x509.Certificate
	// TokenLifetime is exp - iat; 0 means 8 hours, as MAA.
	TokenLifetime time.Duration
	// SimPlatformKeys are the simulated platforms whose quotes are accepted.
	SimPlatformKeys []ed25519.PublicKey
	// PolicyText is the initial policy of every attestation type; "" means
	// maapolicy.DefaultSGX.
	PolicyText string
	// AdminToken authorizes PUT /policies/* (Authorization: Bearer <token>); "" disables
	// policy updates.
	AdminToken string
	// MaxBodyBytes bounds request bodies; 0 means 1 MiB.
	MaxBodyBytes int64
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Logger receives one structured line per attestation and per policy change; nil discards.
	Logger *slog.Logger
}

// Service is the local attestation service. Create it with New.
type Service struct {
	issuer      string
	key         *rsa.PrivateKey
	cert        *x509.Certificate
	kid         string
	jwsHeader   string // base64url of the fixed token header
	lifetime    time.Duration
	trusted     map[[32]byte]ed25519.PublicKey
	adminToken  [32]byte // SHA-256 of the admin token, compared in constant time
	adminOn     bool
	maxBody     int64
	now         func() time.Time
	log         *slog.Logger
	policies    map[string]*atomic.Pointer[storedPolicy]
	certsBody   []byte
	openIDBody  []byte
	defaultText string
}

// storedPolicy is a policy in force with the JWS it was set with.
type storedPolicy struct {
	policy *maapolicy.Policy
	jws    string // unsigned JWS over {"AttestationPolicy": b64url(text)}
}

// New validates cfg and builds a Service. Errors name the Config field at fault.
func New(cfg Config) (*Service, error) {
	if err := validateIssuer(cfg.Issuer); err != nil {
		return nil, err
	}
	if cfg.SigningKey == nil {
		return nil, errors.New("Config.SigningKey: required (an RSA private key of at least 2048 bits)")
	}
	if bits := cfg.SigningKey.N.BitLen(); bits < 2048 {
		return nil, fmt.Errorf("Config.SigningKey: RSA key of %d bits, expected at least 2048", bits)
	}
	if err := cfg.SigningKey.Validate(); err != nil {
		return nil, fmt.Errorf("Config.SigningKey: %w", err)
	}
	if cfg.SigningCert == nil {
		return nil, errors.New("Config.SigningCert: required (the signing key's X.509 certificate, published in /certs)")
	}
	if pub, ok := cfg.SigningCert.PublicKey.(*rsa.PublicKey); !ok || !pub.Equal(&cfg.SigningKey.PublicKey) {
		return nil, errors.New("Config.SigningCert: its public key is not Config.SigningKey's")
	}
	if cfg.TokenLifetime < 0 {
		return nil, fmt.Errorf("Config.TokenLifetime: %v, expected a positive duration (0 means %v)", cfg.TokenLifetime, DefaultTokenLifetime)
	}
	if cfg.TokenLifetime == 0 {
		cfg.TokenLifetime = DefaultTokenLifetime
	}
	if cfg.TokenLifetime < time.Second {
		return nil, fmt.Errorf("Config.TokenLifetime: %v, expected at least 1s", cfg.TokenLifetime)
	}
	if cfg.MaxBodyBytes < 0 {
		return nil, fmt.Errorf("Config.MaxBodyBytes: %d, expected a positive size (0 means %d)", cfg.MaxBodyBytes, DefaultMaxBodyBytes)
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.AdminToken != "" && len(cfg.AdminToken) < MinAdminTokenLength {
		return nil, fmt.Errorf("Config.AdminToken: %d characters, expected at least %d (or empty to disable policy updates)", len(cfg.AdminToken), MinAdminTokenLength)
	}
	trusted := make(map[[32]byte]ed25519.PublicKey, len(cfg.SimPlatformKeys))
	for i, k := range cfg.SimPlatformKeys {
		if len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("Config.SimPlatformKeys[%d]: %d bytes, expected an Ed25519 public key of %d", i, len(k), ed25519.PublicKeySize)
		}
		trusted[quote.PlatformKeyID(k)] = k
	}
	text := cfg.PolicyText
	if text == "" {
		text = maapolicy.DefaultSGX
	}
	pol, err := maapolicy.Parse(text)
	if err != nil {
		return nil, fmt.Errorf("Config.PolicyText: %w", err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}

	s := &Service{
		issuer:      cfg.Issuer,
		key:         cfg.SigningKey,
		cert:        cfg.SigningCert,
		kid:         KeyID(cfg.SigningCert),
		lifetime:    cfg.TokenLifetime,
		trusted:     trusted,
		adminOn:     cfg.AdminToken != "",
		adminToken:  sha256.Sum256([]byte(cfg.AdminToken)),
		maxBody:     cfg.MaxBodyBytes,
		now:         cfg.Now,
		log:         cfg.Logger,
		policies:    map[string]*atomic.Pointer[storedPolicy]{},
		defaultText: text,
	}
	for _, typ := range []string{TypeSgxEnclave, TypeOpenEnclave} {
		p := &atomic.Pointer[storedPolicy]{}
		p.Store(&storedPolicy{policy: pol, jws: UnsignedPolicyJWS(text)})
		s.policies[typ] = p
	}
	if s.jwsHeader, err = s.header(); err != nil {
		return nil, err
	}
	if s.certsBody, err = s.certs(); err != nil {
		return nil, err
	}
	if s.openIDBody, err = s.openIDConfig(); err != nil {
		return nil, err
	}
	if len(trusted) == 0 {
		s.log.Warn("no simulated platform keys configured: every attestation will be refused")
	}
	return s, nil
}

// validateIssuer accepts only https://host[:port] in canonical form, so that iss compares
// equal to what clients such as EGo derive from the same string with url.Parse.
func validateIssuer(issuer string) error {
	if issuer == "" {
		return errors.New("Config.Issuer: required, e.g. https://attestation.local:8443")
	}
	u, err := url.Parse(issuer)
	if err != nil {
		return fmt.Errorf("Config.Issuer: %q is not a URL: %w", issuer, err)
	}
	switch {
	case u.Scheme != "https":
		return fmt.Errorf("Config.Issuer: %q must use https (clients fetch the signing keys from {issuer}/certs over TLS)", issuer)
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("Config.Issuer: %q has no host", issuer)
	case u.User != nil:
		return fmt.Errorf("Config.Issuer: %q must not carry user information", issuer)
	case strings.HasSuffix(issuer, "/"):
		return fmt.Errorf("Config.Issuer: %q ends with a slash; MAA issuers have none (clients compare iss byte for byte): use %q", issuer, strings.TrimRight(issuer, "/"))
	case u.Path != "" || u.RawPath != "":
		return fmt.Errorf("Config.Issuer: %q has a path; expected https://host[:port] only", issuer)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(issuer, "#"):
		return fmt.Errorf("Config.Issuer: %q has a query or fragment; expected https://host[:port] only", issuer)
	case u.String() != issuer:
		return fmt.Errorf("Config.Issuer: %q is not in canonical form, expected %q", issuer, u.String())
	}
	return nil
}

// KeyID is the kid of a signing certificate: the unpadded base64url SHA-256 of its DER, so
// it is stable for as long as the certificate is.
func KeyID(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// KeyID returns the kid of the signing key.
func (s *Service) KeyID() string { return s.kid }

// Handler returns the HTTP handler serving every endpoint.
func (s *Service) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

func (s *Service) serveHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	h.Set("x-ms-request-id", newRequestID())
	h.Set("x-ms-maa-service-version", ServiceVersion)

	var methods map[string]http.HandlerFunc
	switch p := r.URL.Path; p {
	case maa.PathSgxEnclave:
		methods = map[string]http.HandlerFunc{http.MethodPost: func(w http.ResponseWriter, r *http.Request) { s.attest(w, r, TypeSgxEnclave) }}
	case maa.PathOpenEnclave:
		methods = map[string]http.HandlerFunc{http.MethodPost: func(w http.ResponseWriter, r *http.Request) { s.attest(w, r, TypeOpenEnclave) }}
	case maa.PathCerts:
		methods = map[string]http.HandlerFunc{http.MethodGet: s.serveStatic(s.certsBody), http.MethodHead: s.serveStatic(s.certsBody)}
	case maa.PathOpenIDConfig:
		methods = map[string]http.HandlerFunc{http.MethodGet: s.serveStatic(s.openIDBody), http.MethodHead: s.serveStatic(s.openIDBody)}
	case "/policies/" + TypeSgxEnclave, "/policies/" + TypeOpenEnclave:
		typ := strings.TrimPrefix(p, "/policies/")
		methods = map[string]http.HandlerFunc{
			http.MethodGet: func(w http.ResponseWriter, r *http.Request) { s.getPolicy(w, r, typ) },
			http.MethodPut: func(w http.ResponseWriter, r *http.Request) { s.putPolicy(w, r, typ) },
		}
	default:
		msg := fmt.Sprintf("no endpoint at %s: this service serves POST %s and %s, GET %s and %s, GET/PUT /policies/{SgxEnclave|OpenEnclave}",
			quoted(p), maa.PathSgxEnclave, maa.PathOpenEnclave, maa.PathCerts, maa.PathOpenIDConfig)
		if strings.HasPrefix(p, "/attest/") || strings.HasPrefix(p, "/policies/") {
			msg = fmt.Sprintf("attestation type %s is not supported by the local attestation service: expected SgxEnclave or OpenEnclave", quoted(p[strings.LastIndexByte(p, '/')+1:]))
		}
		writeError(w, http.StatusNotFound, maa.CodeNotFound, msg)
		return
	}
	hf, ok := methods[r.Method]
	if !ok {
		allowed := make([]string, 0, len(methods))
		for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut} {
			if _, ok := methods[m]; ok {
				allowed = append(allowed, m)
			}
		}
		h.Set("Allow", strings.Join(allowed, ", "))
		writeError(w, http.StatusMethodNotAllowed, maa.CodeMethodNotAllowed,
			fmt.Sprintf("method %s is not allowed on %s: expected %s", quoted(r.Method), r.URL.Path, strings.Join(allowed, " or ")))
		return
	}
	hf(w, r)
}

// quoted bounds and quotes client-supplied text echoed back in an error message.
func quoted(s string) string {
	if len(s) > 100 {
		s = s[:100] + "..."
	}
	return strconv.Quote(s)
}

func (s *Service) serveStatic(body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		// Public documents (the signing keys, the OpenID metadata): browsers verifying tokens
		// with WebCrypto fetch them from other origins (the healthcare demo's portal).
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = w.Write(body)
		}
	}
}

// apiError is an error with the HTTP status and MAA error code it maps to.
type apiError struct {
	status int
	code   string
	msg    string
	inner  *maa.InnerError
}

func badRequest(code, format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, code: code, msg: fmt.Sprintf(format, args...)}
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeAPIError(w, &apiError{status: status, code: code, msg: msg})
}

func writeAPIError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.status, maa.ErrorResponse{Error: maa.ErrorBody{Code: e.code, Message: e.msg, InnerError: e.inner}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"InternalServerError","message":"could not encode the response"}}`)
	}
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// marshal encodes JSON without HTML escaping, so URLs and messages read as sent.
func marshal(v any) ([]byte, error) {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return []byte(strings.TrimSuffix(b.String(), "\n")), nil
}

// checkAPIVersion requires an api-version query parameter the service knows.
func checkAPIVersion(r *http.Request) *apiError {
	q := r.URL.Query()
	v, ok := q["api-version"]
	if !ok || len(v) == 0 || v[0] == "" {
		return badRequest(maa.CodeInvalidParameter, "the api-version query parameter is required: expected %s or %s", maa.APIVersion2022, maa.APIVersion2020)
	}
	if len(v) > 1 {
		return badRequest(maa.CodeInvalidParameter, "api-version is given %d times: expected it once", len(v))
	}
	switch v[0] {
	case maa.APIVersion2022, maa.APIVersion2020:
		return nil
	}
	return badRequest(maa.CodeInvalidParameter, "api-version %s is not supported: expected %s or %s", quoted(v[0]), maa.APIVersion2022, maa.APIVersion2020)
}

// checkContentType requires one of the given media types.
func checkContentType(r *http.Request, allowed ...string) *apiError {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil {
		for _, a := range allowed {
			if strings.EqualFold(mt, a) {
				return nil
			}
		}
	}
	got := "a missing Content-Type"
	if ct != "" {
		got = "Content-Type " + quoted(ct)
	}
	return &apiError{status: http.StatusUnsupportedMediaType, code: maa.CodeUnsupportedMediaType,
		msg: fmt.Sprintf("%s is not supported: expected %s", got, strings.Join(allowed, " or "))}
}

// readBody reads the whole body up to the configured limit.
func (s *Service) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	if r.ContentLength > s.maxBody {
		return nil, &apiError{status: http.StatusRequestEntityTooLarge, code: maa.CodeRequestTooLarge,
			msg: fmt.Sprintf("request body of %d bytes is larger than the %d allowed", r.ContentLength, s.maxBody)}
	}
	body := http.MaxBytesReader(w, r.Body, s.maxBody)
	b, err := io.ReadAll(body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, &apiError{status: http.StatusRequestEntityTooLarge, code: maa.CodeRequestTooLarge,
				msg: fmt.Sprintf("request body is larger than the %d bytes allowed", s.maxBody)}
		}
		return nil, badRequest(maa.CodeBadRequest, "could not read the request body: %v", err)
	}
	return b, nil
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40 // UUID version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
