// Package policy decides whether a verified attestation token satisfies an identity: MRENCLAVE,
// or MRSIGNER + product ID + minimum SVN; debug allowed or not; attestation types; an optional
// policy-hash pin; a maximum token age. Policies are YAML files (docs/policy.md). Every decision
// carries a reason code and a sentence naming the claim, the value seen and what was expected.
package policy

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/countersign/countersign/internal/strictdecode"

	"github.com/countersign/countersign/attestation/token"
)

// MaxPolicySize bounds a policy file.
const MaxPolicySize = 1 << 20

// Policy is a policy file.
type Policy struct {
	// Issuers are the attestation services whose tokens are accepted.
	Issuers []Issuer `json:"issuers"`
	// ClockSkew is the tolerance on exp, nbf and iat (default 60s).
	ClockSkew Duration `json:"clockSkew,omitempty"`
	// MaxStaleness is how long the last good key set may be used when /certs fails (default 24h).
	MaxStaleness Duration `json:"maxStaleness,omitempty"`
	// Identities are the named enclave identities.
	Identities map[string]*Identity `json:"identities"`
}

// Issuer is a trusted attestation service.
type Issuer struct {
	// URL equals the token's iss byte for byte; keys come from {url}/certs.
	URL string `json:"url"`
	// CAFile optionally names PEM roots for the issuer's TLS endpoint. A relative path is
	// relative to the policy file.
	CAFile string `json:"caFile,omitempty"`
}

// Identity is what an enclave must prove to be known by the identity's name.
type Identity struct {
	// MREnclave pins exact enclave builds (64 hex digits each). Exclusive with MRSigner.
	MREnclave StringList `json:"mrenclave,omitempty"`
	// MRSigner pins the signing key (64 hex digits each); requires ProductID and MinSVN.
	MRSigner StringList `json:"mrsigner,omitempty"`
	// ProductID is the ISV product ID the enclave must have (with MRSigner).
	ProductID *uint64 `json:"productId,omitempty"`
	// MinSVN is the lowest ISV security version accepted (with MRSigner).
	MinSVN *uint64 `json:"minSvn,omitempty"`
	// AllowDebug admits debuggable enclaves (and so simulated ones). Default false.
	AllowDebug bool `json:"allowDebug,omitempty"`
	// AttestationTypes accepted (x-ms-attestation-type); default [sgx].
	AttestationTypes StringList `json:"attestationTypes,omitempty"`
	// PolicyHash optionally pins x-ms-policy-hash (the attestation policy the service applied).
	PolicyHash StringList `json:"policyHash,omitempty"`
	// MaxTokenAge optionally refuses tokens issued longer ago than this, even before exp.
	MaxTokenAge Duration `json:"maxTokenAge,omitempty"`

	mrenclave map[string]bool
	mrsigner  map[string]bool
}

// Duration is a time.Duration written as a Go duration string ("60s", "24h").
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalJSON accepts a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("expected a duration string such as \"60s\" or \"24h\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("expected a duration such as \"60s\" or \"24h\", got %q", s)
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes a duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// StringList is a list of strings that may be written as a single string.
type StringList []string

// UnmarshalJSON accepts a string or a list of strings.
func (l *StringList) UnmarshalJSON(b []byte) error {
	if bytes.HasPrefix(bytes.TrimSpace(b), []byte(`"`)) {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*l = StringList{s}
		return nil
	}
	var ss []string
	if err := json.Unmarshal(b, &ss); err != nil {
		return fmt.Errorf("expected a string or a list of strings, got %s (quote values in YAML: 64 unquoted digits read as a number)", b)
	}
	*l = ss
	return nil
}

// Load reads and validates a policy file.
func Load(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p, err := Parse(b, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", path, err)
	}
	return p, nil
}

// Parse parses and validates a policy. baseDir resolves relative caFile paths.
func Parse(b []byte, baseDir string) (*Policy, error) {
	if len(b) > MaxPolicySize {
		return nil, fmt.Errorf("%d bytes, at most %d allowed", len(b), MaxPolicySize)
	}
	var p Policy
	if err := strictdecode.YAML(b, &p); err != nil {
		return nil, fmt.Errorf("not a valid policy document: %w", err)
	}
	for i := range p.Issuers {
		if f := p.Issuers[i].CAFile; f != "" && !filepath.IsAbs(f) && baseDir != "" {
			p.Issuers[i].CAFile = filepath.Join(baseDir, f)
		}
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

var (
	identityName = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`)
	knownTypes   = map[string]bool{"sgx": true, "sevsnpvm": true, "tdxvm": true}
)

// Validate checks the policy and fills defaults. Errors name the field.
func (p *Policy) Validate() error {
	var errs []error
	if len(p.Issuers) == 0 {
		errs = append(errs, errors.New("issuers: at least one trusted attestation service is required"))
	}
	seen := map[string]bool{}
	for i, is := range p.Issuers {
		if err := token.ValidateIssuerURL(is.URL); err != nil {
			errs = append(errs, fmt.Errorf("issuers[%d].url: %w", i, err))
		}
		if seen[is.URL] {
			errs = append(errs, fmt.Errorf("issuers[%d].url: %q is listed twice", i, is.URL))
		}
		seen[is.URL] = true
	}
	if p.ClockSkew == 0 {
		p.ClockSkew = Duration(token.DefaultClockSkew)
	}
	if p.ClockSkew.D() > 10*time.Minute {
		errs = append(errs, fmt.Errorf("clockSkew: %s, expected at most 10m", p.ClockSkew.D()))
	}
	if p.MaxStaleness == 0 {
		p.MaxStaleness = Duration(token.DefaultMaxStaleness)
	}
	if len(p.Identities) == 0 {
		errs = append(errs, errors.New("identities: at least one identity is required"))
	}
	for _, name := range p.IdentityNames() {
		if err := p.Identities[name].validate(name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (id *Identity) validate(name string) error {
	f := func(field, format string, args ...any) error {
		return fmt.Errorf("identities.%s.%s: %s", name, field, fmt.Sprintf(format, args...))
	}
	if !identityName.MatchString(name) {
		return fmt.Errorf("identities.%s: name must be lowercase letters, digits, '.', '_' or '-' (at most 63)", name)
	}
	if id == nil {
		return fmt.Errorf("identities.%s: empty identity; expected mrenclave or mrsigner", name)
	}
	var errs []error
	hexSet := func(field string, l StringList) map[string]bool {
		m := map[string]bool{}
		for i, s := range l {
			b, err := hex.DecodeString(s)
			if err != nil || len(b) != 32 {
				errs = append(errs, f(fmt.Sprintf("%s[%d]", field, i), "%q is not 64 hex digits", s))
				continue
			}
			m[strings.ToLower(s)] = true
		}
		return m
	}
	switch {
	case len(id.MREnclave) > 0 && len(id.MRSigner) > 0:
		errs = append(errs, f("mrenclave", "set together with mrsigner; use one or the other"))
	case len(id.MREnclave) == 0 && len(id.MRSigner) == 0:
		errs = append(errs, f("mrenclave", "neither mrenclave nor mrsigner is set; one is required"))
	case len(id.MRSigner) > 0:
		if id.ProductID == nil {
			errs = append(errs, f("productId", "required with mrsigner (the signer may sign several products)"))
		} else if *id.ProductID > 0xffff {
			errs = append(errs, f("productId", "%d, expected 0 to 65535", *id.ProductID))
		}
		if id.MinSVN == nil {
			errs = append(errs, f("minSvn", "required with mrsigner (the lowest security version accepted)"))
		} else if *id.MinSVN > 0xffff {
			errs = append(errs, f("minSvn", "%d, expected 0 to 65535", *id.MinSVN))
		}
	case len(id.MREnclave) > 0:
		if id.ProductID != nil || id.MinSVN != nil {
			errs = append(errs, f("productId", "productId and minSvn apply to mrsigner identities only"))
		}
	}
	id.mrenclave = hexSet("mrenclave", id.MREnclave)
	id.mrsigner = hexSet("mrsigner", id.MRSigner)
	if len(id.AttestationTypes) == 0 {
		id.AttestationTypes = StringList{"sgx"}
	}
	for i, t := range id.AttestationTypes {
		if !knownTypes[t] {
			errs = append(errs, f(fmt.Sprintf("attestationTypes[%d]", i), "%q, expected sgx, sevsnpvm or tdxvm", t))
		} else if t != "sgx" {
			errs = append(errs, f(fmt.Sprintf("attestationTypes[%d]", i), "%q is not supported yet: only sgx measurements are checked", t))
		}
	}
	for i, h := range id.PolicyHash {
		if h == "" {
			errs = append(errs, f(fmt.Sprintf("policyHash[%d]", i), "empty"))
		}
	}
	return errors.Join(errs...)
}

// IdentityNames returns the identity names, sorted.
func (p *Policy) IdentityNames() []string {
	names := make([]string, 0, len(p.Identities))
	for n := range p.Identities {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// TokenConfig returns the token verifier configuration for the policy's issuers.
func (p *Policy) TokenConfig() token.Config {
	cfg := token.Config{ClockSkew: p.ClockSkew.D(), MaxStaleness: p.MaxStaleness.D()}
	for _, is := range p.Issuers {
		cfg.Issuers = append(cfg.Issuers, token.IssuerConfig{URL: is.URL, CAFile: is.CAFile})
	}
	return cfg
}
