package config

import (
	"net"
	"net/netip"
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
	Name             string         `json:"name"`
	Destination      netip.AddrPort `json:"destination"`
	Protocol         string         `json:"protocol"`
	UpstreamIdentity []string       `json:"upstreamIdentity"`
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

// Defaults of the mesh sections; the ports are those of the listen addresses.
const (
	DefaultInboundListen         = "0.0.0.0:15006"
	DefaultOutboundListen        = "127.0.0.1:15001"
	DefaultInboundPort    uint16 = 15006
	DefaultOutboundPort   uint16 = 15001
	DefaultProxyUID              = 1337
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
