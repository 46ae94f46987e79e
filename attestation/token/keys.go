package token

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/attestation/maa"
)

// Bounds on a key set document.
const (
	maxKeySetBytes = 1 << 20
	maxKeys        = 64
)

// keySnapshot is one successfully fetched key set.
type keySnapshot struct {
	keys    map[string]*rsa.PublicKey
	fetched time.Time
}

// issuer is one trusted attestation service: its pinned base URL and a cache of the keys at
// {base}/certs. Fetches are single-flight and rate limited; a failed or garbage fetch keeps the
// last good set.
type issuer struct {
	url      string
	certsURL string
	client   *http.Client
	cfg      *Config
	log      *slog.Logger

	snap atomic.Pointer[keySnapshot]

	mu          sync.Mutex
	inflight    chan struct{} // closed when the fetch under way ends
	lastAttempt time.Time
	lastErr     error
	fetches     atomic.Int64 // number of fetches started, for tests and metrics
}

// fresh reports whether the key set was fetched within the staleness bound.
func (is *issuer) fresh(now time.Time) bool {
	s := is.snap.Load()
	return s != nil && now.Sub(s.fetched) <= is.cfg.MaxStaleness
}

// key returns the public key for kid, fetching the key set when needed. It never makes more
// than one fetch per MinFetchInterval, whatever the number of unknown kids presented.
func (is *issuer) key(ctx context.Context, kid string) (*rsa.PublicKey, *attestation.Rejection) {
	now := is.cfg.Now()
	s := is.snap.Load()
	if s != nil && now.Sub(s.fetched) <= is.cfg.MaxStaleness {
		if k, ok := s.keys[kid]; ok {
			if now.Sub(s.fetched) > is.cfg.RefreshInterval {
				go is.refresh(context.WithoutCancel(ctx)) // background: never on the request path
			}
			return k, nil
		}
	}
	// Unknown kid, no key set yet, or a stale one: fetch now (single-flight, rate limited).
	is.refresh(ctx)
	s = is.snap.Load()
	if s == nil {
		return nil, attestation.Rejectf(attestation.CodeKeysUnavailable,
			"no key set from %s could be fetched yet: %v", is.certsURL, is.err())
	}
	if age := now.Sub(s.fetched); age > is.cfg.MaxStaleness {
		return nil, attestation.Rejectf(attestation.CodeKeysStale,
			"the last good key set from %s is %s old, more than maxStaleness %s (last fetch error: %v)",
			is.certsURL, age.Round(time.Second), is.cfg.MaxStaleness, is.err())
	}
	k, ok := s.keys[kid]
	if !ok {
		return nil, attestation.Reject(attestation.CodeKidUnknown, "header.kid", quote(kid), "a kid published at "+is.certsURL)
	}
	return k, nil
}

func (is *issuer) err() error {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.lastErr
}

// refresh fetches the key set unless a fetch is under way (then it waits for that one) or one
// started less than MinFetchInterval ago.
func (is *issuer) refresh(ctx context.Context) {
	is.mu.Lock()
	if ch := is.inflight; ch != nil {
		is.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		}
		return
	}
	now := is.cfg.Now()
	if !is.lastAttempt.IsZero() && now.Sub(is.lastAttempt) < is.cfg.MinFetchInterval {
		is.mu.Unlock()
		return
	}
	ch := make(chan struct{})
	is.inflight = ch
	is.lastAttempt = now
	is.mu.Unlock()

	// The fetch is shared by every waiter: it runs under its own timeout, not the caller's.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), is.cfg.FetchTimeout)
	keys, err := is.fetch(fctx)
	cancel()

	is.mu.Lock()
	if err != nil {
		is.lastErr = err
		is.log.Warn("attestation service key fetch failed; keeping the last good key set",
			"issuer", is.url, "error", err)
	} else {
		is.lastErr = nil
		is.snap.Store(&keySnapshot{keys: keys, fetched: is.cfg.Now()})
	}
	is.inflight = nil
	close(ch)
	is.mu.Unlock()
}

func (is *issuer) fetch(ctx context.Context) (map[string]*rsa.PublicKey, error) {
	is.fetches.Add(1)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, is.certsURL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := is.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %s", is.certsURL, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxKeySetBytes+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", is.certsURL, err)
	}
	if len(body) > maxKeySetBytes {
		return nil, fmt.Errorf("GET %s: key set larger than %d bytes", is.certsURL, maxKeySetBytes)
	}
	return ParseKeySet(body)
}

// keySetDoc is the JWKS document MAA serves at /certs.
type keySetDoc struct {
	Keys []struct {
		Kty string   `json:"kty"`
		Kid string   `json:"kid"`
		Use string   `json:"use"`
		Alg string   `json:"alg"`
		N   string   `json:"n"`
		E   string   `json:"e"`
		X5c []string `json:"x5c"`
	} `json:"keys"`
}

// ParseKeySet parses a JWKS document as MAA serves it: RSA keys by kid, each given by an x5c
// certificate chain (standard base64 DER; the first certificate holds the key), by n and e, or
// both (then they must agree). Non-RSA keys and keys with use other than "sig" are skipped. A
// document with no usable key is an error, so a garbage answer never replaces a good set.
func ParseKeySet(b []byte) (map[string]*rsa.PublicKey, error) {
	var doc keySetDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("key set is not a JWKS document: %w", err)
	}
	if len(doc.Keys) > maxKeys {
		return nil, fmt.Errorf("key set has %d keys, at most %d accepted", len(doc.Keys), maxKeys)
	}
	keys := make(map[string]*rsa.PublicKey, len(doc.Keys))
	var skipped []error
	for i, k := range doc.Keys {
		if k.Kty != "RSA" || (k.Use != "" && k.Use != "sig") || (k.Alg != "" && k.Alg != "RS256") {
			continue
		}
		if k.Kid == "" {
			skipped = append(skipped, fmt.Errorf("keys[%d]: no kid", i))
			continue
		}
		pub, err := rsaKey(k.N, k.E, k.X5c)
		if err != nil {
			skipped = append(skipped, fmt.Errorf("keys[%d] (kid %q): %w", i, k.Kid, err))
			continue
		}
		if _, dup := keys[k.Kid]; dup {
			return nil, fmt.Errorf("key set names kid %q twice", k.Kid)
		}
		keys[k.Kid] = pub
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("key set has no usable RSA signing key: %w", errors.Join(skipped...))
	}
	return keys, nil
}

func rsaKey(n, e string, x5c []string) (*rsa.PublicKey, error) {
	var fromCert, fromNE *rsa.PublicKey
	if len(x5c) > 0 {
		der, err := base64.StdEncoding.DecodeString(x5c[0])
		if err != nil {
			return nil, fmt.Errorf("x5c[0] is not standard base64: %w", err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("x5c[0]: %w", err)
		}
		k, ok := cert.PublicKey.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("x5c[0] holds a %T key, expected RSA", cert.PublicKey)
		}
		fromCert = k
	}
	if n != "" || e != "" {
		nb, err1 := base64.RawURLEncoding.DecodeString(n)
		eb, err2 := base64.RawURLEncoding.DecodeString(e)
		if err1 != nil || err2 != nil || len(nb) == 0 || len(eb) == 0 || len(eb) > 4 {
			return nil, errors.New("n and e must be unpadded base64url integers")
		}
		fromNE = &rsa.PublicKey{N: new(big.Int).SetBytes(nb), E: int(new(big.Int).SetBytes(eb).Int64())}
	}
	k := fromCert
	switch {
	case fromCert == nil && fromNE == nil:
		return nil, errors.New("neither x5c nor n/e given")
	case fromCert == nil:
		k = fromNE
	case fromNE != nil && !fromCert.Equal(fromNE):
		return nil, errors.New("n/e do not match the x5c certificate's key")
	}
	if bits := k.N.BitLen(); bits < 2048 || bits > 8192 {
		return nil, fmt.Errorf("RSA modulus of %d bits, expected 2048 to 8192", bits)
	}
	if k.E < 3 || k.E%2 == 0 {
		return nil, fmt.Errorf("RSA exponent %d is not an odd number of at least 3", k.E)
	}
	return k, nil
}

// keySetURL returns {base}/certs.
func keySetURL(base string) string { return base + maa.PathCerts }

func quote(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return fmt.Sprintf("%q", s)
}
