package maapolicy

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

const mrsigner = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"

const examplePolicy = `version=1.0;
// Production: no debug enclaves, only our signer.
authorizationrules {
  [type=="x-ms-sgx-is-debuggable", value==false] && [type=="x-ms-sgx-mrsigner", value=="` + mrsigner + `"] => permit();
  => deny();
};
issuancerules {
  c:[type=="x-ms-sgx-mrsigner"] => issue(type="signer", value=c.value);
  => issue(type="environment", value="ci");
};
`

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name      string
		text      string
		auth      int
		issue     int
		wantFirst string // String() of the first authorization rule's first condition, if any
	}{
		{"example", examplePolicy, 2, 2, `[type=="x-ms-sgx-is-debuggable", value==false]`},
		{"default", DefaultSGX, 1, 9, ""},
		{"compact", `version=1.0;authorizationrules{=>permit();};`, 1, 0, ""},
		{"keywords any case", `VERSION=1.0; AuthorizationRules { c:[Type=="a", Value==TRUE] => Permit(); }; IssuanceRules { };`, 1, 0, `c:[type=="a", value==true]`},
		{"issuance first", `version=1.2; issuancerules { => issue(type="x", value=1); }; authorizationrules { => deny(); };`, 1, 1, ""},
		{"not equal and ints", "version=1.1;\r\nauthorizationrules {\r\n [type==\"x-ms-sgx-svn\", value!=-3] => permit(); };", 1, 0, `[type=="x-ms-sgx-svn", value!=-3]`},
		{"escapes", `version=1.0; authorizationrules { [type=="a\"b\\c"] => permit(); };`, 1, 0, `[type=="a\"b\\c"]`},
		{"comment at end without newline", "version=1.0; authorizationrules { => permit(); }; // done", 1, 0, ""},
		{"byte order mark", "\uFEFFversion=1.0; authorizationrules { => permit(); };", 1, 0, ""},
		{"empty sections", `version=1.0; authorizationrules { }; issuancerules { };`, 0, 0, ""},
		{"unicode in strings", `version=1.0; authorizationrules { [type=="ü", value=="日本"] => permit(); };`, 1, 0, `[type=="ü", value=="日本"]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse(tt.text)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(p.Authorization) != tt.auth || len(p.Issuance) != tt.issue {
				t.Fatalf("got %d authorization and %d issuance rules, want %d and %d", len(p.Authorization), len(p.Issuance), tt.auth, tt.issue)
			}
			if tt.wantFirst != "" {
				if got := p.Authorization[0].Conditions[0].String(); got != tt.wantFirst {
					t.Errorf("first condition %s, want %s", got, tt.wantFirst)
				}
			}
			if p.Text() != tt.text {
				t.Errorf("Text() does not return the parsed text")
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name string
		text string
		pos  string // line:col
		msg  string // substring of the message
	}{
		{"empty", "", "1:1", `expected "version", found end of policy`},
		{"no version", "authorizationrules { };", "1:1", `expected "version"`},
		{"bad version", "version=2.0;", "1:9", "policy version 2.0 is not supported: expected one of 1.0, 1.1, 1.2"},
		{"version not a number", `version="1.0";`, "1:9", "expected a policy version such as 1.0"},
		{"no semicolon after version", "version=1.0 authorizationrules {};", "1:13", `expected ";", found "authorizationrules"`},
		{"no authorization section", "version=1.0; issuancerules { };", "1:32", `expected an "authorizationrules" section`},
		{"two authorization sections", "version=1.0; authorizationrules { }; authorizationrules { };", "1:38", "a second authorizationrules section"},
		{"configurationrules", "version=1.2;\nconfigurationrules { };", "2:1", "configurationrules are not supported"},
		{"unknown section", "version=1.0; rules { };", "1:14", `expected "authorizationrules", "issuancerules" or the end of the policy, found "rules"`},
		{"missing semicolon after section", "version=1.0; authorizationrules { => permit(); }", "1:49", `expected ";", found end of policy`},
		{"unclosed section", "version=1.0;\nauthorizationrules {\n  => permit();\n", "4:1", `expected a rule or "}", found end of policy`},
		{"missing arrow", "version=1.0;\nauthorizationrules {\n  [type==\"a\"] permit();\n};", "3:15", `expected "&&" or "=>", found "permit"`},
		{"single ampersand", `version=1.0; authorizationrules { [type=="a"] & [type=="b"] => permit(); };`, "1:47", `conditions are joined with "&&"`},
		{"or", `version=1.0; authorizationrules { [type=="a"] || [type=="b"] => permit(); };`, "1:47", `only "&&" is supported`},
		{"negation", `version=1.0; authorizationrules { ![type=="a"] => permit(); };`, "1:35", `expected "!=" in a value comparison`},
		{"unknown action", `version=1.0; authorizationrules { => allow(); };`, "1:38", `expected "permit" or "deny", found "allow"`},
		{"issue in authorization", `version=1.0; authorizationrules { => issue(type="a", value=1); };`, "1:38", "issue() belongs in issuancerules"},
		{"permit in issuance", `version=1.0; authorizationrules { }; issuancerules { => permit(); };`, "1:57", "permit() belongs in authorizationrules"},
		{"missing parens", `version=1.0; authorizationrules { => permit; };`, "1:44", `expected "(", found ";"`},
		{"issuer property", `version=1.0; authorizationrules { [issuer=="AttestationService"] => permit(); };`, "1:36", `expected "type" (the only claim properties supported are type and value)`},
		{"single equals in condition", `version=1.0; authorizationrules { [type="a"] => permit(); };`, "1:40", `expected "==", found "="`},
		{"type not a string", `version=1.0; authorizationrules { [type==a] => permit(); };`, "1:42", `expected a claim type as a string, found "a"`},
		{"unclosed bracket", `version=1.0; authorizationrules { [type=="a" => permit(); };`, "1:46", `expected "," or "]", found "=>"`},
		{"value missing", `version=1.0; authorizationrules { [type=="a", value==] => permit(); };`, "1:54", "expected a value: a string, true, false or an integer"},
		{"value ident", `version=1.0; authorizationrules { [type=="a", value==yes] => permit(); };`, "1:54", `expected a value: a string, true, false or an integer, found "yes"`},
		{"value less than", `version=1.0; authorizationrules { [type=="a", value<3] => permit(); };`, "1:52", `unexpected character '<'`},
		{"float value", `version=1.0; authorizationrules { [type=="a", value==1.5] => permit(); };`, "1:54", "number 1.5: expected an integer"},
		{"huge integer", `version=1.0; authorizationrules { [type=="a", value==99999999999999999999] => permit(); };`, "1:54", "out of range"},
		{"malformed number", `version=1.0; authorizationrules { [type=="a", value==12ab] => permit(); };`, "1:54", "malformed number"},
		{"unterminated string", "version=1.0; authorizationrules { [type==\"abc] => permit(); };", "1:42", "unterminated string"},
		{"newline in string", "version=1.0; authorizationrules { [type==\"ab\ncd\"] => permit(); };", "1:45", "unterminated string: expected a closing \" before the end of the line"},
		{"bad escape", `version=1.0; authorizationrules { [type=="a\n"] => permit(); };`, "1:44", `unknown escape \n`},
		{"control character", "version=1.0; authorizationrules { [type==\"a\x01\"] => permit(); };", "1:44", "control character"},
		{"invalid utf-8", "version=1.0;\n  \xff", "2:3", "invalid UTF-8"},
		{"single slash", "version=1.0; / comment", "1:14", `comments start with "//"`},
		{"unbound name", `version=1.0; authorizationrules { }; issuancerules { [type=="a"] => issue(type="b", value=c.value); };`, "1:91", `"c" is not bound in this rule`},
		{"rebound name", `version=1.0; authorizationrules { c:[type=="a"] && c:[type=="b"] => permit(); };`, "1:52", `name "c" is already bound`},
		{"keyword as name", `version=1.0; authorizationrules { type:[type=="a"] => permit(); };`, "1:35", `"type" is a keyword`},
		{"issue reserved x-ms", `version=1.0; authorizationrules { }; issuancerules { => issue(type="x-ms-sgx-is-debuggable", value=false); };`, "1:68", `cannot issue claim "x-ms-sgx-is-debuggable"`},
		{"issue reserved sim", `version=1.0; authorizationrules { }; issuancerules { => issue(type="X-Countersign-Sim", value=false); };`, "1:68", "x-countersign-* claims are set by the service"},
		{"issue reserved iss", `version=1.0; authorizationrules { }; issuancerules { => issue(type="iss", value="evil"); };`, "1:68", "registered token claim"},
		{"issue empty name", `version=1.0; authorizationrules { }; issuancerules { => issue(type="", value=1); };`, "1:68", "a claim needs a name"},
		{"issue without value", `version=1.0; authorizationrules { }; issuancerules { => issue(type="a"); };`, "1:71", `expected ",", found ")"`},
		{"issue value property", `version=1.0; authorizationrules { }; issuancerules { c:[type=="a"] => issue(type="b", value=c.type); };`, "1:95", `expected "value", found "type"`},
		{"issue bad value", `version=1.0; authorizationrules { }; issuancerules { => issue(type="b", value=); };`, "1:79", "expected c.value (with c bound by a condition) or a literal value"},
		{"trailing garbage", `version=1.0; authorizationrules { }; }`, "1:38", `expected "authorizationrules", "issuancerules" or the end of the policy, found "}"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.text)
			if err == nil {
				t.Fatal("Parse accepted it")
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is a %T, want *ParseError", err, err)
			}
			if pe.Pos.String() != tt.pos {
				t.Errorf("position %s, want %s (error: %v)", pe.Pos, tt.pos, err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not contain %q", err, tt.msg)
			}
		})
	}
}

func TestParseLimits(t *testing.T) {
	big := "version=1.0; authorizationrules { => permit(); };" + strings.Repeat(" ", MaxPolicyBytes)
	if _, err := Parse(big); err == nil || !strings.Contains(err.Error(), "at most 65536 allowed") {
		t.Errorf("oversized policy: %v", err)
	}
	many := "version=1.0; authorizationrules {" + strings.Repeat("=> permit();\n", MaxRules+1) + "};"
	if _, err := Parse(many); err == nil || !strings.Contains(err.Error(), "more than 256 rules") {
		t.Errorf("too many rules: %v", err)
	} else if pe := err.(*ParseError); pe.Pos.Line != MaxRules+1 {
		t.Errorf("too many rules reported at line %d, want %d", pe.Pos.Line, MaxRules+1)
	}
	exactly := "version=1.0; authorizationrules {" + strings.Repeat("=> permit();\n", MaxRules) + "};"
	if _, err := Parse(exactly); err != nil {
		t.Errorf("%d rules: %v", MaxRules, err)
	}
	conds := strings.TrimSuffix(strings.Repeat(`[type=="a"] && `, MaxConditionsPerRule+1), " && ")
	if _, err := Parse("version=1.0; authorizationrules {" + conds + " => permit(); };"); err == nil || !strings.Contains(err.Error(), "more than 32 conditions") {
		t.Errorf("too many conditions: %v", err)
	}
}

func sgxClaims(debug bool) Claims {
	return Claims{
		"x-ms-sgx-is-debuggable": debug,
		"x-ms-sgx-mrsigner":      mrsigner,
		"x-ms-sgx-mrenclave":     strings.Repeat("ab", 32),
		"x-ms-sgx-product-id":    uint16(7),
		"x-ms-sgx-svn":           uint64(3),
		"x-ms-attestation-type":  "sgx",
		"x-ms-sgx-ehd":           "ZGF0YQ",
		"x-ms-sgx-collateral":    map[string]any{"quotehash": "00"},
	}
}

func TestAuthorize(t *testing.T) {
	example, err := Parse(examplePolicy)
	if err != nil {
		t.Fatal(err)
	}
	permitOnly := must(t, `version=1.0; authorizationrules {
  [type=="x-ms-sgx-is-debuggable", value==false] => permit();
  [type=="x-ms-sgx-svn", value==3] && [type=="x-ms-sgx-product-id", value!=7] => permit();
};`)
	denyFirst := must(t, `version=1.0; authorizationrules {
  c:[type=="x-ms-sgx-svn", value==3] => deny();
  => permit();
};`)
	noRules := must(t, `version=1.0; authorizationrules { };`)
	tests := []struct {
		name     string
		p        *Policy
		claims   Claims
		permit   bool
		rule     int
		failures []Failure
		reason   string
	}{
		{"example permits production", example, sgxClaims(false), true, 1, nil, "permitted by authorization rule 1 at 4:3"},
		{"example denies debug", example, sgxClaims(true), false, 2, nil, "denied by authorization rule 2 at 5:3, which has no conditions"},
		{"example denies other signer", example, func() Claims { c := sgxClaims(false); c["x-ms-sgx-mrsigner"] = "00"; return c }(), false, 2, nil, "denied by authorization rule 2"},
		{"default permits", must(t, DefaultSGX), sgxClaims(true), true, 1, nil, "permitted by authorization rule 1"},
		{"no match lists each permit rule's failure", permitOnly, sgxClaims(true), false, 0, []Failure{
			{Claim: "x-ms-sgx-is-debuggable", Expected: "== false", Actual: "true", Present: true},
			{Claim: "x-ms-sgx-product-id", Expected: "!= 7", Actual: "7", Present: true},
		}, "no authorization rule permits the evidence: x-ms-sgx-is-debuggable is true (expected == false); x-ms-sgx-product-id is 7 (expected != 7)"},
		{"absent claim", permitOnly, Claims{"x-ms-sgx-svn": 3.0}, false, 0, []Failure{
			{Claim: "x-ms-sgx-is-debuggable", Expected: "== false"},
			{Claim: "x-ms-sgx-product-id", Expected: "!= 7"},
		}, "x-ms-sgx-is-debuggable is absent (expected == false)"},
		{"second permit rule with float and json numbers", permitOnly, Claims{"x-ms-sgx-is-debuggable": "false", "x-ms-sgx-svn": json.Number("3"), "x-ms-sgx-product-id": 8.0}, true, 2, nil, "permitted by authorization rule 2 at 3:3"},
		{"string false is not boolean false", permitOnly, Claims{"x-ms-sgx-is-debuggable": "false"}, false, 0, []Failure{
			{Claim: "x-ms-sgx-is-debuggable", Expected: "== false", Actual: "false", Present: true},
			{Claim: "x-ms-sgx-svn", Expected: "== 3"},
		}, ""},
		{"deny rule matched names its claims", denyFirst, sgxClaims(false), false, 1, []Failure{
			{Claim: "x-ms-sgx-svn", Expected: "== 3", Actual: "3", Present: true},
		}, "denied by authorization rule 1 at 2:3, which matched: x-ms-sgx-svn is 3 (expected == 3)"},
		{"deny rule not matched", denyFirst, Claims{"x-ms-sgx-svn": int64(4)}, true, 2, nil, ""},
		{"no rules denies", noRules, sgxClaims(false), false, 0, nil, "the policy has no permit() rule"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.p.Authorize(tt.claims)
			if d.Permit != tt.permit || d.Rule != tt.rule {
				t.Errorf("permit=%v rule=%d, want permit=%v rule=%d (%s)", d.Permit, d.Rule, tt.permit, tt.rule, d.Reason())
			}
			if !reflect.DeepEqual(d.Failures, tt.failures) {
				t.Errorf("failures %+v, want %+v", d.Failures, tt.failures)
			}
			if !strings.Contains(d.Reason(), tt.reason) {
				t.Errorf("reason %q does not contain %q", d.Reason(), tt.reason)
			}
		})
	}
}

func TestIssue(t *testing.T) {
	claims := sgxClaims(true)
	got := must(t, DefaultSGX).Issue(claims)
	want := map[string]any{
		"is-debuggable":             true,
		"sgx-mrsigner":              claims["x-ms-sgx-mrsigner"],
		"sgx-mrenclave":             claims["x-ms-sgx-mrenclave"],
		"product-id":                uint16(7),
		"svn":                       uint64(3),
		"tee":                       "sgx",
		"maa-ehd":                   "ZGF0YQ",
		"aas-ehd":                   "ZGF0YQ",
		"maa-attestationcollateral": map[string]any{"quotehash": "00"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("default policy issued\n%v\nwant\n%v", got, want)
	}

	p := must(t, `version=1.0; authorizationrules { => permit(); };
issuancerules {
  c:[type=="x-ms-sgx-mrsigner"] => issue(type="signer", value=c.value);
  => issue(type="environment", value="ci");
  [type=="x-ms-sgx-is-debuggable", value==false] => issue(type="production", value=true);
  a:[type=="x-ms-sgx-svn"] && b:[type=="x-ms-sgx-product-id", value==7] => issue(type="ids", value=b.value);
  a:[type=="x-ms-sgx-svn"] => issue(type="ids", value=a.value);
  c:[type=="absent"] => issue(type="never", value=c.value);
  => issue(type="list", value=-1);
  c:[type=="list-claim"] => issue(type="list", value=c.value);
};`)
	claims["list-claim"] = []any{"x", "y"}
	got = p.Issue(claims)
	want = map[string]any{
		"signer":      mrsigner,
		"environment": "ci",
		"ids":         []any{uint16(7), uint64(3)},
		"list":        []any{int64(-1), []any{"x", "y"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("issued\n%#v\nwant\n%#v", got, want)
	}
}

func TestHash(t *testing.T) {
	// Computed independently: printf 'version=1.0;' | base64url | sha256 | base64url.
	if got, want := Hash("version=1.0;"), "19i83kYUJrNjFhofbXgekndgH4nqXEkpmebWlG5krvs"; got != want {
		t.Errorf("Hash = %s, want %s", got, want)
	}
	p := must(t, DefaultSGX)
	if p.Hash() != Hash(DefaultSGX) {
		t.Error("Policy.Hash differs from Hash of its text")
	}
}

func TestFormatValue(t *testing.T) {
	tests := []struct {
		v    any
		want string
	}{
		{"abc", "abc"}, {true, "true"}, {uint16(7), "7"}, {int64(-2), "-2"}, {3.0, "3"}, {2.5, "2.5"},
		{json.Number("12"), "12"}, {map[string]any{"a": 1}, `{"a":1}`}, {nil, "null"},
	}
	for _, tt := range tests {
		if got := FormatValue(tt.v); got != tt.want {
			t.Errorf("FormatValue(%#v) = %q, want %q", tt.v, got, tt.want)
		}
	}
}

func must(t *testing.T, text string) *Policy {
	t.Helper()
	p, err := Parse(text)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

// FuzzParse checks that no input makes Parse panic or misreport: errors are *ParseError with a
// position inside the text, and accepted policies evaluate without panicking.
func FuzzParse(f *testing.F) {
	for _, s := range []string{examplePolicy, DefaultSGX, "", "version=1.0;", `version=1.0; authorizationrules { c:[type=="a", value!=-1] => deny(); };`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		p, err := Parse(text)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is a %T, want *ParseError", err, err)
			}
			lines := strings.Count(text, "\n") + 1
			if pe.Pos.Line < 1 || pe.Pos.Col < 1 || pe.Pos.Line > lines {
				t.Fatalf("error position %s outside a text of %d lines: %v", pe.Pos, lines, err)
			}
			if pe.Msg == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if len(p.Authorization)+len(p.Issuance) > MaxRules {
			t.Fatalf("%d rules accepted", len(p.Authorization)+len(p.Issuance))
		}
		for _, r := range p.Issuance {
			if why := reservedClaim(r.Type); why != "" {
				t.Fatalf("accepted a rule issuing %q: %s", r.Type, why)
			}
		}
		claims := sgxClaims(true)
		d := p.Authorize(claims)
		_ = d.Reason()
		_ = p.Issue(claims)
		again, err := Parse(p.Text())
		if err != nil || len(again.Authorization) != len(p.Authorization) {
			t.Fatalf("reparse differs: %v", err)
		}
	})
}
