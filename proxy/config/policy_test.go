package config

import (
	"strings"
	"testing"

	"github.com/countersign/countersign/attestation/policy"
)

// TestCheckPolicy has one row per field that names policy identities: the mesh document (every
// section set) against a policy lacking one identity, and the fields the error must name.
func TestCheckPolicy(t *testing.T) {
	c, err := Parse([]byte(mesh+"chain: {identities: [portal]}\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	all := []string{"records-api", "portal", "redis", "inference"}
	pol := func(missing string) *policy.Policy {
		p := &policy.Policy{Identities: map[string]*policy.Identity{}}
		for _, n := range all {
			if n != missing {
				p.Identities[n] = &policy.Identity{}
			}
		}
		return p
	}
	if err := c.CheckPolicy(pol("")); err != nil {
		t.Fatalf("every identity present: %v", err)
	}
	for missing, fields := range map[string][]string{
		"records-api": {"identity:"},
		"portal":      {"chain.identities:", "inbound[0].allow:", "transparent.inbound[0].allow:"},
		"redis":       {"outbound[0].upstreamIdentity:", "transparent.outbound[0].upstreamIdentity:", "xds.upstreamIdentities[0]:"},
		"inference":   {"xds.upstreamIdentities[1]:"},
	} {
		err := c.CheckPolicy(pol(missing))
		if err == nil {
			t.Errorf("policy without %s accepted", missing)
			continue
		}
		if n := strings.Count(err.Error(), "\n") + 1; n != len(fields) {
			t.Errorf("policy without %s: %d errors, want %d: %v", missing, n, len(fields), err)
		}
		for _, f := range fields {
			if !strings.Contains(err.Error(), f+` identity "`+missing+`" is not in the policy`) {
				t.Errorf("policy without %s: error does not name %s: %v", missing, f, err)
			}
		}
	}
}
