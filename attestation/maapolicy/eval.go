package maapolicy

import (
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// Claims are the incoming claims a policy is evaluated over: claim type to value. Values are
// what encoding/json produces or what the service builds: string, bool, integers of any Go
// kind, float64, json.Number, maps and slices.
type Claims map[string]any

// Failure names a claim that made evidence fail a rule.
type Failure struct {
	Claim    string // claim type
	Expected string // what the rule wanted: "present", "== false", `!= "abc"`
	Actual   string // the evidence's value as text; "" when absent
	Present  bool   // whether the evidence has the claim at all
}

func (f Failure) String() string {
	if !f.Present {
		return fmt.Sprintf("%s is absent (expected %s)", f.Claim, f.Expected)
	}
	return fmt.Sprintf("%s is %s (expected %s)", f.Claim, f.Actual, f.Expected)
}

// Decision is the result of the authorization rules.
type Decision struct {
	Permit bool
	// Rule is the 1-based index of the authorization rule that decided, 0 when none matched.
	Rule int
	// Pos is where that rule starts in the policy text.
	Pos Pos
	// Failures explain a denial: for a deny() rule that matched, the claims it matched on; when
	// no rule matched, for each permit() rule the first condition the evidence failed.
	Failures []Failure
}

// Reason is one sentence saying why the evidence was permitted or denied.
func (d Decision) Reason() string {
	switch {
	case d.Permit:
		return fmt.Sprintf("permitted by authorization rule %d at %s", d.Rule, d.Pos)
	case d.Rule > 0:
		if len(d.Failures) == 0 {
			return fmt.Sprintf("denied by authorization rule %d at %s, which has no conditions", d.Rule, d.Pos)
		}
		return fmt.Sprintf("denied by authorization rule %d at %s, which matched: %s", d.Rule, d.Pos, joinFailures(d.Failures))
	case len(d.Failures) == 0:
		return "no authorization rule permits the evidence: the policy has no permit() rule"
	}
	return "no authorization rule permits the evidence: " + joinFailures(d.Failures)
}

func joinFailures(fs []Failure) string {
	parts := make([]string, len(fs))
	for i, f := range fs {
		parts[i] = f.String()
	}
	return strings.Join(parts, "; ")
}

// Authorize runs the authorization rules over the incoming claims: the first rule whose
// conditions all hold decides; when none holds, the evidence is denied.
func (p *Policy) Authorize(claims Claims) Decision {
	var misses []Failure
	for i, r := range p.Authorization {
		failed, ok := firstFailure(r.Conditions, claims)
		if ok {
			d := Decision{Permit: r.Permit, Rule: i + 1, Pos: r.Pos}
			if !r.Permit {
				for _, c := range r.Conditions {
					d.Failures = append(d.Failures, describe(c, claims))
				}
			}
			return d
		}
		if r.Permit {
			misses = append(misses, describe(failed, claims))
		}
	}
	return Decision{Failures: misses}
}

// Issue runs the issuance rules over the incoming claims and returns the claims they issue.
// When several rules issue the same claim type, its values are collected into an array in rule
// order, as MAA does for multi-valued claims.
func (p *Policy) Issue(claims Claims) map[string]any {
	out := map[string]any{}
	for _, r := range p.Issuance {
		if _, ok := firstFailure(r.Conditions, claims); !ok {
			continue
		}
		var v any
		if r.From != "" {
			for _, c := range r.Conditions {
				if c.Binding == r.From {
					v = claims[c.Type]
				}
			}
		} else {
			v = r.Literal.JSON()
		}
		switch prev, ok := out[r.Type]; {
		case !ok:
			out[r.Type] = v
		case isMulti(prev):
			out[r.Type] = append(prev.(multi), v)
		default:
			out[r.Type] = multi{prev, v}
		}
	}
	for k, v := range out {
		if m, ok := v.(multi); ok {
			out[k] = []any(m)
		}
	}
	return out
}

// multi marks an array built by Issue, so that a claim whose value is itself an array is not
// mistaken for several values.
type multi []any

func isMulti(v any) bool { _, ok := v.(multi); return ok }

// firstFailure returns the first condition the claims do not satisfy, or ok when all hold.
func firstFailure(conds []Condition, claims Claims) (Condition, bool) {
	for _, c := range conds {
		if !holds(c, claims) {
			return c, false
		}
	}
	return Condition{}, true
}

func holds(c Condition, claims Claims) bool {
	v, ok := claims[c.Type]
	if !ok {
		return false
	}
	switch c.Op {
	case OpEqual:
		return equal(c.Value, v)
	case OpNotEqual:
		return !equal(c.Value, v)
	}
	return true
}

func describe(c Condition, claims Claims) Failure {
	f := Failure{Claim: c.Type}
	switch c.Op {
	case OpExists:
		f.Expected = "present"
	case OpEqual:
		f.Expected = "== " + c.Value.String()
	case OpNotEqual:
		f.Expected = "!= " + c.Value.String()
	}
	if v, ok := claims[c.Type]; ok {
		f.Present = true
		f.Actual = FormatValue(v)
	}
	return f
}

// FormatValue writes a claim value as text: strings as they are, booleans and numbers as
// literals, anything else as compact JSON.
func FormatValue(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	case json.Number:
		return x.String()
	}
	if n, ok := asInt(v); ok {
		return n.String()
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	return string(b)
}

// equal compares a literal to a claim value of the same kind; values of another kind never
// equal (the string "true" is not the boolean true).
func equal(lit Value, v any) bool {
	switch lit.Kind {
	case KindString:
		s, ok := v.(string)
		return ok && s == lit.Str
	case KindBool:
		b, ok := v.(bool)
		return ok && b == lit.Bool
	case KindInt:
		n, ok := asInt(v)
		return ok && n.Cmp(big.NewInt(lit.Int)) == 0
	}
	return false
}

// asInt converts an integral claim value of any numeric Go type.
func asInt(v any) (*big.Int, bool) {
	switch x := v.(type) {
	case int:
		return big.NewInt(int64(x)), true
	case int8:
		return big.NewInt(int64(x)), true
	case int16:
		return big.NewInt(int64(x)), true
	case int32:
		return big.NewInt(int64(x)), true
	case int64:
		return big.NewInt(x), true
	case uint:
		return new(big.Int).SetUint64(uint64(x)), true
	case uint8:
		return big.NewInt(int64(x)), true
	case uint16:
		return big.NewInt(int64(x)), true
	case uint32:
		return big.NewInt(int64(x)), true
	case uint64:
		return new(big.Int).SetUint64(x), true
	case float64:
		if x != math.Trunc(x) || math.IsInf(x, 0) {
			return nil, false
		}
		n, _ := big.NewFloat(x).Int(nil)
		return n, true
	case json.Number:
		n, ok := new(big.Int).SetString(x.String(), 10)
		if ok {
			return n, true
		}
		f, err := x.Float64()
		if err != nil {
			return nil, false
		}
		return asInt(f)
	}
	return nil, false
}
