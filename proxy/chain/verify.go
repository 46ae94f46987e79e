package chain

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"time"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/proxy/attestedtls"
)

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
