package config

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// Transparent is transparent interception (docs/transparent.md): an init container redirects
// the app's TCP traffic with iptables to two listeners of the proxy, which recover the
// original destination with SO_ORIGINAL_DST and route by it.
type Transparent struct {
	// InboundListen receives redirected inbound connections (default 0.0.0.0:15006).
	InboundListen string `json:"inboundListen,omitempty"`
	// OutboundListen receives the app's redirected outbound connections (default 127.0.0.1:15001).
	OutboundListen string `json:"outboundListen,omitempty"`
	// Inbound maps an original destination port to the app on 127.0.0.1:port. A redirected
	// connection to any other port is refused.
	Inbound []TransparentInbound `json:"inbound,omitempty"`
	// Outbound are static routes by original destination; xDS listeners add more. A
	// connection to a destination with no route is refused (fail closed): exclude such
	// destinations from interception instead.
	Outbound []TransparentOutbound `json:"outbound,omitempty"`
	// ProxyUID is the UID the proxy runs as; its own traffic is not redirected (default 1337).
	// `proxy iptables --config` reads it and the fields below.
	ProxyUID int `json:"proxyUid,omitempty"`
	// ExcludeInboundPorts are never redirected inbound (e.g. the admin port for probes).
	ExcludeInboundPorts []int `json:"excludeInboundPorts,omitempty"`
	// ExcludeOutboundPorts and ExcludeOutboundCIDRs are never redirected outbound.
	ExcludeOutboundPorts []int    `json:"excludeOutboundPorts,omitempty"`
	ExcludeOutboundCIDRs []string `json:"excludeOutboundCidrs,omitempty"`
}

// TransparentInbound is an app port behind the inbound interception.
type TransparentInbound struct {
	Name     string   `json:"name"`
	Port     int      `json:"port"`
	Protocol string   `json:"protocol"`
	Allow    []string `json:"allow"`
}

// TransparentOutbound routes connections to Destination (ip:port) to the upstream proxy at
// the same address over attested mTLS (the upstream's inbound interception catches it).
type TransparentOutbound struct {
	Name             string   `json:"name"`
	Destination      string   `json:"destination"`
	Protocol         string   `json:"protocol"`
	UpstreamIdentity []string `json:"upstreamIdentity"`
	// Authority is the Host sent upstream (http); default the destination.
	Authority string `json:"authority,omitempty"`
}

// XDS is the control plane subscription (docs/xds.md). The control plane can add upstreams
// and narrow policy; it can never widen the policy floor pinned by this file.
type XDS struct {
	// Server is the control plane's gRPC address, host:port.
	Server string `json:"server"`
	// ServerName is the name checked in the control plane's certificate (default Server's host).
	ServerName string `json:"serverName,omitempty"`
	// NodeID identifies this proxy to the control plane (default: identity).
	NodeID string `json:"nodeId,omitempty"`
	// CAFile verifies the control plane; CertFile and KeyFile are this proxy's client
	// certificate (mTLS is required).
	CAFile   string `json:"caFile"`
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
	// UpstreamIdentities are the policy identities a pushed cluster may require of its
	// upstreams (for clusters not named by an outbound listener, whose upstreamIdentity
	// applies instead): the floor for routes the control plane adds. Empty: the control plane
	// can add no routes, only move the endpoints of the clusters outbound listeners name and
	// narrow policy (of those clusters and of who may call the inbound listeners).
	UpstreamIdentities []string `json:"upstreamIdentities,omitempty"`
	// MinBackoff and MaxBackoff bound reconnection attempts (default 200ms, 10s).
	MinBackoff Duration `json:"minBackoff,omitempty"`
	MaxBackoff Duration `json:"maxBackoff,omitempty"`
}

// Defaults of the mesh sections.
const (
	DefaultInboundListen  = "0.0.0.0:15006"
	DefaultOutboundListen = "127.0.0.1:15001"
	DefaultProxyUID       = 1337
)

func (c *Config) setMeshDefaults() {
	if t := c.Transparent; t != nil {
		if t.InboundListen == "" {
			t.InboundListen = DefaultInboundListen
		}
		if t.OutboundListen == "" {
			t.OutboundListen = DefaultOutboundListen
		}
		if t.ProxyUID == 0 {
			t.ProxyUID = DefaultProxyUID
		}
	}
	if x := c.XDS; x != nil {
		if x.NodeID == "" {
			x.NodeID = c.Identity
		}
		if x.ServerName == "" {
			x.ServerName, _, _ = net.SplitHostPort(x.Server)
		}
		if x.MinBackoff == 0 {
			x.MinBackoff = Duration(200 * time.Millisecond)
		}
		if x.MaxBackoff == 0 {
			x.MaxBackoff = Duration(10 * time.Second)
		}
	}
}

func (c *Config) validateTransparent(addrs, names map[string]string) []error {
	t := c.Transparent
	if t == nil {
		return nil
	}
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("transparent.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	for _, l := range []struct{ field, addr string }{{"inboundListen", t.InboundListen}, {"outboundListen", t.OutboundListen}} {
		if _, _, err := net.SplitHostPort(l.addr); err != nil {
			add(l.field, "%q is not host:port", l.addr)
		} else if prev, dup := addrs[l.addr]; dup {
			add(l.field, "%q is also the address of %s", l.addr, prev)
		}
	}
	if err := loopback(t.OutboundListen); err != nil {
		add("outboundListen", "%v (iptables redirects the app's outbound traffic to loopback)", err)
	}
	if t.ProxyUID < 0 {
		add("proxyUid", "%d, expected a UID", t.ProxyUID)
	}
	if len(t.Inbound)+len(t.Outbound) == 0 && c.XDS == nil {
		add("inbound", "no routes: transparent mode needs inbound ports, outbound routes or xds")
	}
	name := func(field, n string) {
		if !nameRE.MatchString(n) {
			add(field+".name", "%q, expected lowercase letters, digits, '.', '_' or '-'", n)
		} else if prev, dup := names[n]; dup {
			add(field+".name", "%q is also the name of %s", n, prev)
		} else {
			names[n] = "transparent." + field
		}
	}
	ids := func(field string, l []string, what string) {
		if len(l) == 0 {
			add(field, "required: %s", what)
		}
		for j, a := range l {
			if !nameRE.MatchString(a) {
				add(fmt.Sprintf("%s[%d]", field, j), "%q is not an identity name", a)
			}
		}
	}
	ports := map[int]bool{}
	for i, in := range t.Inbound {
		f := fmt.Sprintf("inbound[%d]", i)
		name(f, in.Name)
		if in.Port < 1 || in.Port > 65535 {
			add(f+".port", "%d, expected 1 to 65535", in.Port)
		} else if ports[in.Port] {
			add(f+".port", "%d is listed twice", in.Port)
		}
		ports[in.Port] = true
		if in.Protocol != ProtocolHTTP && in.Protocol != ProtocolTCP {
			add(f+".protocol", "%q, expected http or tcp", in.Protocol)
		}
		ids(f+".allow", in.Allow, "the policy identities allowed to call")
	}
	dsts := map[netip.AddrPort]bool{}
	for i, out := range t.Outbound {
		f := fmt.Sprintf("outbound[%d]", i)
		name(f, out.Name)
		ap, err := netip.ParseAddrPort(out.Destination)
		switch {
		case err != nil:
			add(f+".destination", "%q is not ip:port", out.Destination)
		case dsts[ap]:
			add(f+".destination", "%q is listed twice", out.Destination)
		}
		dsts[ap] = true
		if out.Protocol != ProtocolHTTP && out.Protocol != ProtocolTCP {
			add(f+".protocol", "%q, expected http or tcp", out.Protocol)
		}
		ids(f+".upstreamIdentity", out.UpstreamIdentity, "the policy identities the upstream must prove")
	}
	for i, p := range append(append([]int{}, t.ExcludeInboundPorts...), t.ExcludeOutboundPorts...) {
		if p < 1 || p > 65535 {
			field := fmt.Sprintf("excludeInboundPorts[%d]", i)
			if i >= len(t.ExcludeInboundPorts) {
				field = fmt.Sprintf("excludeOutboundPorts[%d]", i-len(t.ExcludeInboundPorts))
			}
			add(field, "%d, expected 1 to 65535", p)
		}
	}
	for i, s := range t.ExcludeOutboundCIDRs {
		if _, err := netip.ParsePrefix(s); err != nil {
			add(fmt.Sprintf("excludeOutboundCidrs[%d]", i), "%q is not a CIDR", s)
		}
	}
	return errs
}

func (c *Config) validateXDS() []error {
	x := c.XDS
	if x == nil {
		return nil
	}
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("xds.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if _, _, err := net.SplitHostPort(x.Server); err != nil {
		add("server", "%q is not host:port", x.Server)
	}
	if x.NodeID == "" || len(x.NodeID) > 253 || strings.ContainsFunc(x.NodeID, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		add("nodeId", "%q, expected 1 to 253 printable ASCII characters", x.NodeID)
	}
	if x.CAFile == "" {
		add("caFile", "required: the control plane is authenticated with mTLS")
	}
	if x.CertFile == "" || x.KeyFile == "" {
		add("certFile", "certFile and keyFile are required: the control plane authenticates this proxy with mTLS")
	}
	for j, a := range x.UpstreamIdentities {
		if !nameRE.MatchString(a) {
			add(fmt.Sprintf("upstreamIdentities[%d]", j), "%q is not an identity name", a)
		}
	}
	if x.MaxBackoff < x.MinBackoff {
		add("maxBackoff", "%s is less than minBackoff %s", x.MaxBackoff.D(), x.MinBackoff.D())
	}
	return errs
}
