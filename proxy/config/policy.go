package config

import (
	"errors"

	"github.com/countersign/countersign/attestation/policy"
)

// CheckPolicy is the configuration's one cross-check against its policy: every policy identity
// it names (identity, chain.identities, inbound[i].allow, outbound[i].upstreamIdentity,
// transparent.inbound[i].allow, transparent.outbound[i].upstreamIdentity,
// xds.upstreamIdentities) must be one of the policy's. Every error names its field.
func (c *Config) CheckPolicy(p *policy.Policy) error {
	var errs fieldErrors
	check := func(f fieldPath, ids []string) {
		for _, id := range ids {
			if p.Identities[id] == nil {
				errs.add(f, "identity %q is not in the policy (%v)", id, p.IdentityNames())
			}
		}
	}
	check("identity", []string{c.Identity})
	check("chain.identities", c.Chain.Identities)
	for i, in := range c.Inbound {
		check(fieldPath("inbound").index(i).child("allow"), in.Allow)
	}
	for i, out := range c.Outbound {
		check(fieldPath("outbound").index(i).child("upstreamIdentity"), out.UpstreamIdentity)
	}
	if t := c.Transparent; t != nil {
		for i, in := range t.Inbound {
			check(fieldPath("transparent.inbound").index(i).child("allow"), in.Allow)
		}
		for i, out := range t.Outbound {
			check(fieldPath("transparent.outbound").index(i).child("upstreamIdentity"), out.UpstreamIdentity)
		}
	}
	if x := c.XDS; x != nil {
		for i, id := range x.UpstreamIdentities {
			check(fieldPath("xds.upstreamIdentities").index(i), []string{id})
		}
	}
	return errors.Join(errs...)
}
