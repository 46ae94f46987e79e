package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/fuzzcorpus"
)

const hexA = "abababababababababababababababababababababababababababababababab"

const validDoc = `
issuers:
  - url: https://attest.example:8443
    caFile: ca.pem
clockSkew: 30s
maxStaleness: 12h
identities:
  records-api:
    mrsigner: ["` + hexA + `"]
    productId: 1
    minSvn: 2
    allowDebug: false
    attestationTypes: [sgx]
  model:
    mrenclave: "` + hexA + `"
    policyHash: abc
    maxTokenAge: 1h
`

func TestParseValid(t *testing.T) {
	p, err := Parse([]byte(validDoc), "/etc/countersign")
	if err != nil {
		t.Fatal(err)
	}
	if p.Issuers[0].CAFile != "/etc/countersign/ca.pem" {
		t.Errorf("caFile not resolved against the policy's folder: %s", p.Issuers[0].CAFile)
	}
	if p.ClockSkew.D() != 30*time.Second || p.MaxStaleness.D() != 12*time.Hour {
		t.Errorf("durations: %v %v", p.ClockSkew.D(), p.MaxStaleness.D())
	}
	m := p.Identities["model"]
	if len(m.MREnclave) != 1 || len(m.AttestationTypes) != 1 || m.AttestationTypes[0] != "sgx" || m.MaxTokenAge.D() != time.Hour {
		t.Errorf("model identity: %+v", m)
	}
	cfg := p.TokenConfig()
	if cfg.ClockSkew != 30*time.Second || cfg.Issuers[0].URL != "https://attest.example:8443" {
		t.Errorf("token config: %+v", cfg)
	}
}

func TestParseDefaults(t *testing.T) {
	p, err := Parse([]byte("issuers: [{url: 'https://a.example'}]\nidentities: {x: {mrenclave: ["+hexA+"]}}"), "")
	if err != nil {
		t.Fatal(err)
	}
	if p.ClockSkew.D() != time.Minute || p.MaxStaleness.D() != 24*time.Hour || p.Identities["x"].AllowDebug {
		t.Errorf("defaults: skew %v staleness %v debug %v", p.ClockSkew.D(), p.MaxStaleness.D(), p.Identities["x"].AllowDebug)
	}
}

// TestParseErrorsNameTheField: each invalid policy is refused with an error naming the field.
func TestParseErrorsNameTheField(t *testing.T) {
	id := func(body string) string {
		return "issuers: [{url: 'https://a.example'}]\nidentities:\n  svc:\n" + body
	}
	cases := map[string]struct{ doc, want string }{
		"no issuers":             {"identities: {x: {mrenclave: [" + hexA + "]}}", "issuers: at least one"},
		"http issuer":            {"issuers: [{url: 'http://a.example'}]\nidentities: {x: {mrenclave: [" + hexA + "]}}", "issuers[0].url"},
		"trailing slash":         {"issuers: [{url: 'https://a.example/'}]\nidentities: {x: {mrenclave: [" + hexA + "]}}", "issuers[0].url"},
		"duplicate issuer":       {"issuers: [{url: 'https://a.example'},{url: 'https://a.example'}]\nidentities: {x: {mrenclave: [" + hexA + "]}}", "issuers[1].url"},
		"no identities":          {"issuers: [{url: 'https://a.example'}]", "identities: at least one"},
		"unknown field":          {id("    mrsigners: [" + hexA + "]\n"), "unknown field"},
		"typo at top":            {"issuer: []", "unknown field"},
		"both measurements":      {id("    mrenclave: [" + hexA + "]\n    mrsigner: [" + hexA + "]\n    productId: 1\n    minSvn: 1\n"), "identities.svc.mrenclave: set together with mrsigner"},
		"no measurement":         {id("    allowDebug: true\n"), "identities.svc.mrenclave: neither"},
		"mrsigner no productId":  {id("    mrsigner: [" + hexA + "]\n    minSvn: 1\n"), "identities.svc.productId: required"},
		"mrsigner no minSvn":     {id("    mrsigner: [" + hexA + "]\n    productId: 1\n"), "identities.svc.minSvn: required"},
		"short hex":              {id("    mrenclave: [abcd]\n"), "identities.svc.mrenclave[0]"},
		"productId too big":      {id("    mrsigner: [" + hexA + "]\n    productId: 70000\n    minSvn: 1\n"), "identities.svc.productId: 70000"},
		"productId on mrenclave": {id("    mrenclave: [" + hexA + "]\n    productId: 1\n"), "identities.svc.productId"},
		"bad type":               {id("    mrenclave: [" + hexA + "]\n    attestationTypes: [tpm]\n"), "identities.svc.attestationTypes[0]"},
		"bad duration":           {"clockSkew: soon\n" + id("    mrenclave: ["+hexA+"]\n"), "duration"},
		"skew too large":         {"clockSkew: 1h\n" + id("    mrenclave: ["+hexA+"]\n"), "clockSkew"},
		"bad identity name":      {"issuers: [{url: 'https://a.example'}]\nidentities: {'Bad Name': {mrenclave: [" + hexA + "]}}", "identities.Bad Name"},
		"productId negative":     {id("    mrsigner: [" + hexA + "]\n    productId: -1\n    minSvn: 1\n"), "productId"},
		"unquoted digits":        {id("    mrenclave: [5151515151515151515151515151515151515151515151515151515151515151]\n"), "quote values"},
		"not yaml":               {"{{{", "not a valid policy"},
		"too large":              {strings.Repeat("#", MaxPolicySize+1), "at most"},
	}
	for name, tc := range cases {
		_, err := Parse([]byte(tc.doc), "")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, tc.want)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(path, []byte(validDoc), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if p.Issuers[0].CAFile != filepath.Join(dir, "ca.pem") {
		t.Errorf("caFile %s", p.Issuers[0].CAFile)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("missing file accepted")
	}
	if err := os.WriteFile(path, []byte("issuers: 5"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("error does not name the file: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	seeds := [][]any{
		{[]byte(validDoc)},
		{[]byte("issuers: [{url: 'https://a.example'}]\nidentities: {x: {mrenclave: [" + hexA + "]}}")},
		{[]byte("identities: {x: {mrsigner: " + hexA + ", productId: 1, minSvn: 0}}")},
		{[]byte("clockSkew: 5m\nmaxStaleness: 1h")},
		{[]byte("issuers: {url: x}")}, {[]byte("- a\n- b")}, {[]byte("&a [*a, *a]")}, {[]byte("")},
	}
	if *fuzzcorpus.Update {
		if err := fuzzcorpus.Write("FuzzParse", seeds...); err != nil {
			f.Fatal(err)
		}
	}
	for _, s := range seeds {
		f.Add(s[0].([]byte))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b, "")
		if err != nil {
			return
		}
		// A policy that parses is valid: re-validating it changes nothing and every identity
		// pins a measurement.
		if err := p.Validate(); err != nil {
			t.Fatalf("parsed policy fails validation: %v", err)
		}
		for name, id := range p.Identities {
			if len(id.mrenclave) == 0 && len(id.mrsigner) == 0 {
				t.Fatalf("identity %s pins no measurement", name)
			}
		}
	})
}
