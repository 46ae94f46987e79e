// Package token verifies Microsoft Azure Attestation tokens strictly: compact JWS only, RS256
// only (from configuration, never from the header), keys only from the pinned {issuer}/certs,
// exact issuer, required and checked exp/nbf/iat, strictly typed claims, a size cap before any
// parsing. Keys are cached per issuer with single-flight, rate-limited refresh and a staleness
// bound past which verification fails closed; verified tokens are cached until they expire.
package token

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/attestation/maa"
	"github.com/countersign/countersign/internal/b64url"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jws/jwsbb"
	"github.com/valyala/fastjson"
)

// Defaults of Config.
const (
	DefaultClockSkew        = 60 * time.Second
	DefaultMaxStaleness     = 24 * time.Hour
	DefaultRefreshInterval  = time.Hour
	DefaultMinFetchInterval = 30 * time.Second
	DefaultFetchTimeout     = 10 * time.Second
	DefaultMaxTokenSize     = 64 << 10
	DefaultCacheSize        = 4096
	maxHeaderSize           = 4 << 10
)

// Algorithm is the only signature algorithm accepted; it is configuration, never read from a
// token's header.
var Algorithm = jwa.RS256()

// IssuerConfig is one trusted attestation service.
type IssuerConfig struct {
	// URL is the base URL; a token's iss must equal it byte for byte. Keys come only from
	// URL + "/certs".
	URL string
	// CAFile optionally names PEM roots for that TLS endpoint (instead of the system roots).
	CAFile string
	// HTTPClient overrides the client built from CAFile.
	HTTPClient *http.Client
}

// Config configures a Verifier. Zero durations and sizes take the defaults above.
type Config struct {
	Issuers          []IssuerConfig
	ClockSkew        time.Duration
	MaxStaleness     time.Duration // how long the last good key set may be used when /certs fails
	RefreshInterval  time.Duration // key sets older than this are refreshed in the background
	MinFetchInterval time.Duration // at most one /certs fetch per issuer per interval
	FetchTimeout     time.Duration
	MaxTokenSize     int
	CacheSize        int
	Now              func() time.Time
	Logger           *slog.Logger
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.ClockSkew, DefaultClockSkew)
	def(&c.MaxStaleness, DefaultMaxStaleness)
	def(&c.RefreshInterval, DefaultRefreshInterval)
	def(&c.MinFetchInterval, DefaultMinFetchInterval)
	def(&c.FetchTimeout, DefaultFetchTimeout)
	if c.MaxTokenSize == 0 {
		c.MaxTokenSize = DefaultMaxTokenSize
	}
	if c.CacheSize == 0 {
		c.CacheSize = DefaultCacheSize
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// ValidateIssuerURL checks that u can be an MAA base URL: https, a host, no path, query,
// fragment or trailing slash (MAA's iss has none, and it is compared byte for byte).
func ValidateIssuerURL(u string) error {
	p, err := url.Parse(u)
	if err != nil {
		return fmt.Errorf("issuer URL %q: %w", u, err)
	}
	switch {
	case p.Scheme != "https":
		return fmt.Errorf("issuer URL %q: scheme must be https", u)
	case p.Host == "":
		return fmt.Errorf("issuer URL %q: no host", u)
	case p.Path != "" || p.RawQuery != "" || p.Fragment != "" || strings.HasSuffix(u, "/"):
		return fmt.Errorf("issuer URL %q: expected https://host[:port] with no path or trailing slash", u)
	case p.User != nil:
		return fmt.Errorf("issuer URL %q: must not carry credentials", u)
	}
	return nil
}

// Verifier verifies tokens. It is safe for concurrent use.
type Verifier struct {
	cfg     Config
	issuers map[string]*issuer
	cache   *cache
}

// New builds a Verifier. It fetches nothing; call Prefetch to load key sets eagerly.
func New(cfg Config) (*Verifier, error) {
	cfg.setDefaults()
	if len(cfg.Issuers) == 0 {
		return nil, errors.New("token verifier: no trusted issuers configured")
	}
	if cfg.ClockSkew < 0 || cfg.ClockSkew > 10*time.Minute {
		return nil, fmt.Errorf("clock skew %s: expected between 0 and 10m", cfg.ClockSkew)
	}
	v := &Verifier{cfg: cfg, issuers: make(map[string]*issuer), cache: newCache(cfg.CacheSize)}
	for _, ic := range cfg.Issuers {
		if err := ValidateIssuerURL(ic.URL); err != nil {
			return nil, err
		}
		if _, dup := v.issuers[ic.URL]; dup {
			return nil, fmt.Errorf("issuer %q listed twice", ic.URL)
		}
		client := ic.HTTPClient
		if client == nil {
			var err error
			client, err = maa.NewHTTPClient(ic.CAFile, cfg.FetchTimeout)
			if err != nil {
				return nil, fmt.Errorf("issuer %q: %w", ic.URL, err)
			}
		}
		v.issuers[ic.URL] = &issuer{
			url:      ic.URL,
			certsURL: keySetURL(ic.URL),
			client:   client,
			cfg:      &v.cfg,
			log:      cfg.Logger.With("component", "jwks"),
		}
	}
	return v, nil
}

// Prefetch loads every issuer's key set and returns the errors of those that could not be
// fetched.
func (v *Verifier) Prefetch(ctx context.Context) error {
	var errs []error
	for _, is := range v.sortedIssuers() {
		is.refresh(ctx)
		if is.snap.Load() == nil {
			errs = append(errs, fmt.Errorf("fetch keys of %s: %w", is.url, is.err()))
		}
	}
	return errors.Join(errs...)
}

// Fetches returns how many key set fetches were started for an issuer (for tests and metrics).
func (v *Verifier) Fetches(issuerURL string) int64 {
	if is, ok := v.issuers[issuerURL]; ok {
		return is.fetches.Load()
	}
	return 0
}

func (v *Verifier) sortedIssuers() []*issuer {
	out := make([]*issuer, 0, len(v.issuers))
	for _, is := range v.issuers {
		out = append(out, is)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].url < out[j].url })
	return out
}

// Verified is a token that passed verification.
type Verified struct {
	Raw    string
	Claims *maa.Claims
	// Runtime is the enclave's runtime data from x-ms-runtime (or, when absent, from
	// x-ms-sgx-ehd); nil with RuntimeErr set when it is absent or not Countersign's format.
	Runtime    *maa.RuntimeData
	RuntimeErr error
	keys       []crypto.PublicKey

	digestOnce sync.Once
	digest     [32]byte
}

// Digest is the SHA-256 of the compact token, computed on first use (only chain code needs it).
func (t *Verified) Digest() [32]byte {
	t.digestOnce.Do(func() { t.digest = sha256.Sum256([]byte(t.Raw)) })
	return t.digest
}

// Expiry is the token's exp.
func (t *Verified) Expiry() time.Time { return t.Claims.Expiry.Time() }

// UnverifiedExpiry reads the exp claim of a compact token without verifying it: only for a
// token already verified (from the certificate of a completed handshake).
func UnverifiedExpiry(raw string) (time.Time, bool) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	b, err := b64url.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	c, err := maa.ParseClaims(b)
	if err != nil || c.Expiry == nil {
		return time.Time{}, false
	}
	return c.Expiry.Time(), true
}

// Binds checks that the token's runtime data names exactly pub: a token proves a key only then.
func (t *Verified) Binds(pub crypto.PublicKey) *attestation.Rejection {
	if t.Runtime == nil {
		return attestation.Rejectf(attestation.CodeRuntimeData, "the token carries no usable runtime data (x-ms-runtime): %v", t.RuntimeErr)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if want, ok := pub.(equaler); ok {
		for _, k := range t.keys {
			if want.Equal(k) {
				return nil
			}
		}
	}
	return attestation.Reject(attestation.CodeKeyNotBound, maa.ClaimRuntime+".keys",
		fmt.Sprintf("%d key(s), none of them the presented %T key", len(t.keys), pub),
		"the public key of the certificate or signature being checked")
}

// Verify verifies a compact token. A non-nil error is always an *attestation.Rejection.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Verified, error) {
	if len(raw) > v.cfg.MaxTokenSize {
		return nil, attestation.Reject(attestation.CodeTooLarge, "", "", fmt.Sprintf("a token of at most %d bytes, got %d", v.cfg.MaxTokenSize, len(raw)))
	}
	now := v.cfg.Now()
	if e := v.cache.get(raw); e != nil {
		if now.Before(e.exp.Add(v.cfg.ClockSkew)) && e.issuer.fresh(now) {
			return e.verified, nil
		}
		v.cache.remove(raw)
	}
	t, is, rej := v.verify(ctx, raw, now)
	if rej != nil {
		return nil, rej
	}
	v.cache.put(raw, &cacheEntry{verified: t, exp: t.Expiry(), issuer: is}, now, v.cfg.ClockSkew)
	return t, nil
}

// header is the part of the protected header the verifier reads. Anything else (jku, x5u,
// x5c, jwk, typ) is ignored: keys come only from the pinned key set.
type header struct {
	Alg  *string
	Kid  *string
	Crit []byte // raw JSON, when present
	B64  bool   // present
}

var (
	headerParsers fastjson.ParserPool
	payloadBufs   = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}
)

func parseHeader(b []byte) (header, error) {
	var h header
	p := headerParsers.Get()
	defer headerParsers.Put(p)
	v, err := p.ParseBytes(b)
	if err != nil {
		return h, fmt.Errorf("not JSON: %w", err)
	}
	o, err := v.Object()
	if err != nil {
		return h, fmt.Errorf("a JSON %s, expected an object", v.Type())
	}
	seen := map[string]bool{}
	o.Visit(func(k []byte, v *fastjson.Value) {
		key := string(k)
		if err != nil {
			return
		}
		if seen[key] {
			err = fmt.Errorf("member %q appears twice", key)
			return
		}
		seen[key] = true
		switch key {
		case "alg", "kid":
			if v.Type() != fastjson.TypeString {
				err = fmt.Errorf("%s is a JSON %s, expected a string", key, v.Type())
				return
			}
			s := string(v.GetStringBytes())
			if key == "alg" {
				h.Alg = &s
			} else {
				h.Kid = &s
			}
		case "crit":
			h.Crit = v.MarshalTo(nil)
		case "b64":
			h.B64 = true
		}
	})
	return h, err
}

func (v *Verifier) verify(ctx context.Context, raw string, now time.Time) (*Verified, *issuer, *attestation.Rejection) {
	malformed := func(format string, args ...any) (*Verified, *issuer, *attestation.Rejection) {
		return nil, nil, attestation.Rejectf(attestation.CodeMalformed, format, args...)
	}
	if strings.HasPrefix(strings.TrimSpace(raw), "{") {
		return malformed("JSON serialization is not accepted; expected compact serialization header.payload.signature")
	}
	if n := strings.Count(raw, "."); n != 2 {
		return malformed("%d parts separated by dots; a compact JWS has exactly 3", n+1)
	}
	h64, rest, _ := strings.Cut(raw, ".")
	p64, s64, _ := strings.Cut(rest, ".")
	if h64 == "" || p64 == "" || s64 == "" {
		return malformed("empty header, payload or signature part")
	}
	if len(h64) > maxHeaderSize {
		return malformed("protected header of %d bytes, at most %d accepted", len(h64), maxHeaderSize)
	}
	hb, err := b64url.DecodeString(h64)
	if err != nil {
		return malformed("protected header: %v", err)
	}
	h, err := parseHeader(hb)
	if err != nil {
		return malformed("protected header: %v", err)
	}
	if h.Alg == nil || *h.Alg != Algorithm.String() {
		seen := "absent"
		if h.Alg != nil {
			seen = quote(*h.Alg)
		}
		return nil, nil, attestation.Reject(attestation.CodeAlgorithm, "header.alg", seen, Algorithm.String()+" (fixed by configuration)")
	}
	if h.Crit != nil {
		return nil, nil, attestation.Reject(attestation.CodeCritUnsupported, "header.crit", string(h.Crit), "no critical extensions (none are understood)")
	}
	if h.B64 {
		return malformed("the b64 header parameter is not accepted")
	}
	if h.Kid == nil || *h.Kid == "" {
		return nil, nil, attestation.Reject(attestation.CodeKidMissing, "header.kid", "", "the kid of a key at the issuer's /certs")
	}
	// Decode the payload into a pooled buffer: ParseClaims copies out what it keeps.
	bufp := payloadBufs.Get().(*[]byte)
	defer payloadBufs.Put(bufp)
	if need := base64.RawURLEncoding.DecodedLen(len(p64)); cap(*bufp) < need {
		*bufp = make([]byte, need)
	}
	n, err := b64url.Decode((*bufp)[:cap(*bufp)], unsafe.Slice(unsafe.StringData(p64), len(p64)))
	if err != nil {
		return malformed("payload: %v", err)
	}
	claims, err := maa.ParseClaims((*bufp)[:n])
	if err != nil {
		var te *maa.ClaimTypeError
		if errors.As(err, &te) {
			return nil, nil, attestation.Reject(attestation.CodeClaimType, te.Claim, "a JSON "+te.Got, te.Want)
		}
		return nil, nil, attestation.Rejectf(attestation.CodeMalformed, "payload: %v", err)
	}
	is, ok := v.issuers[claims.Issuer]
	if !ok {
		return nil, nil, attestation.Reject(attestation.CodeIssuer, maa.ClaimIssuer, quote(claims.Issuer), "one of "+v.issuerList()+" (byte for byte)")
	}
	key, rej := is.key(ctx, *h.Kid)
	if rej != nil {
		return nil, nil, rej
	}
	sig, err := b64url.DecodeString(s64)
	if err != nil {
		return malformed("signature: %v", err)
	}
	// The signing input is read, never written: view the string's bytes without a copy.
	signingInput := unsafe.Slice(unsafe.StringData(raw), len(h64)+1+len(p64))
	if err := jwsbb.Verify(key, Algorithm.String(), signingInput, sig); err != nil {
		return nil, nil, attestation.Rejectf(attestation.CodeSignature, "the RS256 signature does not verify under kid %s of %s: %v", quote(*h.Kid), is.url, err)
	}
	if rej := checkTimes(claims, now, v.cfg.ClockSkew); rej != nil {
		return nil, nil, rej
	}
	t := &Verified{Raw: raw, Claims: claims}
	t.Runtime, t.RuntimeErr = claims.RuntimeData()
	if t.Runtime != nil {
		t.keys = t.Runtime.PublicKeys()
	}
	return t, is, nil
}

func checkTimes(c *maa.Claims, now time.Time, skew time.Duration) *attestation.Rejection {
	for _, x := range []struct {
		name string
		v    *maa.NumericDate
	}{{maa.ClaimExpiry, c.Expiry}, {maa.ClaimNotBefore, c.NotBefore}, {maa.ClaimIssuedAt, c.IssuedAt}} {
		if x.v == nil {
			return attestation.Reject(attestation.CodeClaimMissing, x.name, "", "a NumericDate")
		}
	}
	fmtT := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	if exp := c.Expiry.Time(); !now.Before(exp.Add(skew)) {
		return attestation.Reject(attestation.CodeExpired, maa.ClaimExpiry, fmtT(exp), fmt.Sprintf("later than now (%s) less the %s clock skew", fmtT(now), skew))
	}
	if nbf := c.NotBefore.Time(); now.Add(skew).Before(nbf) {
		return attestation.Reject(attestation.CodeNotYetValid, maa.ClaimNotBefore, fmtT(nbf), fmt.Sprintf("no later than now (%s) plus the %s clock skew", fmtT(now), skew))
	}
	if iat := c.IssuedAt.Time(); now.Add(skew).Before(iat) {
		return attestation.Reject(attestation.CodeIssuedInFuture, maa.ClaimIssuedAt, fmtT(iat), fmt.Sprintf("no later than now (%s) plus the %s clock skew", fmtT(now), skew))
	}
	return nil
}

func (v *Verifier) issuerList() string {
	var names []string
	for _, is := range v.sortedIssuers() {
		names = append(names, quote(is.url))
	}
	return "[" + strings.Join(names, ", ") + "]"
}
