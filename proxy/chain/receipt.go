package chain

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/attestation/token"
	"github.com/countersign/countersign/internal/b64url"
	"github.com/countersign/countersign/internal/strictdecode"
)

// MaxReceiptSize bounds a receipt.
const MaxReceiptSize = 256 << 10

// Receipt is the evidence a caller keeps: the chain as sent, every token it names, and the
// answering hop's countersignature over the last entry and the response.
type Receipt struct {
	V                int      `json:"v"` // 1
	Chain            string   `json:"chain"`
	Tokens           []string `json:"tokens"`
	Countersignature string   `json:"countersignature"`
	Status           int      `json:"status"`
	BodySHA256       string   `json:"bodySha256"` // b64url
}

// Encode returns the receipt as base64url(JSON), the form of the Countersign-Receipt header.
func (r *Receipt) Encode() (string, error) {
	// The JSON (tens of KB: it carries every token) goes to a pooled buffer and its base64
	// straight into the result: one allocation of the header's size, not three.
	buf := receiptBufs.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= MaxReceiptSize {
			buf.Reset()
			receiptBufs.Put(buf)
		}
	}()
	buf.Reset()
	if err := json.NewEncoder(buf).Encode(r); err != nil { // what json.Marshal writes, and "\n"
		return "", err
	}
	js := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	var out strings.Builder
	out.Grow(base64.RawURLEncoding.EncodedLen(len(js)))
	enc := base64.NewEncoder(base64.RawURLEncoding, &out)
	_, _ = enc.Write(js) // a strings.Builder does not fail
	_ = enc.Close()
	return out.String(), nil
}

var receiptBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// ParseReceipt accepts the JSON or the header form (base64url of the JSON).
func ParseReceipt(b []byte) (*Receipt, error) {
	if len(b) > MaxReceiptSize {
		return nil, fmt.Errorf("receipt of %d bytes, at most %d allowed", len(b), MaxReceiptSize)
	}
	s := strings.TrimSpace(string(b))
	if !strings.HasPrefix(s, "{") {
		dec, err := b64url.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("receipt is neither JSON nor canonical base64url JSON")
		}
		s = string(dec)
	}
	var r Receipt
	if err := strictdecode.JSON([]byte(s), &r); err != nil {
		return nil, fmt.Errorf("receipt: %v", err)
	}
	if r.V != 1 {
		return nil, fmt.Errorf("receipt version %d, expected 1", r.V)
	}
	return &r, nil
}

// ReceiptResult is what a verified receipt proves.
type ReceiptResult struct {
	Chain      *Chain
	Answerer   string // identity of the answering hop
	AnswerTok  *token.Verified
	Countersig *Countersig
}

// VerifyReceipt checks a receipt offline: every entry's token valid at the countersignature's
// time and satisfying one of identities (any policy identity when empty), the links and
// signatures, and the countersignature over the last entry and the response digest by a token
// that satisfies one of answerer (any when empty). c's clock must be the receipt's time: use
// ReceiptTime.
func VerifyReceipt(ctx context.Context, c Checker, r *Receipt, identities, answerer []string, maxHops int) (*ReceiptResult, error) {
	encoded, err := Split(r.Chain, maxHops)
	if err != nil {
		return nil, err
	}
	tokens := map[string]string{}
	for _, t := range r.Tokens {
		if _, dup := tokens[Digest(t)]; dup {
			return nil, attestation.Rejectf(CodeChainMalformed, "receipt lists a token twice")
		}
		tokens[Digest(t)] = t
	}
	cs, st, err := parseCountersig(r.Countersignature)
	if errors.Is(err, errHighS) {
		return nil, attestation.Rejectf(CodeSigNotLowS, "countersignature: %v", err)
	}
	if err != nil {
		return nil, attestation.Rejectf(CodeCountersig, "%v", err)
	}
	ansRaw, ok := tokens[cs.Token]
	if !ok {
		return nil, attestation.Rejectf(CodeChainToken, "the countersignature names a token the receipt does not carry")
	}
	chainTokens := map[string]string{}
	for _, enc := range encoded {
		if e, _, _, err := ParseEntry(enc); err == nil {
			if t, ok := tokens[e.Token]; ok {
				chainTokens[e.Token] = t
			}
		}
	}
	for d := range tokens {
		if _, ok := chainTokens[d]; !ok && d != cs.Token {
			return nil, attestation.Rejectf(CodeChainMalformed, "receipt carries a token nothing names")
		}
	}
	when := time.UnixMilli(cs.TS)
	ch, err := VerifyEntries(ctx, c, encoded, chainTokens, identities, when, Limits{MaxHops: maxHops, Skew: time.Minute})
	if err != nil {
		return nil, err
	}
	if cs.Entry != ch.Tail() {
		return nil, attestation.Reject(CodeCountersig, "entry", cs.Entry, "the digest of the chain's last entry ("+ch.Tail()+")")
	}
	if cs.TS < ch.Hops[len(ch.Hops)-1].Entry.TS {
		return nil, attestation.Rejectf(CodeCountersig, "the countersignature is older than the request entry")
	}
	body, err := b64url.DecodeString(r.BodySHA256)
	if err != nil || len(body) != 32 {
		return nil, attestation.Rejectf(CodeCountersig, "bodySha256 is not a base64url SHA-256")
	}
	resp := ResponseDigest(r.Status, body)
	if cs.Resp != b64.EncodeToString(resp[:]) {
		return nil, attestation.Reject(CodeCountersig, "resp", cs.Resp, "the digest of the receipt's status and bodySha256")
	}
	d, t := c.Check(ctx, ansRaw, answerer, nil)
	if !d.Allowed() {
		return nil, d.Rejection
	}
	if signedByToken(t, ctxCountersig, st) == nil {
		return nil, attestation.Rejectf(CodeCountersig, "the countersignature is not signed by a key its token names")
	}
	return &ReceiptResult{Chain: ch, Answerer: d.Identity, AnswerTok: t, Countersig: cs}, nil
}

// ReceiptTime is the time a receipt speaks for (its countersignature's timestamp), or zero.
func ReceiptTime(r *Receipt) time.Time {
	cs, _, _, err := ParseCountersig(r.Countersignature)
	if err != nil {
		return time.Time{}
	}
	return time.UnixMilli(cs.TS)
}
