package xdsclient

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/countersign/countersign/attestation/policy"
	"github.com/countersign/countersign/proxy/xdsmeta"
)

// WidenError is a pushed policy that would accept something the pinned floor does not: it is
// rejected (NACKed) and reported, never applied.
type WidenError struct {
	Field  string // e.g. narrow.back.mrenclave[1]
	Reason string
}

func (e *WidenError) Error() string {
	return fmt.Sprintf("%s: widens the policy floor pinned in the proxy's configuration: %s", e.Field, e.Reason)
}

// Narrow checks a pushed cluster policy against the floor and returns the engine that
// enforces it: the floor's policy with the cluster's identities narrowed, sharing the floor's
// token verifier (and so its key and verification caches).
//
// allowed are the identities this cluster may name at all (the outbound listener's
// upstreamIdentity, or xds.upstreamIdentities). The rule: every named identity must be in
// allowed and in the pinned policy, and each narrowing must be a subset of the floor
// identity: measurements a subset of the floor's list, minSvn at least the floor's,
// allowDebug only if the floor allows it, attestation types and policy hashes a subset (or
// a new pin where the floor has none), maxTokenAge at most the floor's.
func Narrow(floor *policy.Engine, allowed []string, cp xdsmeta.ClusterPolicy) (*policy.Engine, error) {
	return narrow(floor, allowed, cp.Identities, cp.Narrow, "identities", "the cluster")
}

// NarrowInbound checks a pushed inbound policy against the floor: pinned is the inbound
// listener's allow list from the proxy's configuration. Every identity allowed must be in
// pinned (and in the pinned policy), and narrowings follow the same rule as Narrow. It returns
// the engine that checks callers: the floor itself, or the floor with the narrowed identities.
func NarrowInbound(floor *policy.Engine, pinned []string, ip xdsmeta.InboundPolicy) (*policy.Engine, error) {
	return narrow(floor, pinned, ip.Allow, ip.Narrow, "allow", "the listener")
}

func narrow(floor *policy.Engine, allowed, ids []string, nw map[string]xdsmeta.Narrowing, idsField, what string) (*policy.Engine, error) {
	for i, id := range ids {
		if !slices.Contains(allowed, id) {
			return nil, &WidenError{Field: fmt.Sprintf("%s[%d]", idsField, i), Reason: fmt.Sprintf("%q is not among the identities this proxy allows here %v", id, allowed)}
		}
		if floor.Policy.Identities[id] == nil {
			return nil, &WidenError{Field: fmt.Sprintf("%s[%d]", idsField, i), Reason: fmt.Sprintf("%q is not in the pinned policy (%s)", id, strings.Join(floor.Policy.IdentityNames(), ", "))}
		}
	}
	if len(nw) == 0 {
		return floor, nil
	}
	p := &policy.Policy{
		Issuers: floor.Policy.Issuers, ClockSkew: floor.Policy.ClockSkew, MaxStaleness: floor.Policy.MaxStaleness,
		Identities: make(map[string]*policy.Identity, len(floor.Policy.Identities)),
	}
	for name, id := range floor.Policy.Identities {
		p.Identities[name] = clone(id)
	}
	names := make([]string, 0, len(nw))
	for n := range nw {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		if !slices.Contains(ids, name) {
			return nil, &WidenError{Field: "narrow." + name, Reason: fmt.Sprintf("narrows %q, which %s does not name (%v)", name, what, ids)}
		}
		if err := narrowOne(p.Identities[name], floor.Policy.Identities[name], nw[name], "narrow."+name); err != nil {
			return nil, err
		}
	}
	if err := p.Validate(); err != nil {
		return nil, &WidenError{Field: "narrow", Reason: fmt.Sprintf("the narrowed policy is invalid: %v", err)}
	}
	return &policy.Engine{Policy: p, Verifier: floor.Verifier, Now: floor.Now}, nil
}

func clone(id *policy.Identity) *policy.Identity {
	c := &policy.Identity{
		MREnclave:        slices.Clone(id.MREnclave),
		MRSigner:         slices.Clone(id.MRSigner),
		AllowDebug:       id.AllowDebug,
		AttestationTypes: slices.Clone(id.AttestationTypes),
		PolicyHash:       slices.Clone(id.PolicyHash),
		MaxTokenAge:      id.MaxTokenAge,
	}
	if id.ProductID != nil {
		v := *id.ProductID
		c.ProductID = &v
	}
	if id.MinSVN != nil {
		v := *id.MinSVN
		c.MinSVN = &v
	}
	return c
}

func narrowOne(dst, floor *policy.Identity, n xdsmeta.Narrowing, field string) error {
	widen := func(f, format string, args ...any) error {
		return &WidenError{Field: field + "." + f, Reason: fmt.Sprintf(format, args...)}
	}
	subset := func(f string, pushed, fl []string, fold bool) error {
		for i, v := range pushed {
			ok := slices.ContainsFunc(fl, func(x string) bool {
				if fold {
					return strings.EqualFold(x, v)
				}
				return x == v
			})
			if !ok {
				return widen(fmt.Sprintf("%s[%d]", f, i), "%q is not in the floor's list %v", v, fl)
			}
		}
		return nil
	}
	if len(n.MREnclave) > 0 {
		if len(floor.MREnclave) == 0 {
			return widen("mrenclave", "the floor identity pins mrsigner, not mrenclave; an mrenclave list cannot be checked as a subset of it")
		}
		if err := subset("mrenclave", n.MREnclave, floor.MREnclave, true); err != nil {
			return err
		}
		dst.MREnclave = slices.Clone(n.MREnclave)
	}
	if len(n.MRSigner) > 0 {
		if len(floor.MRSigner) == 0 {
			return widen("mrsigner", "the floor identity pins mrenclave; an mrsigner would accept other builds")
		}
		if err := subset("mrsigner", n.MRSigner, floor.MRSigner, true); err != nil {
			return err
		}
		dst.MRSigner = slices.Clone(n.MRSigner)
	}
	if n.MinSVN != nil {
		if floor.MinSVN == nil {
			return widen("minSvn", "the floor identity pins mrenclave; minSvn applies to mrsigner identities")
		}
		if *n.MinSVN < *floor.MinSVN {
			return widen("minSvn", "%d is below the floor's %d", *n.MinSVN, *floor.MinSVN)
		}
		v := *n.MinSVN
		dst.MinSVN = &v
	}
	if n.AllowDebug != nil {
		if *n.AllowDebug && !floor.AllowDebug {
			return widen("allowDebug", "true, but the floor refuses debuggable enclaves")
		}
		dst.AllowDebug = *n.AllowDebug
	}
	if len(n.AttestationTypes) > 0 {
		if err := subset("attestationTypes", n.AttestationTypes, floor.AttestationTypes, false); err != nil {
			return err
		}
		dst.AttestationTypes = slices.Clone(n.AttestationTypes)
	}
	if len(n.PolicyHash) > 0 {
		if len(floor.PolicyHash) > 0 {
			if err := subset("policyHash", n.PolicyHash, floor.PolicyHash, false); err != nil {
				return err
			}
		}
		dst.PolicyHash = slices.Clone(n.PolicyHash)
	}
	if n.MaxTokenAge != "" {
		d, err := time.ParseDuration(n.MaxTokenAge)
		if err != nil || d <= 0 {
			return widen("maxTokenAge", "%q is not a positive duration", n.MaxTokenAge)
		}
		if floor.MaxTokenAge > 0 && d > floor.MaxTokenAge.D() {
			return widen("maxTokenAge", "%s is longer than the floor's %s", d, floor.MaxTokenAge.D())
		}
		dst.MaxTokenAge = policy.Duration(d)
	}
	return nil
}
