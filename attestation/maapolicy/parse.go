package maapolicy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Parse parses a policy. Errors are *ParseError values naming the line and column and what was
// expected there.
func Parse(text string) (*Policy, error) {
	if len(text) > MaxPolicyBytes {
		return nil, &ParseError{Pos: Pos{1, 1}, Msg: fmt.Sprintf("policy of %d bytes, at most %d allowed", len(text), MaxPolicyBytes)}
	}
	toks, err := lex(text)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks}
	pol, err := p.policy()
	if err != nil {
		return nil, err
	}
	pol.text = text
	return pol, nil
}

type parser struct {
	toks  []token
	i     int
	rules int
}

func (p *parser) peek() token { return p.toks[p.i] }

func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tEOF {
		p.i++
	}
	return t
}

func (p *parser) errAt(t token, format string, args ...any) error {
	return &ParseError{Pos: t.pos, Msg: fmt.Sprintf(format, args...)}
}

// expected reports that what was found is not what the grammar needs.
func (p *parser) expected(t token, what string) error {
	return p.errAt(t, "expected %s, found %s", what, t.describe())
}

func (p *parser) isPunct(s string) bool {
	t := p.peek()
	return t.kind == tPunct && t.text == s
}

func (p *parser) isKeyword(kw string) bool {
	t := p.peek()
	return t.kind == tIdent && strings.EqualFold(t.text, kw)
}

func (p *parser) punct(s string) error {
	if !p.isPunct(s) {
		return p.expected(p.peek(), strconv.Quote(s))
	}
	p.next()
	return nil
}

func (p *parser) keyword(kw string) error {
	if !p.isKeyword(kw) {
		return p.expected(p.peek(), strconv.Quote(kw))
	}
	p.next()
	return nil
}

// policy := "version" "=" NUMBER ";" section+ EOF
func (p *parser) policy() (*Policy, error) {
	pol := &Policy{}
	if err := p.keyword("version"); err != nil {
		return nil, err
	}
	if err := p.punct("="); err != nil {
		return nil, err
	}
	v := p.next()
	if v.kind != tNumber {
		return nil, p.expected(v, "a policy version such as 1.0")
	}
	if !slices.Contains(Versions, v.text) {
		return nil, p.errAt(v, "policy version %s is not supported: expected one of %s", v.text, strings.Join(Versions, ", "))
	}
	pol.Version = v.text
	if err := p.punct(";"); err != nil {
		return nil, err
	}
	seenAuth, seenIssue := false, false
	for {
		t := p.peek()
		switch {
		case t.kind == tEOF:
			if !seenAuth {
				return nil, p.expected(t, `an "authorizationrules" section`)
			}
			return pol, nil
		case p.isKeyword("authorizationrules"):
			if seenAuth {
				return nil, p.errAt(t, "a second authorizationrules section: expected at most one")
			}
			seenAuth = true
			p.next()
			rules, err := section(p, p.authRule)
			if err != nil {
				return nil, err
			}
			pol.Authorization = rules
		case p.isKeyword("issuancerules"):
			if seenIssue {
				return nil, p.errAt(t, "a second issuancerules section: expected at most one")
			}
			seenIssue = true
			p.next()
			rules, err := section(p, p.issueRule)
			if err != nil {
				return nil, err
			}
			pol.Issuance = rules
		case p.isKeyword("configurationrules"):
			return nil, p.errAt(t, "configurationrules are not supported by this service: expected authorizationrules or issuancerules")
		default:
			return nil, p.expected(t, `"authorizationrules", "issuancerules" or the end of the policy`)
		}
	}
}

// section := "{" rule* "}" ";"
func section[R any](p *parser, rule func() (R, error)) ([]R, error) {
	if err := p.punct("{"); err != nil {
		return nil, err
	}
	var rules []R
	for !p.isPunct("}") {
		if p.peek().kind == tEOF {
			return nil, p.expected(p.peek(), `a rule or "}"`)
		}
		p.rules++
		if p.rules > MaxRules {
			return nil, p.errAt(p.peek(), "more than %d rules: a policy may have at most %d", MaxRules, MaxRules)
		}
		r, err := rule()
		if err != nil {
			return nil, err
		}
		rules = append(rules, r)
	}
	p.next() // }
	if err := p.punct(";"); err != nil {
		return nil, err
	}
	return rules, nil
}

// conditions := (cond ("&&" cond)*)? "=>"
func (p *parser) conditions() ([]Condition, error) {
	var conds []Condition
	if p.isPunct("=>") {
		p.next()
		return nil, nil
	}
	for {
		if len(conds) == MaxConditionsPerRule {
			return nil, p.errAt(p.peek(), "more than %d conditions in one rule", MaxConditionsPerRule)
		}
		c, err := p.condition()
		if err != nil {
			return nil, err
		}
		for _, prev := range conds {
			if c.Binding != "" && prev.Binding == c.Binding {
				return nil, &ParseError{Pos: c.Pos, Msg: fmt.Sprintf("name %q is already bound in this rule: expected a new name", c.Binding)}
			}
		}
		conds = append(conds, c)
		switch {
		case p.isPunct("&&"):
			p.next()
		case p.isPunct("=>"):
			p.next()
			return conds, nil
		default:
			return nil, p.expected(p.peek(), `"&&" or "=>"`)
		}
	}
}

// cond := (IDENT ":")? "[" "type" "==" STRING ("," "value" ("=="|"!=") literal)? "]"
func (p *parser) condition() (Condition, error) {
	c := Condition{Pos: p.peek().pos}
	if t := p.peek(); t.kind == tIdent {
		if isReserved(t.text) {
			return c, p.errAt(t, "%q is a keyword: expected a name such as c before \":\", or \"[\"", t.text)
		}
		p.next()
		c.Binding = t.text
		if err := p.punct(":"); err != nil {
			return c, err
		}
	}
	if err := p.punct("["); err != nil {
		if c.Binding == "" {
			return c, p.expected(p.peek(), `a condition such as [type=="x-ms-sgx-mrsigner"], or "=>"`)
		}
		return c, err
	}
	if !p.isKeyword("type") {
		return c, p.expected(p.peek(), `"type" (the only claim properties supported are type and value)`)
	}
	p.next()
	if err := p.punct("=="); err != nil {
		return c, err
	}
	t := p.next()
	if t.kind != tString {
		return c, p.expected(t, "a claim type as a string")
	}
	c.Type = t.text
	if p.isPunct(",") {
		p.next()
		if !p.isKeyword("value") {
			return c, p.expected(p.peek(), `"value"`)
		}
		p.next()
		switch {
		case p.isPunct("=="):
			c.Op = OpEqual
		case p.isPunct("!="):
			c.Op = OpNotEqual
		default:
			return c, p.expected(p.peek(), `"==" or "!="`)
		}
		p.next()
		v, err := p.literal()
		if err != nil {
			return c, err
		}
		c.Value = v
	}
	if err := p.punct("]"); err != nil {
		if c.Op == OpExists {
			return c, p.expected(p.peek(), `"," or "]"`)
		}
		return c, err
	}
	return c, nil
}

// literal := STRING | true | false | INTEGER
func (p *parser) literal() (Value, error) {
	t := p.next()
	switch {
	case t.kind == tString:
		return Value{Kind: KindString, Str: t.text}, nil
	case t.kind == tIdent && strings.EqualFold(t.text, "true"):
		return Value{Kind: KindBool, Bool: true}, nil
	case t.kind == tIdent && strings.EqualFold(t.text, "false"):
		return Value{Kind: KindBool, Bool: false}, nil
	case t.kind == tNumber:
		if strings.Contains(t.text, ".") {
			return Value{}, p.errAt(t, "number %s: expected an integer", t.text)
		}
		n, err := strconv.ParseInt(t.text, 10, 64)
		if err != nil {
			return Value{}, p.errAt(t, "integer %s is out of range: expected a 64-bit integer", t.text)
		}
		return Value{Kind: KindInt, Int: n}, nil
	}
	return Value{}, p.expected(t, "a value: a string, true, false or an integer")
}

// authRule := conditions "=>" ("permit"|"deny") "(" ")" ";"
func (p *parser) authRule() (AuthRule, error) {
	r := AuthRule{Pos: p.peek().pos}
	conds, err := p.conditions()
	if err != nil {
		return r, err
	}
	r.Conditions = conds
	switch {
	case p.isKeyword("permit"):
		r.Permit = true
	case p.isKeyword("deny"):
		r.Permit = false
	case p.isKeyword("issue"):
		return r, p.errAt(p.peek(), "issue() belongs in issuancerules: expected permit() or deny() in authorizationrules")
	default:
		return r, p.expected(p.peek(), `"permit" or "deny"`)
	}
	p.next()
	if err := p.punct("("); err != nil {
		return r, err
	}
	if err := p.punct(")"); err != nil {
		return r, err
	}
	return r, p.punct(";")
}

// issueRule := conditions "=>" "issue" "(" "type" "=" STRING "," "value" "=" (IDENT "." "value" | literal) ")" ";"
func (p *parser) issueRule() (IssueRule, error) {
	r := IssueRule{Pos: p.peek().pos}
	conds, err := p.conditions()
	if err != nil {
		return r, err
	}
	r.Conditions = conds
	if p.isKeyword("permit") || p.isKeyword("deny") {
		return r, p.errAt(p.peek(), "%s() belongs in authorizationrules: expected issue(...) in issuancerules", strings.ToLower(p.peek().text))
	}
	if err := p.keyword("issue"); err != nil {
		return r, err
	}
	if err := p.punct("("); err != nil {
		return r, err
	}
	if err := p.keyword("type"); err != nil {
		return r, err
	}
	if err := p.punct("="); err != nil {
		return r, err
	}
	t := p.next()
	if t.kind != tString {
		return r, p.expected(t, "the issued claim's type as a string")
	}
	if why := reservedClaim(t.text); why != "" {
		return r, p.errAt(t, "cannot issue claim %q: %s; expected another name", t.text, why)
	}
	r.Type = t.text
	if err := p.punct(","); err != nil {
		return r, err
	}
	if err := p.keyword("value"); err != nil {
		return r, err
	}
	if err := p.punct("="); err != nil {
		return r, err
	}
	if t := p.peek(); t.kind == tIdent && !isReserved(t.text) {
		p.next()
		bound := false
		for _, c := range conds {
			bound = bound || c.Binding == t.text
		}
		if !bound {
			return r, p.errAt(t, "%q is not bound in this rule: expected a name bound by a condition such as %s:[type==...]", t.text, t.text)
		}
		if err := p.punct("."); err != nil {
			return r, err
		}
		if err := p.keyword("value"); err != nil {
			return r, err
		}
		r.From = t.text
	} else {
		v, err := p.literal()
		if err != nil {
			return r, p.expected(t, "c.value (with c bound by a condition) or a literal value")
		}
		r.Literal = v
	}
	if err := p.punct(")"); err != nil {
		return r, err
	}
	return r, p.punct(";")
}

var keywords = []string{"version", "authorizationrules", "issuancerules", "configurationrules", "permit", "deny", "issue", "type", "value", "true", "false"}

func isReserved(s string) bool {
	for _, k := range keywords {
		if strings.EqualFold(s, k) {
			return true
		}
	}
	return false
}
