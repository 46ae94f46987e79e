// Package maapolicy parses and evaluates a documented subset of Microsoft Azure Attestation's
// policy language, enough for the local attestation service to behave like MAA for the policies
// Countersign and its users write:
//
//	version=1.0;
//	authorizationrules {
//	  [type=="x-ms-sgx-is-debuggable", value==false] && [type=="x-ms-sgx-mrsigner", value=="<hex>"] => permit();
//	  => deny();
//	};
//	issuancerules {
//	  c:[type=="x-ms-sgx-mrsigner"] => issue(type="signer", value=c.value);
//	  => issue(type="environment", value="ci");
//	};
//
// A condition is [type=="T"] (a claim of type T is present), [type=="T", value==X] or
// [type=="T", value!=X] (present with / present but without the value X), where X is a string,
// true/false or an integer; a condition may bind a name (c:[...]) for an issuance rule to copy
// the matched claim's value. Conditions are joined by &&; a rule with no condition always
// matches. Authorization rules are evaluated in order and the first matching rule decides
// (permit() or deny()); when none matches, the evidence is denied. Every issuance rule whose
// conditions match issues its claim. Keywords are case-insensitive; strings are compared
// exactly. Whitespace and newlines are free and // starts a comment to the end of the line.
//
// Not supported (and reported as errors, with the position): configurationrules, the
// aggregation functions, ||, !, other claim properties than type and value, issuer
// conditions, and issuing claims whose names MAA or Countersign reserve (JWT registered claims,
// nonce, x-ms-*, x-countersign-*).
package maapolicy

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

// Limits on policy text, so that a policy from an untrusted PUT cannot exhaust memory or time.
const (
	MaxPolicyBytes       = 64 << 10
	MaxRules             = 256 // authorization and issuance rules together
	MaxConditionsPerRule = 32
)

// Versions are the policy versions accepted in the version statement. The supported subset
// means the same in all of them.
var Versions = []string{"1.0", "1.1", "1.2"}

// Op is the comparison a condition makes.
type Op int

// Condition operators.
const (
	OpExists   Op = iota // [type=="T"]
	OpEqual              // [type=="T", value==X]
	OpNotEqual           // [type=="T", value!=X]
)

// Kind is the type of a literal value.
type Kind int

// Literal kinds.
const (
	KindString Kind = iota
	KindBool
	KindInt
)

// Value is a literal in a policy: a string, a boolean or an integer.
type Value struct {
	Kind Kind
	Str  string
	Bool bool
	Int  int64
}

// String writes v as the policy language would.
func (v Value) String() string {
	switch v.Kind {
	case KindBool:
		return strconv.FormatBool(v.Bool)
	case KindInt:
		return strconv.FormatInt(v.Int, 10)
	}
	return strconv.Quote(v.Str)
}

// JSON returns v as a Go value for a JSON claim.
func (v Value) JSON() any {
	switch v.Kind {
	case KindBool:
		return v.Bool
	case KindInt:
		return v.Int
	}
	return v.Str
}

// Condition is one [type==..., value...] clause.
type Condition struct {
	Pos     Pos
	Binding string // the name before ':', or ""
	Type    string
	Op      Op
	Value   Value // unused for OpExists
}

// String writes the condition as it would appear in a policy.
func (c Condition) String() string {
	var b strings.Builder
	if c.Binding != "" {
		b.WriteString(c.Binding + ":")
	}
	fmt.Fprintf(&b, "[type==%q", c.Type)
	switch c.Op {
	case OpEqual:
		b.WriteString(", value==" + c.Value.String())
	case OpNotEqual:
		b.WriteString(", value!=" + c.Value.String())
	}
	b.WriteString("]")
	return b.String()
}

// AuthRule is an authorization rule: conditions => permit() or deny().
type AuthRule struct {
	Pos        Pos
	Conditions []Condition
	Permit     bool
}

// IssueRule is an issuance rule: conditions => issue(type="Y", value=...). The value is either
// the value of the claim bound to From, or Literal.
type IssueRule struct {
	Pos        Pos
	Conditions []Condition
	Type       string
	From       string // binding whose claim value is issued; "" when Literal is used
	Literal    Value
}

// Policy is a parsed policy.
type Policy struct {
	Version       string
	Authorization []AuthRule
	Issuance      []IssueRule
	text          string
}

// Text returns the policy text exactly as parsed.
func (p *Policy) Text() string { return p.text }

// Hash returns the policy hash as MAA puts it in x-ms-policy-hash:
// BASE64URL(SHA256(UTF8(BASE64URL(UTF8(policy text))))), unpadded.
func (p *Policy) Hash() string { return Hash(p.text) }

// Hash computes MAA's x-ms-policy-hash of a policy text.
func Hash(text string) string {
	inner := base64.RawURLEncoding.EncodeToString([]byte(text))
	sum := sha256.Sum256([]byte(inner))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// DefaultSGX is the policy the local attestation service uses when none is configured. It has
// the effect of MAA's default SGX policy: every verified quote is permitted, debug enclaves
// included (so a relying party must check x-ms-sgx-is-debuggable itself), and the deprecated
// alias claims are issued beside the x-ms-* ones.
const DefaultSGX = `version=1.0;
authorizationrules {
    => permit();
};
issuancerules {
    c:[type=="x-ms-sgx-is-debuggable"] => issue(type="is-debuggable", value=c.value);
    c:[type=="x-ms-sgx-mrsigner"] => issue(type="sgx-mrsigner", value=c.value);
    c:[type=="x-ms-sgx-mrenclave"] => issue(type="sgx-mrenclave", value=c.value);
    c:[type=="x-ms-sgx-product-id"] => issue(type="product-id", value=c.value);
    c:[type=="x-ms-sgx-svn"] => issue(type="svn", value=c.value);
    c:[type=="x-ms-attestation-type"] => issue(type="tee", value=c.value);
    c:[type=="x-ms-sgx-ehd"] => issue(type="maa-ehd", value=c.value);
    c:[type=="x-ms-sgx-ehd"] => issue(type="aas-ehd", value=c.value);
    c:[type=="x-ms-sgx-collateral"] => issue(type="maa-attestationcollateral", value=c.value);
};
`

// reservedClaim reports why an issuance rule may not issue a claim type, or "".
func reservedClaim(t string) string {
	lt := strings.ToLower(t)
	switch lt {
	case "iss", "iat", "nbf", "exp", "jti", "aud", "sub", "nonce", "cnf":
		return "it is a registered token claim set by the service"
	}
	if strings.HasPrefix(lt, "x-ms-") {
		return "x-ms-* claims come from the evidence, not from policy"
	}
	if strings.HasPrefix(lt, "x-countersign-") {
		return "x-countersign-* claims are set by the service"
	}
	if t == "" {
		return "a claim needs a name"
	}
	return ""
}
