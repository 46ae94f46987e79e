package token

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/internal/testmaa"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newVerifier(t testing.TB, is *testmaa.Issuer, clk *clock, tweak func(*Config)) *Verifier {
	t.Helper()
	cfg := Config{
		Issuers:          []IssuerConfig{{URL: is.URL, CAFile: is.CAFile}},
		Now:              clk.now,
		MinFetchInterval: time.Second,
		RefreshInterval:  time.Hour,
		MaxStaleness:     24 * time.Hour,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func code(err error) attestation.Code {
	var r *attestation.Rejection
	if errors.As(err, &r) {
		return r.Code
	}
	return ""
}

// TestKeySetFaults: /certs down or returning garbage keeps verification going with the last
// good key set until maxStaleness, then fails closed; it recovers when /certs returns.
func TestKeySetFaults(t *testing.T) {
	for _, mode := range []struct {
		name string
		m    testmaa.CertsMode
	}{{"down", testmaa.CertsDown}, {"garbage", testmaa.CertsGarbage}} {
		t.Run(mode.name, func(t *testing.T) {
			is := testmaa.New(t)
			clk := &clock{t: time.Now()}
			v := newVerifier(t, is, clk, func(c *Config) { c.MaxStaleness = 12 * time.Hour })
			ctx := context.Background()
			long := func() string { // a token valid for 48 h from the current fake time
				c := is.Claims(clk.now())
				c["exp"] = clk.now().Add(48 * time.Hour).Unix()
				return is.Sign(is.Header(), c)
			}
			cached := long()
			if _, err := v.Verify(ctx, cached); err != nil {
				t.Fatal(err)
			}
			is.SetCertsMode(mode.m)

			// 11 h later: keys are past the refresh interval, the refresh fails, the last
			// good set still verifies new tokens and cached ones.
			clk.add(11 * time.Hour)
			if _, err := v.Verify(ctx, long()); err != nil {
				t.Fatalf("within maxStaleness with /certs %s: %v", mode.name, err)
			}
			if _, err := v.Verify(ctx, cached); err != nil {
				t.Fatalf("cached token within maxStaleness: %v", err)
			}
			// A token signed with an unknown kid triggers a fetch, which fails: the good
			// set is kept (not replaced by garbage).
			clk.add(2 * time.Second)
			if _, err := v.Verify(ctx, is.Sign(map[string]any{"alg": "RS256", "kid": "new"}, is.Claims(clk.now()))); code(err) != attestation.CodeKidUnknown {
				t.Fatalf("unknown kid while /certs is %s: %v", mode.name, err)
			}
			if _, err := v.Verify(ctx, long()); err != nil {
				t.Fatalf("the good key set was lost after a failed fetch: %v", err)
			}

			// Past maxStaleness: fail closed, cached tokens included.
			clk.add(2 * time.Hour)
			for name, tok := range map[string]string{"new": long(), "cached": cached} {
				if _, err := v.Verify(ctx, tok); code(err) != attestation.CodeKeysStale {
					t.Fatalf("%s token past maxStaleness: got %v, want %s", name, err, attestation.CodeKeysStale)
				}
			}

			// /certs comes back: verification recovers.
			is.SetCertsMode(testmaa.CertsOK)
			clk.add(2 * time.Second)
			if _, err := v.Verify(ctx, cached); err != nil {
				t.Fatalf("after /certs recovered: %v", err)
			}
		})
	}
}

func TestNoKeysEverFetched(t *testing.T) {
	is := testmaa.New(t)
	is.SetCertsMode(testmaa.CertsDown)
	clk := &clock{t: time.Now()}
	v := newVerifier(t, is, clk, nil)
	if err := v.Prefetch(context.Background()); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("Prefetch with /certs down: %v", err)
	}
	clk.add(2 * time.Second)
	_, err := v.Verify(context.Background(), is.Sign(is.Header(), is.Claims(clk.now())))
	if code(err) != attestation.CodeKeysUnavailable {
		t.Fatalf("got %v, want %s", err, attestation.CodeKeysUnavailable)
	}
}

func TestCacheUntilExpiry(t *testing.T) {
	is := testmaa.New(t)
	clk := &clock{t: time.Now()}
	v := newVerifier(t, is, clk, func(c *Config) { c.ClockSkew = time.Second })
	c := is.Claims(clk.now())
	c["exp"] = clk.now().Add(time.Minute).Unix()
	tok := is.Sign(is.Header(), c)
	a, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	b, err := v.Verify(context.Background(), tok)
	if err != nil || a != b {
		t.Fatalf("second verify did not hit the cache: %v", err)
	}
	if a.Digest() != sha256.Sum256([]byte(tok)) {
		t.Fatal("digest is not SHA-256 of the token")
	}
	clk.add(2 * time.Minute)
	if _, err := v.Verify(context.Background(), tok); code(err) != attestation.CodeExpired {
		t.Fatalf("cached token after exp: %v", err)
	}
	if v.cache.len() != 0 {
		t.Fatal("expired token stayed in the cache")
	}
}

func TestCacheBounded(t *testing.T) {
	is := testmaa.New(t)
	clk := &clock{t: time.Now()}
	v := newVerifier(t, is, clk, func(c *Config) { c.CacheSize = 8 })
	for i := 0; i < 50; i++ {
		c := is.Claims(clk.now())
		c["jti"] = strings.Repeat("a", i+1)
		if _, err := v.Verify(context.Background(), is.Sign(is.Header(), c)); err != nil {
			t.Fatal(err)
		}
	}
	if n := v.cache.len(); n > 8 {
		t.Fatalf("cache holds %d entries, bound is 8", n)
	}
}

func TestBindsEHDWhenRuntimeAbsent(t *testing.T) {
	is := testmaa.New(t)
	clk := &clock{t: time.Now()}
	v := newVerifier(t, is, clk, nil)
	other := is.OtherKey(t)
	c := is.Claims(clk.now())
	c["x-ms-sgx-ehd"] = base64.RawURLEncoding.EncodeToString([]byte(`{"keys":[` + rsaJWK(&other.PublicKey) + `]}`))
	tok, err := v.Verify(context.Background(), is.Sign(is.Header(), c))
	if err != nil {
		t.Fatal(err)
	}
	if rej := tok.Binds(&other.PublicKey); rej != nil {
		t.Fatalf("key in x-ms-sgx-ehd not recognised: %v", rej)
	}
	if rej := tok.Binds(&is.Key.PublicKey); rej == nil || rej.Code != attestation.CodeKeyNotBound {
		t.Fatalf("another key accepted as bound: %v", rej)
	}
}

func rsaJWK(k *rsa.PublicKey) string {
	e := base64.RawURLEncoding.EncodeToString([]byte{1, 0, 1})
	return `{"kty":"RSA","n":"` + base64.RawURLEncoding.EncodeToString(k.N.Bytes()) + `","e":"` + e + `"}`
}

func TestNewRejectsBadIssuers(t *testing.T) {
	for _, u := range []string{"http://a.example", "https://a.example/", "https://a.example/path", "https://", "ftp://x", "https://u:p@a.example"} {
		if _, err := New(Config{Issuers: []IssuerConfig{{URL: u}}}); err == nil {
			t.Errorf("issuer %q accepted", u)
		}
	}
	if _, err := New(Config{}); err == nil {
		t.Error("no issuers accepted")
	}
}

func TestParseKeySet(t *testing.T) {
	is := testmaa.New(t)
	good := `{"keys":[{"kty":"RSA","kid":"k","x5c":["` + base64.StdEncoding.EncodeToString(is.Cert.Raw) + `"]}]}`
	keys, err := ParseKeySet([]byte(good))
	if err != nil || !keys["k"].Equal(&is.Key.PublicKey) {
		t.Fatalf("good key set: %v", err)
	}
	for name, doc := range map[string]string{
		"not json":       `<html>`,
		"no keys":        `{"keys":[]}`,
		"bad x5c":        `{"keys":[{"kty":"RSA","kid":"k","x5c":["!!"]}]}`,
		"no kid":         `{"keys":[{"kty":"RSA","x5c":["` + base64.StdEncoding.EncodeToString(is.Cert.Raw) + `"]}]}`,
		"short modulus":  `{"keys":[{"kty":"RSA","kid":"k","n":"AQAB","e":"AQAB"}]}`,
		"only EC keys":   `{"keys":[{"kty":"EC","kid":"k","crv":"P-256"}]}`,
		"duplicate kid":  `{"keys":[` + strings.TrimPrefix(strings.TrimSuffix(good, "]}"), `{"keys":[`) + `,` + strings.TrimPrefix(strings.TrimSuffix(good, "]}"), `{"keys":[`) + `]}`,
		"n/e mismatch":   `{"keys":[{"kty":"RSA","kid":"k","n":"` + base64.RawURLEncoding.EncodeToString(is.OtherKey(t).N.Bytes()) + `","e":"AQAB","x5c":["` + base64.StdEncoding.EncodeToString(is.Cert.Raw) + `"]}]}`,
		"wrong key type": `{"keys":"x"}`,
	} {
		if _, err := ParseKeySet([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

var _ crypto.PublicKey = (*rsa.PublicKey)(nil)
