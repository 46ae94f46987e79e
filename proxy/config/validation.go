package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"

	"github.com/countersign/countersign/attestation/attester"
	"github.com/countersign/countersign/attestation/maa"
	"github.com/countersign/countersign/attestation/token"
)

// Validation is one validator per section, each given the field path of what it checks (as
// cert-manager's internal/apis/config/*/validation does), so every error names its field:
// "inbound[0].allow: required: ...".

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`)

// fieldPath names a configuration field, such as inbound[0].allow.
type fieldPath string

// child is the member name of p.
func (p fieldPath) child(name string) fieldPath {
	if p == "" {
		return fieldPath(name)
	}
	return p + "." + fieldPath(name)
}

// index is element i of the list p.
func (p fieldPath) index(i int) fieldPath { return fieldPath(fmt.Sprintf("%s[%d]", p, i)) }

// fieldErrors collects errors, each prefixed with its field path.
type fieldErrors []error

func (e *fieldErrors) add(p fieldPath, format string, args ...any) {
	*e = append(*e, fmt.Errorf("%s: %s", p, fmt.Sprintf(format, args...)))
}

// seen records listener names and addresses across sections, so a name or an address used
// twice is reported with the field that first used it.
type seen struct {
	names map[string]string // listener name -> field path
	addrs map[string]string // listen address -> field path
}

func newSeen() *seen { return &seen{names: map[string]string{}, addrs: map[string]string{}} }

// name checks a listener or route name and that no other section uses it.
func (s *seen) name(errs *fieldErrors, p fieldPath, n string) {
	switch prev, dup := s.names[n]; {
	case !nameRE.MatchString(n):
		errs.add(p, "%q, expected lowercase letters, digits, '.', '_' or '-'", n)
	case dup:
		errs.add(p, "%q is also the name of %s", n, prev)
	default:
		// The owner is the listener (or route), not its name field.
		s.names[n] = strings.TrimSuffix(string(p), ".name")
	}
}

// Validate checks the configuration (after SetDefaults). Every error names its field.
func (c *Config) Validate() error {
	var errs fieldErrors
	s := newSeen()
	validateAttester(&errs, "attester", &c.Attester)
	validateAttestationService(&errs, "attestationService", &c.AttestationService)
	if c.PolicyFile == "" {
		errs.add("policyFile", "required (see docs/policy.md)")
	}
	if c.Identity == "" {
		errs.add("identity", "required: this proxy's identity name in the policy")
	} else if !nameRE.MatchString(c.Identity) {
		errs.add("identity", "%q is not an identity name", c.Identity)
	}
	if len(c.Claimed) > maa.MaxClaimedEntries {
		errs.add("claimed", "%d labels, at most %d allowed", len(c.Claimed), maa.MaxClaimedEntries)
	}
	validateRefresh(&errs, "refresh", &c.Refresh)
	if len(c.Inbound)+len(c.Outbound) == 0 && c.Transparent == nil {
		errs.add("inbound", "no listeners: at least one inbound or outbound listener is required")
	}
	for i := range c.Inbound {
		validateInbound(&errs, fieldPath("inbound").index(i), &c.Inbound[i], s)
	}
	for i := range c.Outbound {
		validateOutbound(&errs, fieldPath("outbound").index(i), &c.Outbound[i], s, c.XDS != nil)
	}
	validateAdmin(&errs, "admin", &c.Admin, s)
	validateLimits(&errs, "limits", &c.Limits)
	validateChain(&errs, "chain", &c.Chain, c.Limits.MaxHeaderBytes)
	if c.Transparent != nil {
		validateTransparent(&errs, "transparent", c.Transparent, s, c.XDS != nil)
	}
	if c.XDS != nil {
		validateXDS(&errs, "xds", c.XDS)
	}
	return errors.Join(errs...)
}

func validateAttester(errs *fieldErrors, p fieldPath, a *Attester) {
	switch a.Type {
	case attester.NameSim:
		if a.SimPlatformKey == "" {
			errs.add(p.child("simPlatformKey"), "required with type sim (make one with `proxy sim-platform-key --out FILE`)")
		}
	case attester.NameSGX:
		if a.SimPlatformKey != "" || a.SimIdentity != (SimIdentity{}) {
			errs.add(p.child("simPlatformKey"), "sim settings given with type sgx")
		}
	case "":
		errs.add(p.child("type"), "required: sgx or sim")
	default:
		errs.add(p.child("type"), "%q, expected sgx or sim", a.Type)
	}
}

func validateAttestationService(errs *fieldErrors, p fieldPath, s *AttestationService) {
	if s.URL == "" {
		errs.add(p.child("url"), "required (https://host[:port])")
	} else if err := token.ValidateIssuerURL(s.URL); err != nil {
		// Plain http would let anyone on the path hand the proxy keys and tokens; the proxy
		// would then run unready forever, so it refuses to start instead.
		errs.add(p.child("url"), "%q, expected https://host[:port] (TLS is required; no path)", s.URL)
	}
	switch maa.Endpoint(s.Endpoint) {
	case maa.EndpointSgxEnclave, maa.EndpointOpenEnclave:
	default:
		errs.add(p.child("endpoint"), "%q, expected SgxEnclave or OpenEnclave", s.Endpoint)
	}
}

func validateRefresh(errs *fieldErrors, p fieldPath, r *Refresh) {
	if r.At <= 0 || r.At >= 1 {
		errs.add(p.child("at"), "%v, expected a fraction of the token lifetime between 0 and 1", r.At)
	}
	if r.Jitter < 0 || r.Jitter >= r.At || r.At+r.Jitter >= 1 {
		errs.add(p.child("jitter"), "%v, expected 0 <= jitter < at and at+jitter < 1", r.Jitter)
	}
	if r.MaxBackoff < r.MinBackoff {
		errs.add(p.child("maxBackoff"), "%s is less than minBackoff %s", r.MaxBackoff.D(), r.MinBackoff.D())
	}
}

// validateListener checks what inbound and outbound listeners share: a unique name, a unique
// host:port (port 0 may repeat) and a protocol.
func validateListener(errs *fieldErrors, p fieldPath, name, listen, proto string, s *seen) {
	s.name(errs, p.child("name"), name)
	if _, _, err := net.SplitHostPort(listen); err != nil {
		errs.add(p.child("listen"), "%q is not host:port", listen)
	} else if prev, dup := s.addrs[listen]; dup && !strings.HasSuffix(listen, ":0") {
		errs.add(p.child("listen"), "%q is also the address of %s", listen, prev)
	} else {
		s.addrs[listen] = string(p)
	}
	validateListenerProtocol(errs, p.child("protocol"), proto)
}

// validateListenerProtocol checks an explicit listener's protocol: http, tcp, http2 or grpc.
func validateListenerProtocol(errs *fieldErrors, p fieldPath, proto string) {
	if proto != ProtocolHTTP && proto != ProtocolTCP && !IsHTTP2(proto) {
		errs.add(p, "%q, expected http, http2, grpc or tcp", proto)
	}
}

// validateProtocol checks a transparent or xDS route's protocol, which carries http or tcp
// (HTTP/2 needs an explicit listener).
func validateProtocol(errs *fieldErrors, p fieldPath, proto string) {
	if proto != ProtocolHTTP && proto != ProtocolTCP {
		if IsHTTP2(proto) {
			errs.add(p, "%q, expected http or tcp (http2 and grpc are for explicit inbound and outbound listeners)", proto)
			return
		}
		errs.add(p, "%q, expected http or tcp", proto)
	}
}

// validateIdentities checks a list of policy identity names; what, if not empty, is what
// the list means, and the list is then required.
func validateIdentities(errs *fieldErrors, p fieldPath, ids []string, what string) {
	if len(ids) == 0 && what != "" {
		errs.add(p, "required: %s", what)
	}
	for j, a := range ids {
		if !nameRE.MatchString(a) {
			errs.add(p.index(j), "%q is not an identity name", a)
		}
	}
}

func validateInbound(errs *fieldErrors, p fieldPath, in *Inbound, s *seen) {
	validateListener(errs, p, in.Name, in.Listen, in.Protocol, s)
	if err := loopback(in.ForwardTo); err != nil {
		errs.add(p.child("forwardTo"), "%v", err)
	}
	if in.Public {
		if in.CertFile == "" || in.KeyFile == "" {
			errs.add(p.child("certFile"), "a public listener needs certFile and keyFile (an ordinary certificate browsers trust)")
		}
		if len(in.Allow) > 0 {
			errs.add(p.child("allow"), "a public listener does not authenticate callers; remove allow or public")
		}
		if in.Protocol == ProtocolTCP {
			errs.add(p.child("public"), "public listeners serve http, http2 or grpc, not tcp")
		}
	} else {
		if len(in.Allow) == 0 {
			errs.add(p.child("allow"), "required: the policy identities allowed to call (or public: true)")
		}
		if in.CertFile != "" || in.KeyFile != "" {
			errs.add(p.child("certFile"), "only public listeners use certificate files; attested listeners use the enclave's certificate")
		}
	}
	validateIdentities(errs, p.child("allow"), in.Allow, "")
}

func validateOutbound(errs *fieldErrors, p fieldPath, out *Outbound, s *seen, haveXDS bool) {
	validateListener(errs, p, out.Name, out.Listen, out.Protocol, s)
	if out.Listen != "" {
		if err := loopback(out.Listen); err != nil {
			errs.add(p.child("listen"), "%v (the app dials outbound listeners in plaintext)", err)
		}
	}
	switch {
	case out.Cluster != "" && out.Upstream != "":
		errs.add(p.child("cluster"), "set together with upstream; use one or the other")
	case out.Cluster != "":
		if !haveXDS {
			errs.add(p.child("cluster"), "%q needs a control plane: set xds", out.Cluster)
		}
		if IsHTTP2(out.Protocol) {
			errs.add(p.child("protocol"), "%q with cluster: xDS clusters carry http or tcp; name an upstream for %s", out.Protocol, out.Protocol)
		}
	default:
		if _, _, err := net.SplitHostPort(out.Upstream); err != nil {
			errs.add(p.child("upstream"), "%q is not host:port", out.Upstream)
		}
	}
	validateIdentities(errs, p.child("upstreamIdentity"), out.UpstreamIdentity, "the policy identities the upstream must prove")
}

// validateAdmin checks the admin listener; it may not share a listener's address, and (as
// before this split) it is not itself recorded, so the transparent listeners may share it.
func validateAdmin(errs *fieldErrors, p fieldPath, a *Admin, s *seen) {
	if a.Listen == "" {
		return
	}
	if _, _, err := net.SplitHostPort(a.Listen); err != nil {
		errs.add(p.child("listen"), "%q is not host:port", a.Listen)
	} else if prev, dup := s.addrs[a.Listen]; dup && !strings.HasSuffix(a.Listen, ":0") {
		errs.add(p.child("listen"), "%q is also the address of %s", a.Listen, prev)
	}
}

func validateLimits(errs *fieldErrors, p fieldPath, l *Limits) {
	if l.MaxConnections < 1 {
		errs.add(p.child("maxConnections"), "%d, expected at least 1", l.MaxConnections)
	}
	if l.MaxHeaderBytes < 4096 {
		errs.add(p.child("maxHeaderBytes"), "%d, expected at least 4096", l.MaxHeaderBytes)
	}
	if l.MaxBodyBytes < 1 {
		errs.add(p.child("maxBodyBytes"), "%d, expected at least 1", l.MaxBodyBytes)
	}
	if l.MaxResponseBytes < 1 {
		errs.add(p.child("maxResponseBytes"), "%d, expected at least 1", l.MaxResponseBytes)
	}
	if l.MaxConcurrentStreams < 1 || l.MaxConcurrentStreams > 10000 {
		errs.add(p.child("maxConcurrentStreams"), "%d, expected 1 to 10000", l.MaxConcurrentStreams)
	}
	if l.MaxFrameBytes < 16384 || l.MaxFrameBytes > 16777215 {
		errs.add(p.child("maxFrameBytes"), "%d, expected 16384 to 16777215 (RFC 9113 SETTINGS_MAX_FRAME_SIZE)", l.MaxFrameBytes)
	}
}

func validateChain(errs *fieldErrors, p fieldPath, ch *Chain, maxHeaderBytes int) {
	if ch.MaxHops < 1 || ch.MaxHops > 32 {
		errs.add(p.child("maxHops"), "%d, expected 1 to 32", ch.MaxHops)
	}
	if ch.PeerSignatures != PeerSignaturesVerify && ch.PeerSignatures != PeerSignaturesChannel {
		errs.add(p.child("peerSignatures"), "%q, expected verify or channel", ch.PeerSignatures)
	}
	if ch.SignVersion != 0 && ch.SignVersion != 1 && ch.SignVersion != 2 {
		errs.add(p.child("signVersion"), "%d, expected 1 or 2", ch.SignVersion)
	}
	if ch.MaxBytes < 4096 || ch.MaxBytes > maxHeaderBytes {
		errs.add(p.child("maxBytes"), "%d, expected at least 4096 and at most limits.maxHeaderBytes (%d)", ch.MaxBytes, maxHeaderBytes)
	}
	if ch.MaxAge < ch.Window {
		errs.add(p.child("maxAge"), "%s is shorter than chain.window %s", ch.MaxAge.D(), ch.Window.D())
	}
	validateIdentities(errs, p.child("identities"), ch.Identities, "")
}

func validateTransparent(errs *fieldErrors, p fieldPath, t *Transparent, s *seen, haveXDS bool) {
	for _, l := range []struct{ field, addr string }{{"inboundListen", t.InboundListen}, {"outboundListen", t.OutboundListen}} {
		if _, _, err := net.SplitHostPort(l.addr); err != nil {
			errs.add(p.child(l.field), "%q is not host:port", l.addr)
		} else if prev, dup := s.addrs[l.addr]; dup {
			errs.add(p.child(l.field), "%q is also the address of %s", l.addr, prev)
		}
	}
	if err := loopback(t.OutboundListen); err != nil {
		errs.add(p.child("outboundListen"), "%v (iptables redirects the app's outbound traffic to loopback)", err)
	}
	if t.ProxyUID < 0 {
		errs.add(p.child("proxyUid"), "%d, expected a UID", t.ProxyUID)
	}
	if len(t.Inbound)+len(t.Outbound) == 0 && !haveXDS {
		errs.add(p.child("inbound"), "no routes: transparent mode needs inbound ports, outbound routes or xds")
	}
	ports := map[int]bool{}
	for i, in := range t.Inbound {
		f := p.child("inbound").index(i)
		s.name(errs, f.child("name"), in.Name)
		if in.Port < 1 || in.Port > 65535 {
			errs.add(f.child("port"), "%d, expected 1 to 65535", in.Port)
		} else if ports[in.Port] {
			errs.add(f.child("port"), "%d is listed twice", in.Port)
		}
		ports[in.Port] = true
		validateProtocol(errs, f.child("protocol"), in.Protocol)
		validateIdentities(errs, f.child("allow"), in.Allow, "the policy identities allowed to call")
	}
	dsts := map[netip.AddrPort]bool{}
	for i, out := range t.Outbound {
		f := p.child("outbound").index(i)
		s.name(errs, f.child("name"), out.Name)
		switch ap := out.Destination; {
		case !ap.IsValid():
			errs.add(f.child("destination"), "required: ip:port")
		case dsts[ap]:
			errs.add(f.child("destination"), "%q is listed twice", ap)
		default:
			dsts[ap] = true
		}
		validateProtocol(errs, f.child("protocol"), out.Protocol)
		validateIdentities(errs, f.child("upstreamIdentity"), out.UpstreamIdentity, "the policy identities the upstream must prove")
	}
	validatePorts(errs, p.child("excludeInboundPorts"), t.ExcludeInboundPorts)
	validatePorts(errs, p.child("excludeOutboundPorts"), t.ExcludeOutboundPorts)
	for i, c := range t.ExcludeOutboundCIDRs {
		if _, err := netip.ParsePrefix(c); err != nil {
			errs.add(p.child("excludeOutboundCidrs").index(i), "%q is not a CIDR", c)
		}
	}
}

func validatePorts(errs *fieldErrors, p fieldPath, ports []int) {
	for i, port := range ports {
		if port < 1 || port > 65535 {
			errs.add(p.index(i), "%d, expected 1 to 65535", port)
		}
	}
}

func validateXDS(errs *fieldErrors, p fieldPath, x *XDS) {
	if _, _, err := net.SplitHostPort(x.Server); err != nil {
		errs.add(p.child("server"), "%q is not host:port", x.Server)
	}
	if x.NodeID == "" || len(x.NodeID) > 253 || strings.ContainsFunc(x.NodeID, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		errs.add(p.child("nodeId"), "%q, expected 1 to 253 printable ASCII characters", x.NodeID)
	}
	if x.CAFile == "" {
		errs.add(p.child("caFile"), "required: the control plane is authenticated with mTLS")
	}
	if x.CertFile == "" || x.KeyFile == "" {
		errs.add(p.child("certFile"), "certFile and keyFile are required: the control plane authenticates this proxy with mTLS")
	}
	validateIdentities(errs, p.child("upstreamIdentities"), x.UpstreamIdentities, "")
	if x.MaxBackoff < x.MinBackoff {
		errs.add(p.child("maxBackoff"), "%s is less than minBackoff %s", x.MaxBackoff.D(), x.MinBackoff.D())
	}
}
