// Package identity is the proxy's attested identity: a TLS key made in the enclave, an MAA
// token whose runtime data names it, and a certificate carrying the token. A background loop
// renews them before expiry; the pair swaps atomically and a failed renewal keeps the old one.
package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/countersign/countersign/attestation/attester"
	"github.com/countersign/countersign/attestation/maa"
	"github.com/countersign/countersign/attestation/token"
	"github.com/countersign/countersign/proxy/attestedtls"
)

// TokenIssuer turns a quote and the runtime data it commits to into a token; *maa.Client is one.
type TokenIssuer interface {
	Attest(ctx context.Context, quote, runtimeData []byte, dataType string) (string, error)
}

// Current is one generation of the identity.
type Current struct {
	Key    *ecdsa.PrivateKey
	JWK    maa.JWK
	Token  *token.Verified
	Cert   tls.Certificate // Leaf set
	Expiry time.Time
	Loaded time.Time
}

// Config configures a Source.
type Config struct {
	Attester attester.Attester
	Issuer   TokenIssuer
	Checker  attestedtls.Checker
	// Identity is the policy identity this proxy's own token must satisfy.
	Identity string
	Claimed  map[string]string
	// RefreshAt is the fraction of the lifetime after which the token is renewed; Jitter a
	// random fraction of the lifetime added or removed.
	RefreshAt, Jitter      float64
	MinBackoff, MaxBackoff time.Duration
	AttestTimeout          time.Duration
	Now                    func() time.Time
	Logger                 *slog.Logger
	// OnRefresh, if set, is told of every attempt's outcome (metrics).
	OnRefresh func(err error)
}

// Source holds the current identity.
type Source struct {
	cfg Config
	cur atomic.Pointer[Current]
}

// New returns a Source with no identity loaded yet; call Refresh or Run.
func New(cfg Config) (*Source, error) {
	if cfg.Attester == nil || cfg.Issuer == nil || cfg.Checker == nil {
		return nil, errors.New("identity: Attester, Issuer and Checker are required")
	}
	if cfg.Identity == "" {
		return nil, errors.New("identity: Identity is required")
	}
	if cfg.RefreshAt <= 0 || cfg.RefreshAt >= 1 {
		cfg.RefreshAt = 0.5
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = cfg.MinBackoff
	}
	if cfg.AttestTimeout <= 0 {
		cfg.AttestTimeout = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Source{cfg: cfg}, nil
}

// Current returns the identity if one is loaded and not expired, else nil.
func (s *Source) Current() *Current {
	c := s.cur.Load()
	if c == nil || !s.cfg.Now().Before(c.Expiry) {
		return nil
	}
	return c
}

// Ready reports whether a valid, unexpired token is loaded.
func (s *Source) Ready() bool { return s.Current() != nil }

// ErrNoIdentity is returned when no valid identity is loaded: handshakes then fail closed.
var ErrNoIdentity = errors.New("no valid attested identity loaded (token missing or expired)")

// Certificate implements attestedtls.CertSource.
func (s *Source) Certificate() (*tls.Certificate, error) {
	c := s.Current()
	if c == nil {
		return nil, ErrNoIdentity
	}
	return &c.Cert, nil
}

// Refresh makes a new key, gets a token for it, checks the token against this proxy's own
// identity, and swaps it in. On error the old identity stays.
func (s *Source) Refresh(ctx context.Context) error {
	err := s.refresh(ctx)
	if s.cfg.OnRefresh != nil {
		s.cfg.OnRefresh(err)
	}
	return err
}

func (s *Source) refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.AttestTimeout)
	defer cancel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	jwk, err := maa.NewJWK(&key.PublicKey, "tls")
	if err != nil {
		return err
	}
	rd := maa.RuntimeData{Keys: []maa.JWK{jwk}, Claimed: s.cfg.Claimed}
	rdb, err := rd.Marshal()
	if err != nil {
		return err
	}
	q, err := s.cfg.Attester.Quote(ctx, rdb)
	if err != nil {
		return fmt.Errorf("quote: %w", err)
	}
	raw, err := s.cfg.Issuer.Attest(ctx, q, rdb, maa.DataTypeJSON)
	if err != nil {
		return fmt.Errorf("attest: %w", err)
	}
	d, t := s.cfg.Checker.Check(ctx, raw, []string{s.cfg.Identity}, &key.PublicKey)
	if !d.Allowed() {
		return fmt.Errorf("own token does not satisfy identity %q: %w", s.cfg.Identity, d.Rejection)
	}
	now := s.cfg.Now()
	der, err := attestedtls.NewCertificate(key, raw, "countersign "+s.cfg.Identity, now, t.Expiry())
	if err != nil {
		return fmt.Errorf("certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	c := &Current{
		Key:    key,
		JWK:    jwk,
		Token:  t,
		Expiry: t.Expiry(),
		Loaded: now,
		Cert:   tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
	}
	s.cur.Store(c)
	s.cfg.Logger.Info("attested identity loaded", "identity", s.cfg.Identity, "expires", c.Expiry.UTC().Format(time.RFC3339))
	return nil
}

// NextRefresh is when the identity c should be renewed: RefreshAt of its lifetime (from iat)
// plus or minus Jitter.
func (s *Source) NextRefresh(c *Current) time.Time {
	iat := c.Token.Claims.IssuedAt.Time()
	life := c.Expiry.Sub(iat)
	if life <= 0 {
		return s.cfg.Now()
	}
	f := s.cfg.RefreshAt + s.cfg.Jitter*(2*mrand.Float64()-1)
	return iat.Add(time.Duration(float64(life) * f))
}

// Run refreshes until ctx ends: immediately, then at NextRefresh, retrying failures with
// exponential backoff (never later than shortly before expiry while a token is still valid).
func (s *Source) Run(ctx context.Context) {
	backoff := s.cfg.MinBackoff
	for {
		var wait time.Duration
		if err := s.Refresh(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.cfg.Logger.Warn("attested identity refresh failed; keeping the current one", "err", err, "retry_in", backoff, "ready", s.Ready())
			wait = backoff
			backoff = min(backoff*2, s.cfg.MaxBackoff)
		} else {
			backoff = s.cfg.MinBackoff
			wait = s.NextRefresh(s.cur.Load()).Sub(s.cfg.Now())
		}
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
