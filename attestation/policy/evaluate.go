package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/attestation/maa"
)

// Decision is the outcome of evaluating a token against a policy.
type Decision struct {
	// Identity is the name of the identity that accepted the token (empty when rejected).
	Identity string
	// Rejection is nil when the token was accepted.
	Rejection *attestation.Rejection
}

// Allowed reports whether the token was accepted.
func (d Decision) Allowed() bool { return d.Rejection == nil }

// Evaluate checks claims against the named identity, or against every identity when name is
// empty (then the first that accepts, in name order, is reported).
func (p *Policy) Evaluate(c *maa.Claims, name string, now time.Time) Decision {
	if name != "" {
		id, ok := p.Identities[name]
		if !ok {
			return Decision{Rejection: attestation.Reject(attestation.CodeUnknownIdentity, "", "",
				fmt.Sprintf("an identity named in the policy (%s), not %q", strings.Join(p.IdentityNames(), ", "), name))}
		}
		if rej := id.Check(c, now); rej != nil {
			return Decision{Rejection: rej}
		}
		return Decision{Identity: name}
	}
	return p.EvaluateAny(c, p.IdentityNames(), now)
}

// EvaluateAny accepts the token if any of the named identities does.
func (p *Policy) EvaluateAny(c *maa.Claims, names []string, now time.Time) Decision {
	var why []string
	for _, n := range names {
		id, ok := p.Identities[n]
		if !ok {
			why = append(why, fmt.Sprintf("%s: not in the policy", n))
			continue
		}
		rej := id.Check(c, now)
		if rej == nil {
			return Decision{Identity: n}
		}
		if len(names) == 1 {
			return Decision{Rejection: rej}
		}
		why = append(why, n+": "+rej.Error())
	}
	return Decision{Rejection: attestation.Rejectf(attestation.CodeNoIdentity,
		"no allowed identity accepts the token (%s)", strings.Join(why, "; "))}
}

// Check checks claims against the identity. Order: attestation type, debug, measurements,
// product and SVN, policy hash, age.
func (id *Identity) Check(c *maa.Claims, now time.Time) *attestation.Rejection {
	if !contains(id.AttestationTypes, c.AttestationType) {
		return attestation.Reject(attestation.CodeAttestationType, maa.ClaimAttestationType, q(c.AttestationType), "one of "+list(id.AttestationTypes))
	}
	if c.SGXIsDebuggable == nil {
		return attestation.Reject(attestation.CodeClaimMissing, maa.ClaimSGXDebuggable, "", "a boolean")
	}
	if *c.SGXIsDebuggable && !id.AllowDebug {
		return attestation.Reject(attestation.CodeDebug, maa.ClaimSGXDebuggable, "true", "false (this identity does not allow debug or simulated enclaves)")
	}
	if len(id.mrenclave) > 0 {
		if c.SGXMREnclave == "" {
			return attestation.Reject(attestation.CodeClaimMissing, maa.ClaimSGXMREnclave, "", "one of "+list(id.MREnclave))
		}
		if !id.mrenclave[strings.ToLower(c.SGXMREnclave)] {
			return attestation.Reject(attestation.CodeMREnclave, maa.ClaimSGXMREnclave, q(c.SGXMREnclave), "one of "+list(id.MREnclave))
		}
	}
	if len(id.mrsigner) > 0 {
		if c.SGXMRSigner == "" {
			return attestation.Reject(attestation.CodeClaimMissing, maa.ClaimSGXMRSigner, "", "one of "+list(id.MRSigner))
		}
		if !id.mrsigner[strings.ToLower(c.SGXMRSigner)] {
			return attestation.Reject(attestation.CodeMRSigner, maa.ClaimSGXMRSigner, q(c.SGXMRSigner), "one of "+list(id.MRSigner))
		}
		if c.SGXProductID == nil {
			return attestation.Reject(attestation.CodeClaimMissing, maa.ClaimSGXProductID, "", strconv.FormatUint(*id.ProductID, 10))
		}
		if *c.SGXProductID != *id.ProductID {
			return attestation.Reject(attestation.CodeProductID, maa.ClaimSGXProductID, strconv.FormatUint(*c.SGXProductID, 10), strconv.FormatUint(*id.ProductID, 10))
		}
		if c.SGXSVN == nil {
			return attestation.Reject(attestation.CodeClaimMissing, maa.ClaimSGXSVN, "", fmt.Sprintf("at least %d", *id.MinSVN))
		}
		if *c.SGXSVN < *id.MinSVN {
			return attestation.Reject(attestation.CodeSVN, maa.ClaimSGXSVN, strconv.FormatUint(*c.SGXSVN, 10), fmt.Sprintf("at least %d", *id.MinSVN))
		}
	}
	if len(id.PolicyHash) > 0 && !contains(id.PolicyHash, c.PolicyHash) {
		return attestation.Reject(attestation.CodePolicyHash, maa.ClaimPolicyHash, q(c.PolicyHash), "one of "+list(id.PolicyHash))
	}
	if id.MaxTokenAge > 0 {
		if c.IssuedAt == nil {
			return attestation.Reject(attestation.CodeClaimMissing, maa.ClaimIssuedAt, "", "a NumericDate")
		}
		if age := now.Sub(c.IssuedAt.Time()); age > id.MaxTokenAge.D() {
			return attestation.Reject(attestation.CodeTokenTooOld, maa.ClaimIssuedAt,
				fmt.Sprintf("%s (%s ago)", c.IssuedAt.Time().UTC().Format(time.RFC3339), age.Round(time.Second)),
				fmt.Sprintf("a token at most %s old", id.MaxTokenAge.D()))
		}
	}
	return nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func q(s string) string {
	if s == "" {
		return `""`
	}
	return strconv.Quote(s)
}

func list(l []string) string { return "[" + strings.Join(l, ", ") + "]" }
