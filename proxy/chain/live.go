package chain

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"sync"
	"time"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/proxy/attestedtls"
)

// TTLSet remembers keys until they expire, up to a bound. Expiry is kept as Unix nanoseconds
// (8 bytes, not a 24-byte time.Time): the replay set holds every request of the last two
// windows, so its per-entry size is the proxy's memory at a high request rate.
type TTLSet[K comparable, V any] struct {
	mu  sync.Mutex
	m   map[K]ttlItem[V]
	max int
}

// sweepStep is how many entries each insertion examines for expiry.
const sweepStep = 4

type ttlItem[V any] struct {
	v   V
	exp int64 // Unix nanoseconds
}

// NewTTLSet returns a set holding at most max live keys.
func NewTTLSet[K comparable, V any](max int) *TTLSet[K, V] {
	return &TTLSet[K, V]{m: map[K]ttlItem[V]{}, max: max}
}

// Add stores k until exp. It reports false when k is already present (and unexpired) or the
// set is full of unexpired keys.
func (s *TTLSet[K, V]) Add(k K, v V, exp, now time.Time) (added, full bool) {
	n := now.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	if it, ok := s.m[k]; ok && n < it.exp {
		return false, false
	}
	if len(s.m) >= s.max {
		// Full: one whole sweep, then refuse if it freed nothing.
		for key, it := range s.m {
			if n >= it.exp {
				delete(s.m, key)
			}
		}
		if len(s.m) >= s.max {
			return false, true
		}
	} else {
		// Incremental: look at sweepStep entries per insertion (a map's iteration starts at
		// a random place), instead of sweeping the whole set under the lock once a second,
		// which at 10 000 requests/s would stall a request for every entry of two windows.
		// In a steady state at most 1/sweepStep of the entries held are expired ones.
		i := 0
		for key, it := range s.m {
			if n >= it.exp {
				delete(s.m, key)
			}
			if i++; i == sweepStep {
				break
			}
		}
	}
	s.m[k] = ttlItem[V]{v: v, exp: exp.UnixNano()}
	return true, false
}

// Remove forgets k.
func (s *TTLSet[K, V]) Remove(k K) {
	s.mu.Lock()
	delete(s.m, k)
	s.mu.Unlock()
}

// Len is the number of keys held (expired ones not yet swept included).
func (s *TTLSet[K, V]) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// Get returns the value stored under k if unexpired.
func (s *TTLSet[K, V]) Get(k K, now time.Time) (V, bool) {
	n := now.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	it, ok := s.m[k]
	if !ok || n >= it.exp {
		var zero V
		return zero, false
	}
	return it.v, true
}

// Live verifies chains on arriving requests.
type Live struct {
	Checker Checker
	Limits  Limits
	// Window bounds the last entry's age and is how long its digest is remembered against replay.
	Window time.Duration
	// Replay holds the SHA-256 of every last entry accepted (raw bytes: no string per entry).
	Replay *TTLSet[[32]byte, struct{}]
}

// Verify checks the chain headers of a request that arrived from peer with request digest
// req. chainHdr and tokensHdr are all values of the two headers.
func (l *Live) Verify(ctx context.Context, chainHdr, tokensHdr []string, peer *attestedtls.Peer, req [32]byte, identities []string, now time.Time) (*Chain, error) {
	if len(chainHdr) == 0 {
		return nil, attestation.Rejectf(CodeChainMissing, "the request from peer %s carries no %s header", peer.Identity, HeaderChain)
	}
	if len(chainHdr) > 1 || len(tokensHdr) > 1 {
		return nil, attestation.Rejectf(CodeChainMalformed, "%s and %s must each appear at most once", HeaderChain, HeaderTokens)
	}
	tok := ""
	if len(tokensHdr) == 1 {
		tok = tokensHdr[0]
	}
	if n := len(chainHdr[0]) + len(tok); n > l.Limits.MaxBytes {
		return nil, attestation.Reject(CodeChainTooLarge, "", fmt.Sprintf("%d bytes", n), fmt.Sprintf("at most %d", l.Limits.MaxBytes))
	}
	encoded, err := Split(chainHdr[0], l.Limits.MaxHops)
	if err != nil {
		return nil, err
	}
	tokens, err := SplitTokens(tok)
	if err != nil {
		return nil, err
	}
	peerDigest := TokenDigest(peer.Token.Raw)
	if _, dup := tokens[peerDigest]; dup {
		return nil, attestation.Rejectf(CodeChainMalformed, "%s repeats the peer's own token", HeaderTokens)
	}
	tokens[peerDigest] = peer.Token.Raw
	ch, err := VerifyEntries(ctx, l.Checker, encoded, tokens, identities, now, l.Limits)
	if err != nil {
		return nil, err
	}
	last := ch.Hops[len(ch.Hops)-1]
	if last.Entry.Token != peerDigest {
		return nil, attestation.Reject(CodeChainLastHop, "last entry tok", last.Entry.Token, "the connected peer's token ("+peerDigest+")")
	}
	// The last entry must be signed with the connected peer's certificate key. VerifyEntries
	// has verified its signature with a key its token names; when that key is the
	// certificate's, the signature is not verified a second time.
	pk, err := attestedtls.CheckKey(peer.Key)
	if err != nil || (!l.Limits.ChannelLast && !signedWith(last, pk)) {
		return nil, attestation.Rejectf(CodeChainLastHop, "the last entry is not signed with the connected peer's certificate key")
	}
	if last.Entry.Req != b64.EncodeToString(req[:]) {
		return nil, attestation.Reject(CodeChainRequest, "last entry req", last.Entry.Req, "the digest of this request ("+b64.EncodeToString(req[:])+")")
	}
	ts := time.UnixMilli(last.Entry.TS)
	if ts.Before(now.Add(-l.Window)) || ts.After(now.Add(l.Window)) {
		return nil, attestation.Reject(CodeChainStale, "last entry ts", ts.UTC().Format(time.RFC3339Nano), "within "+l.Window.String()+" of now")
	}
	added, full := l.Replay.Add(ch.TailSigned(), struct{}{}, ts.Add(2*l.Window), now)
	if full {
		return nil, attestation.Rejectf(CodeReplayCacheFull, "too many requests in the replay window")
	}
	if !added {
		return nil, attestation.Rejectf(CodeChainReplay, "the last entry was already used within the replay window")
	}
	return ch, nil
}

// PeerKey returns the ECDSA key of a peer.
func PeerKey(p *attestedtls.Peer) (*ecdsa.PublicKey, error) { return attestedtls.CheckKey(p.Key) }

// signedWith reports whether h's entry is signed with pk.
func signedWith(h Hop, pk *ecdsa.PublicKey) bool {
	if h.signer != nil && h.signer.Equal(pk) {
		return true
	}
	_, st, err := parseEntry(h.Encoded)
	return err == nil && st.verify(pk, ctxEntry)
}
