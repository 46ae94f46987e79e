// Package attestation is Countersign's trust core. Its subpackages produce evidence
// (attester), talk to the attestation service (maa), verify tokens (token), decide by policy
// (policy) and parse quotes (quote). This package holds what they share: the rejection type
// and its reason codes.
package attestation

import (
	"fmt"
	"strings"
)

// Code is a stable, bounded reason code: it appears in logs, response headers and metric labels.
type Code string

// Reason codes. Keep them stable: operators alert on them.
const (
	// Token shape and signature.
	CodeTooLarge        Code = "token_too_large"
	CodeMalformed       Code = "token_malformed"
	CodeAlgorithm       Code = "alg_not_allowed"
	CodeCritUnsupported Code = "crit_unsupported"
	CodeKidMissing      Code = "kid_missing"
	CodeKidUnknown      Code = "kid_unknown"
	CodeSignature       Code = "signature_invalid"
	CodeIssuer          Code = "issuer_untrusted"
	CodeKeysUnavailable Code = "keys_unavailable"
	CodeKeysStale       Code = "keys_stale"
	// Token claims.
	CodeClaimMissing   Code = "claim_missing"
	CodeClaimType      Code = "claim_type"
	CodeExpired        Code = "token_expired"
	CodeNotYetValid    Code = "token_not_yet_valid"
	CodeIssuedInFuture Code = "token_issued_in_future"
	// Policy.
	CodeDebug           Code = "debug_not_allowed"
	CodeMREnclave       Code = "mrenclave_mismatch"
	CodeMRSigner        Code = "mrsigner_mismatch"
	CodeProductID       Code = "product_id_mismatch"
	CodeSVN             Code = "svn_too_low"
	CodeAttestationType Code = "attestation_type_not_allowed"
	CodePolicyHash      Code = "policy_hash_mismatch"
	CodeTokenTooOld     Code = "token_too_old"
	CodeUnknownIdentity Code = "identity_unknown"
	CodeNoIdentity      Code = "no_identity_matches"
	// Binding of a token to a key.
	CodeRuntimeData Code = "runtime_data_invalid"
	CodeKeyNotBound Code = "key_not_bound"
)

// Codes lists every reason code of this package (tokens, policy, binding), for metrics that
// start every label at zero and for the test that keeps docs/protocol.md complete.
var Codes = []Code{
	CodeTooLarge, CodeMalformed, CodeAlgorithm, CodeCritUnsupported, CodeKidMissing, CodeKidUnknown,
	CodeSignature, CodeIssuer, CodeKeysUnavailable, CodeKeysStale, CodeClaimMissing, CodeClaimType,
	CodeExpired, CodeNotYetValid, CodeIssuedInFuture, CodeDebug, CodeMREnclave, CodeMRSigner,
	CodeProductID, CodeSVN, CodeAttestationType, CodePolicyHash, CodeTokenTooOld, CodeUnknownIdentity,
	CodeNoIdentity, CodeRuntimeData, CodeKeyNotBound,
}

// Rejection says why a token, a chain or a peer was refused: a reason code, the claim
// concerned, the value seen and what was expected.
type Rejection struct {
	Code     Code
	Claim    string // the claim or field concerned, if any
	Seen     string // what the token had
	Expected string // what policy or protocol wanted
	Detail   string // anything else worth saying
}

// Reject builds a Rejection.
func Reject(code Code, claim, seen, expected string) *Rejection {
	return &Rejection{Code: code, Claim: claim, Seen: seen, Expected: expected}
}

// Rejectf builds a Rejection that is explained by a sentence alone.
func Rejectf(code Code, format string, args ...any) *Rejection {
	return &Rejection{Code: code, Detail: fmt.Sprintf(format, args...)}
}

// Error returns the code and a sentence: "mrsigner_mismatch: claim x-ms-sgx-mrsigner is
// "ab…", expected one of [cd…]".
func (r *Rejection) Error() string {
	var b strings.Builder
	b.WriteString(string(r.Code))
	b.WriteString(": ")
	b.WriteString(r.Sentence())
	return b.String()
}

// Sentence is the human explanation without the code.
func (r *Rejection) Sentence() string {
	var parts []string
	if r.Claim != "" {
		s := "claim " + r.Claim
		if r.Seen != "" {
			s += " is " + r.Seen
		} else {
			s += " is absent"
		}
		if r.Expected != "" {
			s += ", expected " + r.Expected
		}
		parts = append(parts, s)
	} else if r.Expected != "" {
		parts = append(parts, "expected "+r.Expected)
	}
	if r.Detail != "" {
		parts = append(parts, r.Detail)
	}
	return strings.Join(parts, "; ")
}
