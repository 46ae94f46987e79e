package chain

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
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

// CodeReceiptMalformed: a receipt that does not parse (neither JSON nor canonical base64url
// JSON, a member missing, unknown or repeated, a wrong type, `v` other than 1) or whose token
// list does not match its chain (a token twice, or one nothing names).
const CodeReceiptMalformed attestation.Code = "receipt_malformed"

// receiptMembers is the receipt's member set: exactly these, each once, spelled exactly.
var receiptMembers = []string{"v", "chain", "tokens", "countersignature", "status", "bodySha256"}

// streamMembers are the members a v2 receipt (of a streamed exchange, docs/protocol.md
// section 11) has besides receiptMembers; a v1 receipt has none of them.
var streamMembers = []string{"trailersSha256", "requestBody"}

// Receipt is the evidence a caller keeps: the chain as sent, every token it names, and the
// answering hop's countersignature over the last entry and the response.
type Receipt struct {
	V                int      `json:"v"` // 1
	Chain            string   `json:"chain"`
	Tokens           []string `json:"tokens"`
	Countersignature string   `json:"countersignature"`
	Status           int      `json:"status"`
	BodySHA256       string   `json:"bodySha256"` // b64url
	// A streamed exchange's receipt (V 2) also has the trailers' digest and the request body's
	// as the answering proxy countersigned it (b64url, or "-").
	TrailersSHA256 string `json:"trailersSha256,omitempty"`
	RequestBody    string `json:"requestBody,omitempty"`
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

// ParseReceipt accepts the JSON or the header form (base64url of the JSON). Its errors are
// rejections with CodeReceiptMalformed.
func ParseReceipt(b []byte) (*Receipt, error) {
	if len(b) > MaxReceiptSize {
		return nil, attestation.Rejectf(CodeReceiptMalformed, "receipt of %d bytes, at most %d allowed", len(b), MaxReceiptSize)
	}
	s := strings.TrimSpace(string(b))
	if !strings.HasPrefix(s, "{") {
		dec, err := b64url.DecodeString(s)
		if err != nil {
			return nil, attestation.Rejectf(CodeReceiptMalformed, "receipt is neither JSON nor canonical base64url JSON")
		}
		s = string(dec)
	}
	var m map[string]json.RawMessage
	if err := strictdecode.JSON([]byte(s), &m); err != nil {
		return nil, attestation.Rejectf(CodeReceiptMalformed, "receipt: %v", err)
	}
	for _, k := range receiptMembers {
		if _, ok := m[k]; !ok {
			return nil, attestation.Rejectf(CodeReceiptMalformed, "receipt: member %q missing (exactly these members: %s)", k, strings.Join(receiptMembers, ", "))
		}
	}
	var r Receipt
	if err := strictdecode.JSON([]byte(s), &r); err != nil {
		return nil, attestation.Rejectf(CodeReceiptMalformed, "receipt: %v (exactly these members: %s)", err, strings.Join(receiptMembers, ", "))
	}
	switch r.V {
	case 1:
		for _, k := range streamMembers {
			if _, ok := m[k]; ok {
				return nil, attestation.Rejectf(CodeReceiptMalformed, "receipt member %q in a v1 receipt (only v2, a streamed exchange's, has it)", k)
			}
		}
	case 2:
		for _, k := range streamMembers {
			if _, ok := m[k]; !ok {
				return nil, attestation.Rejectf(CodeReceiptMalformed, "receipt: member %q missing (a v2 receipt has %s and %s)", k, strings.Join(receiptMembers, ", "), strings.Join(streamMembers, ", "))
			}
		}
		if b, err := b64url.DecodeString(r.TrailersSHA256); err != nil || len(b) != 32 {
			return nil, attestation.Rejectf(CodeReceiptMalformed, "receipt member trailersSha256 is %q, expected the canonical base64url of 32 bytes (a SHA-256)", r.TrailersSHA256)
		}
		if r.RequestBody != "-" {
			if b, err := b64url.DecodeString(r.RequestBody); err != nil || len(b) != 32 {
				return nil, attestation.Rejectf(CodeReceiptMalformed, "receipt member requestBody is %q, expected \"-\" or the canonical base64url of 32 bytes (a SHA-256)", r.RequestBody)
			}
		}
	default:
		return nil, attestation.Rejectf(CodeReceiptMalformed, "receipt member v is %d, expected 1 or 2 (a streamed exchange's receipt)", r.V)
	}
	if len(r.Tokens) == 0 {
		return nil, attestation.Rejectf(CodeReceiptMalformed, "receipt member tokens is empty, expected every token the chain and the countersignature name")
	}
	if b, err := b64url.DecodeString(r.BodySHA256); err != nil || len(b) != 32 {
		return nil, attestation.Rejectf(CodeReceiptMalformed, "receipt member bodySha256 is %q, expected the canonical base64url of 32 bytes (a SHA-256)", r.BodySHA256)
	}
	if r.Status < 100 || r.Status > 999 {
		return nil, attestation.Rejectf(CodeReceiptMalformed, "receipt member status is %d, expected an HTTP status code (100 to 999)", r.Status)
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
// ReceiptTime. The order of the checks is that of docs/protocol.md section 9.
func VerifyReceipt(ctx context.Context, c Checker, r *Receipt, identities, answerer []string, maxHops int) (*ReceiptResult, error) {
	cs, st, err := parseReceiptCountersig(r.Countersignature)
	if err != nil {
		return nil, err
	}
	encoded, err := Split(r.Chain, maxHops)
	if err != nil {
		return nil, err
	}
	tokens := map[string]string{}
	for _, t := range r.Tokens {
		if _, dup := tokens[Digest(t)]; dup {
			return nil, attestation.Rejectf(CodeReceiptMalformed, "receipt lists a token twice")
		}
		tokens[Digest(t)] = t
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
	when := time.UnixMilli(cs.TS)
	ch, err := VerifyEntries(ctx, c, encoded, chainTokens, identities, when, Limits{MaxHops: maxHops, Skew: time.Minute})
	if err != nil {
		return nil, err
	}
	// After the chain, so that a chain cut at the front is chain_order_invalid whether or not
	// the receipt still carries the dropped hop's token.
	for d := range tokens {
		if _, ok := chainTokens[d]; !ok && d != cs.Token {
			return nil, attestation.Rejectf(CodeReceiptMalformed, "receipt carries a token that neither an entry nor the countersignature names")
		}
	}
	if cs.Entry != ch.Tail() {
		return nil, attestation.Reject(CodeCountersig, "entry", cs.Entry, "the digest of the chain's last entry ("+ch.Tail()+")")
	}
	if cs.TS < ch.Hops[len(ch.Hops)-1].Entry.TS {
		return nil, attestation.Rejectf(CodeCountersig, "the countersignature is older than the request entry")
	}
	body, err := b64url.DecodeString(r.BodySHA256)
	if err != nil || len(body) != 32 {
		return nil, attestation.Rejectf(CodeReceiptMalformed, "bodySha256 is not the canonical base64url of a SHA-256")
	}
	resp := ResponseDigest(r.Status, body)
	what := "the digest of the receipt's status and bodySha256"
	if r.V == 2 {
		tr, _ := b64url.DecodeString(r.TrailersSHA256) // checked by ParseReceipt
		resp = StreamResponseDigest(r.Status, body, tr, r.RequestBody)
		what = "the stream digest of the receipt's status, bodySha256, trailersSha256 and requestBody"
	}
	if cs.Resp != b64.EncodeToString(resp[:]) {
		return nil, attestation.Reject(CodeCountersig, "resp", cs.Resp, what)
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

// ReceiptTime is the time a receipt speaks for (its countersignature's timestamp), or the
// rejection VerifyReceipt gives when the countersignature does not parse.
func ReceiptTime(r *Receipt) (time.Time, error) {
	cs, _, err := parseReceiptCountersig(r.Countersignature)
	if err != nil {
		return time.Time{}, err
	}
	return time.UnixMilli(cs.TS), nil
}

// parseReceiptCountersig is parseCountersig with its errors as rejections.
func parseReceiptCountersig(enc string) (*Countersig, *signed, error) {
	cs, st, err := parseCountersig(enc)
	if errors.Is(err, errHighS) {
		return nil, nil, attestation.Rejectf(CodeSigNotLowS, "countersignature: %v", err)
	}
	if err != nil {
		return nil, nil, attestation.Rejectf(CodeCountersig, "countersignature: %v", err)
	}
	return cs, st, nil
}

// Codes lists every reason code of this package (docs/protocol.md sections 6, 8 and 9).
var Codes = []attestation.Code{
	CodeChainMissing, CodeChainMalformed, CodeChainTooLong, CodeChainTooLarge, CodeChainLink,
	CodeChainOrder, CodeChainSignature, CodeChainToken, CodeChainLastHop, CodeChainRequest,
	CodeChainStale, CodeChainReplay, CodeChainDuplicate, CodeCountersig, CodeCountersigGone,
	CodeReplayCacheFull, CodeSigNotLowS, CodeReceiptMalformed,
}
