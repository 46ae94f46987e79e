package xdsclient

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/attestation/maa"
	"github.com/countersign/countersign/attestation/policy"
	"github.com/countersign/countersign/proxy/xdsmeta"
)

var (
	mrA = strings.Repeat("a1", 32)
	mrB = strings.Repeat("b2", 32)
	mrC = strings.Repeat("c3", 32)
	sgA = strings.Repeat("5a", 32)
)

func floorEngine(t *testing.T) *policy.Engine {
	t.Helper()
	p, err := policy.Parse([]byte(`
issuers: [{url: "https://127.0.0.1:8443"}]
identities:
  back: {mrenclave: ["`+mrA+`", "`+mrB+`"], allowDebug: true}
  prod: {mrenclave: ["`+mrC+`"], maxTokenAge: 1h}
  signed: {mrsigner: ["`+sgA+`"], productId: 1, minSvn: 2, policyHash: [h1, h2]}
  other: {mrenclave: ["`+mrC+`"]}
`), "")
	if err != nil {
		t.Fatal(err)
	}
	e, err := policy.NewEngine(p, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func u64(v uint64) *uint64 { return &v }
func yes() *bool           { b := true; return &b }
func no() *bool            { b := false; return &b }

func claims(mr string, debug bool) *maa.Claims {
	return &maa.Claims{AttestationType: "sgx", SGXMREnclave: mr, SGXIsDebuggable: &debug}
}

// TestNarrowAccepts: subsets apply, and the narrowed engine refuses what the narrowing
// removed while the floor still accepts it.
func TestNarrowAccepts(t *testing.T) {
	floor := floorEngine(t)
	allowed := []string{"back", "prod", "signed"}
	e, err := Narrow(floor, allowed, xdsmeta.ClusterPolicy{Protocol: "http", Identities: []string{"back"},
		Narrow: map[string]xdsmeta.Narrowing{"back": {MREnclave: []string{strings.ToUpper(mrB)}, AllowDebug: yes()}}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if d := floor.Policy.Evaluate(claims(mrA, true), "back", now); !d.Allowed() {
		t.Fatalf("floor refuses mrA: %v", d.Rejection)
	}
	if d := e.Policy.Evaluate(claims(mrA, true), "back", now); d.Allowed() || d.Rejection.Code != "mrenclave_mismatch" {
		t.Errorf("narrowed engine: %+v, want mrenclave_mismatch", d)
	}
	if d := e.Policy.Evaluate(claims(mrB, true), "back", now); !d.Allowed() {
		t.Errorf("narrowed engine refuses mrB: %v", d.Rejection)
	}
	if e.Verifier != floor.Verifier {
		t.Error("the narrowed engine does not share the floor's verifier")
	}
	// The floor itself is untouched.
	if len(floor.Policy.Identities["back"].MREnclave) != 2 {
		t.Error("narrowing modified the floor")
	}
	// No narrowing: the floor engine itself.
	if e, err := Narrow(floor, allowed, xdsmeta.ClusterPolicy{Protocol: "tcp", Identities: []string{"back", "prod"}}); err != nil || e != floor {
		t.Errorf("plain subset: %v %v", e, err)
	}
	// Debug turned off, minSvn raised, a policy-hash subset, a shorter token age: all narrower.
	for name, c := range map[string]xdsmeta.ClusterPolicy{
		"debug off":     {Identities: []string{"back"}, Narrow: map[string]xdsmeta.Narrowing{"back": {AllowDebug: no()}}},
		"min svn up":    {Identities: []string{"signed"}, Narrow: map[string]xdsmeta.Narrowing{"signed": {MinSVN: u64(5)}}},
		"policy hash":   {Identities: []string{"signed"}, Narrow: map[string]xdsmeta.Narrowing{"signed": {PolicyHash: []string{"h2"}}}},
		"new hash pin":  {Identities: []string{"back"}, Narrow: map[string]xdsmeta.Narrowing{"back": {PolicyHash: []string{"h9"}}}},
		"token age":     {Identities: []string{"prod"}, Narrow: map[string]xdsmeta.Narrowing{"prod": {MaxTokenAge: "10m"}}},
		"new age limit": {Identities: []string{"back"}, Narrow: map[string]xdsmeta.Narrowing{"back": {MaxTokenAge: "10m"}}},
	} {
		if _, err := Narrow(floor, allowed, c); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	e, _ = Narrow(floor, allowed, xdsmeta.ClusterPolicy{Identities: []string{"back"}, Narrow: map[string]xdsmeta.Narrowing{"back": {AllowDebug: no()}}})
	if d := e.Policy.Evaluate(claims(mrA, true), "back", now); d.Allowed() || d.Rejection.Code != "debug_not_allowed" {
		t.Errorf("debug narrowed off: %+v", d)
	}
}

// TestNarrowRejectsWidening: every way of widening is refused with a reason naming the field.
func TestNarrowRejectsWidening(t *testing.T) {
	floor := floorEngine(t)
	allowed := []string{"back", "prod", "signed"}
	cases := map[string]struct {
		cp    xdsmeta.ClusterPolicy
		field string
		why   string
	}{
		"identity not allowed here": {xdsmeta.ClusterPolicy{Identities: []string{"other"}}, "identities[0]", "not among the identities"},
		"identity not in policy":    {xdsmeta.ClusterPolicy{Identities: []string{"back", "ghost"}}, "identities[1]", "not among"},
		"new mrenclave":             {xdsmeta.ClusterPolicy{Identities: []string{"back"}, Narrow: map[string]xdsmeta.Narrowing{"back": {MREnclave: []string{mrB, mrC}}}}, "narrow.back.mrenclave[1]", "not in the floor's list"},
		"debug on":                  {xdsmeta.ClusterPolicy{Identities: []string{"prod"}, Narrow: map[string]xdsmeta.Narrowing{"prod": {AllowDebug: yes()}}}, "narrow.prod.allowDebug", "refuses debuggable"},
		"min svn down":              {xdsmeta.ClusterPolicy{Identities: []string{"signed"}, Narrow: map[string]xdsmeta.Narrowing{"signed": {MinSVN: u64(1)}}}, "narrow.signed.minSvn", "below the floor's 2"},
		"mrsigner for mrenclave":    {xdsmeta.ClusterPolicy{Identities: []string{"back"}, Narrow: map[string]xdsmeta.Narrowing{"back": {MRSigner: []string{sgA}}}}, "narrow.back.mrsigner", "accept other builds"},
		"other signer":              {xdsmeta.ClusterPolicy{Identities: []string{"signed"}, Narrow: map[string]xdsmeta.Narrowing{"signed": {MRSigner: []string{mrA}}}}, "narrow.signed.mrsigner[0]", "not in the floor"},
		"policy hash outside":       {xdsmeta.ClusterPolicy{Identities: []string{"signed"}, Narrow: map[string]xdsmeta.Narrowing{"signed": {PolicyHash: []string{"h3"}}}}, "narrow.signed.policyHash[0]", "not in the floor"},
		"token age longer":          {xdsmeta.ClusterPolicy{Identities: []string{"prod"}, Narrow: map[string]xdsmeta.Narrowing{"prod": {MaxTokenAge: "2h"}}}, "narrow.prod.maxTokenAge", "longer than the floor's"},
		"attestation type":          {xdsmeta.ClusterPolicy{Identities: []string{"back"}, Narrow: map[string]xdsmeta.Narrowing{"back": {AttestationTypes: []string{"tdxvm"}}}}, "narrow.back.attestationTypes[0]", "not in the floor"},
		"narrows unnamed identity":  {xdsmeta.ClusterPolicy{Identities: []string{"back"}, Narrow: map[string]xdsmeta.Narrowing{"prod": {AllowDebug: no()}}}, "narrow.prod", "does not name"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Narrow(floor, allowed, c.cp)
			var we *WidenError
			if !errors.As(err, &we) {
				t.Fatalf("got %v, want a WidenError", err)
			}
			if we.Field != c.field || !strings.Contains(we.Reason, c.why) {
				t.Errorf("got field %q reason %q, want %q containing %q", we.Field, we.Reason, c.field, c.why)
			}
			if !strings.Contains(err.Error(), "widens the policy floor") {
				t.Errorf("message %q", err)
			}
		})
	}
}

func TestMetadataRoundTrip(t *testing.T) {
	in := xdsmeta.ClusterPolicy{Protocol: "http", Identities: []string{"back"}, Authority: "back.ns.svc",
		Narrow: map[string]xdsmeta.Narrowing{"back": {MREnclave: []string{mrA}, MinSVN: u64(3), AllowDebug: no()}}}
	a, err := xdsmeta.Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := xdsmeta.Decode(a)
	if err != nil {
		t.Fatal(err)
	}
	if out.Authority != in.Authority || *out.Narrow["back"].MinSVN != 3 || *out.Narrow["back"].AllowDebug {
		t.Errorf("round trip: %+v", out)
	}
}
