// Package chain is the countersigned hop chain of docs/protocol.md: each attested HTTP hop
// appends an entry signed by its enclave key (ECDSA P-256, the key its token names) over the
// previous entry's digest, a digest of the request it sends and a timestamp; the answering hop
// countersigns the request entry and a digest of its response. This package parses, signs and
// verifies; it knows nothing about HTTP servers.
package chain

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/attestation/token"
	"github.com/countersign/countersign/internal/b64url"
	"github.com/countersign/countersign/internal/strictdecode"
	"github.com/countersign/countersign/proxy/attestedtls"
)

// Header names.
const (
	HeaderChain      = "Countersign-Chain"
	HeaderTokens     = "Countersign-Chain-Tokens"
	HeaderVerified   = "Countersign-Verified"
	HeaderCountersig = "Countersign-Countersignature"
	HeaderReceipt    = "Countersign-Receipt"
	// HeaderWantReceipt is the app's request to its outbound listener for the receipt of this
	// call (value ReceiptInline); without it the response carries none.
	HeaderWantReceipt = "Countersign-Want-Receipt"
	ReceiptInline     = "inline"
	HeaderReject      = "Countersign-Reject"
	HeaderRejectCause = "Countersign-Reject-Detail"
)

// Signing contexts (domain separation between entries and countersignatures).
const (
	ctxEntry      = "countersign/chain-entry/v1."
	ctxCountersig = "countersign/countersignature/v1."
	ctxRequest    = "countersign/request/v1\n"
	ctxResponse   = "countersign/response/v1\n"
	ctxStream     = "countersign/response-stream/v1\n"
)

// MaxDigestBody is the largest request body whose SHA-256 goes into the request digest.
const MaxDigestBody = 64 << 10

// Reason codes of chain rejections.
const (
	CodeChainMissing    attestation.Code = "chain_missing"
	CodeChainMalformed  attestation.Code = "chain_malformed"
	CodeChainTooLong    attestation.Code = "chain_too_long"
	CodeChainTooLarge   attestation.Code = "chain_too_large"
	CodeChainLink       attestation.Code = "chain_link_broken"
	CodeChainOrder      attestation.Code = "chain_order_invalid"
	CodeChainSignature  attestation.Code = "chain_signature_invalid"
	CodeChainToken      attestation.Code = "chain_token_unavailable"
	CodeChainLastHop    attestation.Code = "chain_last_hop_not_peer"
	CodeChainRequest    attestation.Code = "chain_request_mismatch"
	CodeChainStale      attestation.Code = "chain_stale"
	CodeChainReplay     attestation.Code = "chain_replayed"
	CodeChainDuplicate  attestation.Code = "chain_duplicate_entry"
	CodeCountersig      attestation.Code = "countersignature_invalid"
	CodeCountersigGone  attestation.Code = "countersignature_missing"
	CodeReplayCacheFull attestation.Code = "replay_cache_full"
	// CodeSigNotLowS: an ECDSA signature whose s is above n/2. (r, n-s) verifies as well as
	// (r, s), so only the low-s form is accepted and produced: one statement, one encoding.
	CodeSigNotLowS attestation.Code = "signature_not_low_s"
)

// errHighS is parseSigned's error for a signature that is not low-s.
var errHighS = errors.New("the signature's s is above n/2 (only low-s signatures are accepted)")

// p256HalfN is n/2 for P-256.
var p256HalfN = new(big.Int).Rsh(elliptic.P256().Params().N, 1)

// Member sets of the signed payloads: exactly these, each once, spelled exactly.
var (
	entryMembers      = []string{"v", "i", "prev", "tok", "req", "ts", "nonce"}
	countersigMembers = []string{"v", "entry", "tok", "resp", "ts"}
)

var b64 = base64.RawURLEncoding

// Entry is one hop's signed statement (the JSON payload of an encoded entry).
type Entry struct {
	V     int    `json:"v"`     // 1
	Index int    `json:"i"`     // position in the chain, from 0
	Prev  string `json:"prev"`  // b64url SHA-256 of the previous encoded entry; "" for the first
	Token string `json:"tok"`   // b64url SHA-256 of the hop's MAA token (compact JWS)
	Req   string `json:"req"`   // b64url request digest
	TS    int64  `json:"ts"`    // Unix milliseconds
	Nonce string `json:"nonce"` // b64url of 16 random bytes
}

// Countersig is the answering hop's statement about a response.
type Countersig struct {
	V     int    `json:"v"`     // 1
	Entry string `json:"entry"` // b64url SHA-256 of the encoded request entry answered
	Token string `json:"tok"`   // b64url SHA-256 of the answering hop's token
	Resp  string `json:"resp"`  // b64url response digest
	TS    int64  `json:"ts"`    // Unix milliseconds
}

// Digest returns b64url(SHA-256(s)).
func Digest(s string) string {
	bp := digestBufs.Get().(*[]byte)
	b := append((*bp)[:0], s...)
	h := sha256.Sum256(b)
	if cap(b) <= 64<<10 {
		*bp = b
		digestBufs.Put(bp)
	}
	return b64.EncodeToString(h[:])
}

// digestBufs hold the bytes being hashed by Digest: a string's bytes are copied into a
// reused buffer instead of a new slice per call (tokens are several KB).
var digestBufs = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

// TokenDigest is Digest of a token, remembered for the few tokens in use (this proxy's own
// and its peers', a handful per token lifetime) so that the several KB of a token are not
// hashed again on every request. Use it only for tokens that passed verification (from a
// certificate): the cache holds at most tokenDigestMax entries and is emptied when full.
func TokenDigest(raw string) string {
	tokenDigests.mu.RLock()
	d, ok := tokenDigests.m[raw]
	tokenDigests.mu.RUnlock()
	if ok {
		return d
	}
	d = Digest(raw)
	tokenDigests.mu.Lock()
	if len(tokenDigests.m) >= tokenDigestMax {
		clear(tokenDigests.m)
	}
	tokenDigests.m[raw] = d
	tokenDigests.mu.Unlock()
	return d
}

const tokenDigestMax = 64

var tokenDigests = struct {
	mu sync.RWMutex
	m  map[string]string
}{m: map[string]string{}}

// RequestDigest is SHA-256 over the request's method, authority, request-target and, when
// bodySHA256 is not nil, the body's SHA-256 (else "-").
func RequestDigest(method, authority, target string, bodySHA256 []byte) [32]byte {
	var b strings.Builder
	b.WriteString(ctxRequest)
	b.WriteString(method)
	b.WriteByte('\n')
	b.WriteString(authority)
	b.WriteByte('\n')
	b.WriteString(target)
	b.WriteByte('\n')
	if bodySHA256 == nil {
		b.WriteByte('-')
	} else {
		b.WriteString(b64.EncodeToString(bodySHA256))
	}
	return sha256.Sum256([]byte(b.String()))
}

// ResponseDigest is SHA-256 over the status code and the body's SHA-256.
func ResponseDigest(status int, bodySHA256 []byte) [32]byte {
	s := ctxResponse + strconv.Itoa(status) + "\n" + b64.EncodeToString(bodySHA256)
	return sha256.Sum256([]byte(s))
}

// StreamResponseDigest is the digest a streamed exchange's countersignature covers
// (docs/protocol.md section 11): the status, the body's SHA-256, the trailers' SHA-256
// (TrailersDigest) and requestBody, the b64url SHA-256 of the request body the answering proxy
// received whole, or "-" when the response ended first.
func StreamResponseDigest(status int, bodySHA256, trailersSHA256 []byte, requestBody string) [32]byte {
	s := ctxStream + strconv.Itoa(status) + "\n" + b64.EncodeToString(bodySHA256) + "\n" +
		b64.EncodeToString(trailersSHA256) + "\n" + requestBody
	return sha256.Sum256([]byte(s))
}

// TrailersDigest is H(T) of docs/protocol.md section 11: every field of trailers but
// HeaderCountersig, as lower-case(name) ":" value "\n", ordered by name, values in their order.
func TrailersDigest(trailers map[string][]string) [32]byte {
	names := make([]string, 0, len(trailers))
	for k := range trailers {
		lk := strings.ToLower(k)
		if lk == lowerCountersig {
			continue
		}
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return strings.ToLower(names[i]) < strings.ToLower(names[j]) })
	h := sha256.New()
	for _, k := range names {
		lk := strings.ToLower(k)
		for _, v := range trailers[k] {
			h.Write([]byte(lk))
			h.Write([]byte{':'})
			h.Write([]byte(v))
			h.Write([]byte{'\n'})
		}
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

var lowerCountersig = strings.ToLower(HeaderCountersig)

// sign encodes a statement of kind (ctxEntry or ctxCountersig) in the signer's version: v1
// is b64url(P) "." b64url(r||s) with the signature over SHA-256(context || b64url(P)); v2 is
// b64url(P) "." b64url(r||s) "." b64url(proof), the signature over the root of the batch the
// statement was signed in (batch.go).
func sign(self Self, kind string, payload any) (string, error) {
	js, err := json.Marshal(payload)
	if err != nil {
		return "", err
	}
	p := b64.EncodeToString(js)
	if self.version() == 1 {
		sig, err := signDigest(self.Key, sha256.Sum256([]byte(kind+p)))
		if err != nil {
			return "", err
		}
		return p + "." + b64.EncodeToString(sig), nil
	}
	st := &signed{payload: p, proof: &inclusion{}}
	sig, proof, err := batcherFor(self.Key).sign(leafHash(st.context(kind), p))
	if err != nil {
		return "", err
	}
	return p + "." + b64.EncodeToString(sig) + "." + encodeProof(proof), nil
}

// parseSigned splits and decodes an encoded statement; it checks shape only: canonical
// base64url in every part, a JSON object with exactly members (each once, in any case
// spelling), a low-s signature, and for v2 (three parts) a well-formed inclusion proof.
func parseSigned(enc string, v any, members []string) (*signed, error) {
	parts := strings.Split(enc, ".")
	if (len(parts) != 2 && len(parts) != 3) || parts[0] == "" {
		return nil, fmt.Errorf("expected base64url(payload).base64url(signature) (v1) or base64url(payload).base64url(signature).base64url(proof) (v2)")
	}
	p := parts[0]
	js, err := b64url.DecodeString(p)
	if err != nil {
		return nil, fmt.Errorf("payload: %v", err)
	}
	sig, err := b64url.DecodeString(parts[1])
	if err != nil || len(sig) != 64 {
		return nil, fmt.Errorf("signature is not 64 bytes of canonical base64url")
	}
	st := &signed{payload: p, sig: sig}
	if len(parts) == 3 {
		if st.proof, err = parseProof(parts[2]); err != nil {
			return nil, err
		}
	}
	var m map[string]json.RawMessage
	if err := strictdecode.JSON(js, &m); err != nil {
		return nil, fmt.Errorf("payload: %v", err)
	}
	for _, k := range members {
		if _, ok := m[k]; !ok {
			return nil, fmt.Errorf("payload: member %q missing (exactly these members: %s)", k, strings.Join(members, ", "))
		}
	}
	if len(m) != len(members) {
		return nil, fmt.Errorf("payload: %d members, expected exactly these: %s", len(m), strings.Join(members, ", "))
	}
	if err := json.Unmarshal(js, v); err != nil {
		return nil, fmt.Errorf("payload: %v", err)
	}
	if new(big.Int).SetBytes(sig[32:]).Cmp(p256HalfN) > 0 {
		return nil, errHighS
	}
	return st, nil
}

// checkVersion requires the payload's v to match the encoding: 1 with two parts, 2 with three.
func checkVersion(v int, st *signed) error {
	switch {
	case v == 1 && st.proof == nil, v == 2 && st.proof != nil:
		return nil
	case v == 1 || v == 2:
		return fmt.Errorf("version %d in a %d-part encoding (v1 has two parts, v2 three)", v, 2+btoi(st.proof != nil))
	}
	return fmt.Errorf("version %d, expected 1 or 2", v)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func verifySig(pub *ecdsa.PublicKey, context, payloadB64 string, sig []byte) bool {
	return verifyDigest(pub, sha256.Sum256([]byte(context+payloadB64)), sig)
}

func verifyDigest(pub *ecdsa.PublicKey, h [32]byte, sig []byte) bool {
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:])
	return ecdsa.Verify(pub, h[:], r, s)
}

func checkDigestField(name, v string) error {
	b, err := b64url.DecodeString(v)
	if err != nil || len(b) != 32 {
		return fmt.Errorf("%s is not a base64url SHA-256", name)
	}
	return nil
}

// ParseEntry parses an encoded entry's shape (not its signature): the entry, b64url(P) and
// the signature bytes.
func ParseEntry(enc string) (*Entry, string, []byte, error) {
	e, st, err := parseEntry(enc)
	if err != nil {
		return nil, "", nil, err
	}
	return e, st.payload, st.sig, nil
}

func parseEntry(enc string) (*Entry, *signed, error) {
	var e Entry
	st, err := parseSigned(enc, &e, entryMembers)
	if err != nil {
		return nil, nil, err
	}
	if err := checkVersion(e.V, st); err != nil {
		return nil, nil, err
	}
	if e.Index < 0 {
		return nil, nil, fmt.Errorf("negative index")
	}
	if e.Prev != "" {
		if err := checkDigestField("prev", e.Prev); err != nil {
			return nil, nil, err
		}
	}
	if err := checkDigestField("tok", e.Token); err != nil {
		return nil, nil, err
	}
	if err := checkDigestField("req", e.Req); err != nil {
		return nil, nil, err
	}
	if n, err := b64url.DecodeString(e.Nonce); err != nil || len(n) != 16 {
		return nil, nil, fmt.Errorf("nonce is not 16 bytes of base64url")
	}
	if e.TS <= 0 {
		return nil, nil, fmt.Errorf("timestamp missing")
	}
	return &e, st, nil
}

// Split splits a chain header value into encoded entries, checking the bounds.
func Split(header string, maxHops int) ([]string, error) {
	if header == "" {
		return nil, attestation.Rejectf(CodeChainMissing, "no %s header", HeaderChain)
	}
	parts := strings.Split(header, ",")
	if len(parts) > maxHops {
		return nil, attestation.Reject(CodeChainTooLong, "", strconv.Itoa(len(parts))+" entries", fmt.Sprintf("at most %d", maxHops))
	}
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts, nil
}

// SplitTokens parses the tokens header: compact JWS tokens separated by commas, each unique.
func SplitTokens(header string) (map[string]string, error) {
	m := map[string]string{}
	if strings.TrimSpace(header) == "" {
		return m, nil
	}
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if _, err := attestedtls.ParseTokenValue([]byte(t)); err != nil {
			return nil, attestation.Rejectf(CodeChainMalformed, "%s: %v", HeaderTokens, err)
		}
		d := Digest(t)
		if _, dup := m[d]; dup {
			return nil, attestation.Rejectf(CodeChainMalformed, "%s lists a token twice", HeaderTokens)
		}
		m[d] = t
	}
	return m, nil
}

// Hop is a verified chain entry.
type Hop struct {
	Entry    *Entry
	Encoded  string
	Identity string
	Token    *token.Verified
	// signer is the key, named by Token, that the entry's signature verified with.
	signer *ecdsa.PublicKey
	// sum is the SHA-256 of Encoded (when hasSum), computed once by VerifyEntries.
	sum    [32]byte
	hasSum bool
	// signed is the digest the entry's signature is over, H(context || b64url(P)).
	signed [32]byte
}

// Chain is a verified chain.
type Chain struct {
	Hops []Hop
	// Tokens are every hop's tokens by digest (for passing the chain on and for receipts).
	Tokens map[string]string
}

// Header returns the chain header value.
func (c *Chain) Header() string {
	parts := make([]string, len(c.Hops))
	for i, h := range c.Hops {
		parts[i] = h.Encoded
	}
	return strings.Join(parts, ",")
}

// TokensHeader lists every token the chain references except the one whose digest is omit.
func (c *Chain) TokensHeader(omit string) string {
	seen := map[string]bool{omit: true}
	var out []string
	for _, h := range c.Hops {
		if !seen[h.Entry.Token] {
			seen[h.Entry.Token] = true
			out = append(out, c.Tokens[h.Entry.Token])
		}
	}
	return strings.Join(out, ",")
}

// Tail is the digest of the last encoded entry.
func (c *Chain) Tail() string {
	sum := c.tailSum()
	return b64.EncodeToString(sum[:])
}

// tailSum is the SHA-256 of the last encoded entry, as VerifyEntries computed it when it
// built the chain.
func (c *Chain) tailSum() [32]byte {
	h := &c.Hops[len(c.Hops)-1]
	if h.hasSum {
		return h.sum
	}
	return sha256.Sum256([]byte(h.Encoded))
}

// TailSigned is the digest the last entry's signature is over: what replay protection keys.
func (c *Chain) TailSigned() [32]byte {
	h := &c.Hops[len(c.Hops)-1]
	if h.signed == ([32]byte{}) {
		if _, st, err := parseEntry(h.Encoded); err == nil {
			return st.digest(ctxEntry)
		}
	}
	return h.signed
}

// signedDigest is the digest an ECDSA signature over a payload is computed on:
// H(context || b64url(payload)).
func signedDigest(context, payloadB64 string) [32]byte {
	return sha256.Sum256([]byte(context + payloadB64))
}

// Checker is attestedtls.Checker.
type Checker = attestedtls.Checker

// Limits bound verification.
type Limits struct {
	MaxHops  int
	MaxBytes int
	// MaxAge is the oldest first entry accepted (relative to Now); 0 disables (offline).
	MaxAge time.Duration
	// Skew tolerates timestamps up to this far in the future.
	Skew time.Duration
	// ChannelLast: the last entry arrived over the attested TLS connection of the peer that
	// signed it, which authenticates it; its signature is left to whoever verifies the chain
	// later (chain.peerSignatures: channel, docs/protocol.md section 8). Live checks only.
	ChannelLast bool
}

// VerifyEntries checks structure, links, order, tokens and signatures of a chain. tokens maps
// token digests to tokens; identities are those every hop must satisfy (any one; empty means
// any identity in the policy).
func VerifyEntries(ctx context.Context, c Checker, encoded []string, tokens map[string]string, identities []string, now time.Time, lim Limits) (*Chain, error) {
	ch := &Chain{Tokens: map[string]string{}}
	seen := map[string]bool{}
	var prevTS int64
	prevDigest := ""
	used := map[string]bool{}
	for i, enc := range encoded {
		e, st, err := parseEntry(enc)
		if errors.Is(err, errHighS) {
			return nil, attestation.Rejectf(CodeSigNotLowS, "entry %d: %v", i, err)
		}
		if err != nil {
			return nil, attestation.Rejectf(CodeChainMalformed, "entry %d: %v", i, err)
		}
		sum := sha256.Sum256([]byte(enc))
		d := b64.EncodeToString(sum[:])
		// Duplicates and replays are keyed on what was signed (the signed digest), not on
		// the encoding.
		signed := st.digest(ctxEntry)
		if seen[string(signed[:])] {
			return nil, attestation.Rejectf(CodeChainDuplicate, "entry %d repeats an earlier entry", i)
		}
		seen[string(signed[:])] = true
		if e.Index != i {
			return nil, attestation.Reject(CodeChainOrder, fmt.Sprintf("entry %d index", i), strconv.Itoa(e.Index), strconv.Itoa(i))
		}
		wantPrev := prevDigest // the digest of encoded[i-1], "" for the first entry
		prevDigest = d
		if e.Prev != wantPrev {
			return nil, attestation.Reject(CodeChainLink, fmt.Sprintf("entry %d prev", i), e.Prev, "the digest of the entry before it ("+orNone(wantPrev)+")")
		}
		if e.TS < prevTS {
			return nil, attestation.Rejectf(CodeChainOrder, "entry %d is older than entry %d", i, i-1)
		}
		prevTS = e.TS
		ts := time.UnixMilli(e.TS)
		if lim.MaxAge > 0 && ts.Before(now.Add(-lim.MaxAge)) {
			return nil, attestation.Reject(CodeChainStale, fmt.Sprintf("entry %d ts", i), ts.UTC().Format(time.RFC3339Nano), "within "+lim.MaxAge.String())
		}
		if ts.After(now.Add(lim.Skew)) {
			return nil, attestation.Reject(CodeChainStale, fmt.Sprintf("entry %d ts", i), ts.UTC().Format(time.RFC3339Nano), "not in the future")
		}
		raw, ok := tokens[e.Token]
		if !ok {
			return nil, attestation.Rejectf(CodeChainToken, "entry %d names token %s, which is neither the peer's nor in %s", i, e.Token, HeaderTokens)
		}
		used[e.Token] = true
		dec, t := c.Check(ctx, raw, identities, nil)
		if !dec.Allowed() {
			r := *dec.Rejection
			r.Detail = strings.TrimPrefix(r.Detail+fmt.Sprintf("; chain entry %d", i), "; ")
			return nil, &r
		}
		var signer *ecdsa.PublicKey
		if !lim.ChannelLast || i < len(encoded)-1 {
			if signer = signedByToken(t, ctxEntry, st); signer == nil {
				return nil, attestation.Rejectf(CodeChainSignature, "entry %d is not signed by a key its token names", i)
			}
		}
		ch.Hops = append(ch.Hops, Hop{
			Entry:    e,
			Encoded:  enc,
			Identity: dec.Identity,
			Token:    t,
			signer:   signer,
			sum:      sum,
			hasSum:   true,
			signed:   signed,
		})
		ch.Tokens[e.Token] = raw
	}
	for d := range tokens {
		if !used[d] {
			return nil, attestation.Rejectf(CodeChainMalformed, "%s carries a token no entry names", HeaderTokens)
		}
	}
	return ch, nil
}

func orNone(s string) string {
	if s == "" {
		return "empty, as the first entry"
	}
	return s
}

// signedByToken returns the key named by t that the statement of kind verifies with, or nil.
func signedByToken(t *token.Verified, kind string, st *signed) *ecdsa.PublicKey {
	if t.Runtime == nil {
		return nil
	}
	for _, k := range t.Runtime.PublicKeys() {
		if ek, err := attestedtls.CheckKey(k); err == nil && st.verify(ek, kind) {
			return ek
		}
	}
	return nil
}

// Self is what a hop signs with: its current key and token, and the protocol version of the
// statements it signs (0 means 2, the current one; 1 for peers that predate v2).
type Self struct {
	Key     *ecdsa.PrivateKey
	Token   string
	Version int
}

func (s Self) version() int {
	if s.Version == 1 {
		return 1
	}
	return 2
}

// Append signs a new entry for a request with digest req after prev (nil starts a chain). It
// returns the new chain header value and the new entry's digest.
func Append(prev *Chain, self Self, req [32]byte, now time.Time) (header, entryDigest string, err error) {
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return "", "", err
	}
	e := Entry{
		V:     self.version(),
		Token: TokenDigest(self.Token),
		Req:   b64.EncodeToString(req[:]),
		TS:    now.UnixMilli(),
		Nonce: b64.EncodeToString(nonce),
	}
	if prev != nil && len(prev.Hops) > 0 {
		e.Index = len(prev.Hops)
		e.Prev = prev.Tail()
		if last := prev.Hops[len(prev.Hops)-1].Entry.TS; e.TS < last {
			e.TS = last
		}
	}
	enc, err := sign(self, ctxEntry, e)
	if err != nil {
		return "", "", err
	}
	if prev != nil && len(prev.Hops) > 0 {
		return prev.Header() + "," + enc, Digest(enc), nil
	}
	return enc, Digest(enc), nil
}

// Countersign signs the answer to the entry whose digest is entryDigest.
func Countersign(self Self, entryDigest string, resp [32]byte, now time.Time) (string, error) {
	return sign(self, ctxCountersig, Countersig{
		V:     self.version(),
		Entry: entryDigest,
		Token: TokenDigest(self.Token),
		Resp:  b64.EncodeToString(resp[:]),
		TS:    now.UnixMilli(),
	})
}

// ParseCountersig parses an encoded countersignature's shape: the statement, b64url(C) and
// the signature bytes.
func ParseCountersig(enc string) (*Countersig, string, []byte, error) {
	c, st, err := parseCountersig(enc)
	if err != nil {
		return nil, "", nil, err
	}
	return c, st.payload, st.sig, nil
}

func parseCountersig(enc string) (*Countersig, *signed, error) {
	var c Countersig
	st, err := parseSigned(enc, &c, countersigMembers)
	if err != nil {
		return nil, nil, err
	}
	if err := checkVersion(c.V, st); err != nil {
		return nil, nil, err
	}
	for _, f := range []struct{ n, v string }{{"entry", c.Entry}, {"tok", c.Token}, {"resp", c.Resp}} {
		if err := checkDigestField(f.n, f.v); err != nil {
			return nil, nil, err
		}
	}
	if c.TS <= 0 {
		return nil, nil, fmt.Errorf("timestamp missing")
	}
	return &c, st, nil
}

// VerifyStreamCountersig checks the countersignature of a streamed exchange
// (docs/protocol.md section 11): as VerifyCountersig, with the stream response digest of
// status, the body's and the trailers' SHA-256, and a request body that is either sentBody (the
// b64url SHA-256 of what the caller sent) or "-". It returns the request body value that was
// countersigned.
//
// A nil key checks everything but the signature: for a countersignature that arrived over the
// attested connection of its signer (chain.peerSignatures: channel) when no receipt is wanted.
func VerifyStreamCountersig(enc, entryDigest, tokenDigest string, key *ecdsa.PublicKey, status int, bodySHA256, trailersSHA256 []byte, sentBody string) (*Countersig, string, error) {
	rb := sentBody
	if c, _, err := parseCountersig(enc); err == nil {
		if d := StreamResponseDigest(status, bodySHA256, trailersSHA256, "-"); c.Resp == b64.EncodeToString(d[:]) {
			rb = "-"
		}
	}
	c, err := verifyCountersig(enc, entryDigest, tokenDigest, key, StreamResponseDigest(status, bodySHA256, trailersSHA256, rb), key != nil)
	return c, rb, err
}

// VerifyCountersig checks enc answers entryDigest with response digest resp, signed by key
// (the answering peer's key, whose token has digest tokenDigest).
func VerifyCountersig(enc, entryDigest, tokenDigest string, key *ecdsa.PublicKey, resp [32]byte) (*Countersig, error) {
	return verifyCountersig(enc, entryDigest, tokenDigest, key, resp, true)
}

// CheckCountersigChannel is VerifyCountersig without the signature, for a countersignature
// that arrived over the attested connection of the peer that signed it
// (chain.peerSignatures: channel, docs/protocol.md section 9).
func CheckCountersigChannel(enc, entryDigest, tokenDigest string, resp [32]byte) (*Countersig, error) {
	return verifyCountersig(enc, entryDigest, tokenDigest, nil, resp, false)
}

func verifyCountersig(enc, entryDigest, tokenDigest string, key *ecdsa.PublicKey, resp [32]byte, verifySig bool) (*Countersig, error) {
	if enc == "" {
		return nil, attestation.Rejectf(CodeCountersigGone, "the response carries no %s", HeaderCountersig)
	}
	c, st, err := parseCountersig(enc)
	if errors.Is(err, errHighS) {
		return nil, attestation.Rejectf(CodeSigNotLowS, "countersignature: %v", err)
	}
	if err != nil {
		return nil, attestation.Rejectf(CodeCountersig, "%v", err)
	}
	if c.Entry != entryDigest {
		return nil, attestation.Reject(CodeCountersig, "entry", c.Entry, "the digest of the request entry sent ("+entryDigest+")")
	}
	if c.Token != tokenDigest {
		return nil, attestation.Reject(CodeCountersig, "tok", c.Token, "the answering peer's token digest ("+tokenDigest+")")
	}
	if c.Resp != b64.EncodeToString(resp[:]) {
		return nil, attestation.Reject(CodeCountersig, "resp", c.Resp, "the digest of the response received")
	}
	if verifySig && !st.verify(key, ctxCountersig) {
		return nil, attestation.Rejectf(CodeCountersig, "signature does not verify under the answering peer's key")
	}
	return c, nil
}
