package xdsclient

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/countersign/countersign/attestation/policy"
	"github.com/countersign/countersign/proxy/xdsmeta"
)

// Cluster is an accepted cluster: its policy, the engine enforcing its (narrowed) policy,
// and its endpoints once they arrived.
type Cluster struct {
	Name   string
	Policy xdsmeta.ClusterPolicy
	// Engine enforces the cluster's policy: the floor, narrowed by the cluster's metadata.
	Engine *policy.Engine
	// Endpoints are host:port addresses of healthy upstreams.
	Endpoints []string
	rr        atomic.Uint64
}

// Pick returns the next endpoint, round robin; false when there is none.
func (c *Cluster) Pick() (string, bool) {
	if len(c.Endpoints) == 0 {
		return "", false
	}
	return c.Endpoints[int(c.rr.Add(1)-1)%len(c.Endpoints)], true
}

// Route is an accepted listener: connections to Addr (the original destination, in
// transparent mode) go to Cluster.
type Route struct {
	Listener string
	Addr     netip.AddrPort
	Cluster  string
}

// Inbound is an accepted inbound listener policy: who may call the proxy's inbound listener
// on Port now (a narrowing of that listener's pinned allow list).
type Inbound struct {
	// Listener is the pushed Listener's name; Pinned the proxy's listener it narrows.
	Listener, Pinned string
	Port             uint16
	// Allow are the identities allowed to call; Engine checks them (the floor, or the floor
	// with the pushed narrowings).
	Allow  []string
	Engine *policy.Engine
}

// State is one consistent view: every route names an active cluster and every active
// cluster has its endpoints. It is replaced as a whole, never modified.
type State struct {
	// Versions are the accepted versions, by type URL.
	Versions map[string]string
	Clusters map[string]*Cluster
	Routes   map[netip.AddrPort]Route
	// Inbound are the pushed inbound policies, by the port of the proxy's inbound listener.
	Inbound map[uint16]*Inbound
}

// InboundOn returns the pushed policy for the inbound listener on port, if any.
func (s *State) InboundOn(port uint16) *Inbound {
	if s == nil {
		return nil
	}
	return s.Inbound[port]
}

// Cluster returns the named active cluster.
func (s *State) Cluster(name string) *Cluster {
	if s == nil {
		return nil
	}
	return s.Clusters[name]
}

// RouteTo returns the cluster for connections to dst.
func (s *State) RouteTo(dst netip.AddrPort) (*Cluster, bool) {
	if s == nil {
		return nil, false
	}
	r, ok := s.Routes[dst]
	if !ok {
		return nil, false
	}
	c := s.Clusters[r.Cluster]
	return c, c != nil
}

// decodeCluster checks one Cluster resource. allowed gives the identities a cluster may name.
func decodeCluster(a *anypb.Any, floor *policy.Engine, allowed func(string) []string) (*Cluster, error) {
	var c clusterv3.Cluster
	if err := a.UnmarshalTo(&c); err != nil {
		return nil, fmt.Errorf("not a Cluster: %v", err)
	}
	if c.GetName() == "" {
		return nil, fmt.Errorf("cluster without a name")
	}
	if t := c.GetType(); t != clusterv3.Cluster_EDS {
		return nil, fmt.Errorf("cluster %s: discovery type %s, only EDS is supported", c.GetName(), t)
	}
	if c.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil {
		return nil, fmt.Errorf("cluster %s: eds_cluster_config.eds_config must be ADS", c.GetName())
	}
	md := c.GetMetadata().GetTypedFilterMetadata()[xdsmeta.FilterKey]
	cp, err := xdsmeta.Decode(md)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %v", c.GetName(), err)
	}
	eng, err := Narrow(floor, allowed(c.GetName()), cp)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", c.GetName(), err)
	}
	return &Cluster{Name: c.GetName(), Policy: cp, Engine: eng}, nil
}

// decodeEndpoints checks one ClusterLoadAssignment; unhealthy endpoints are left out.
func decodeEndpoints(a *anypb.Any) (string, []string, error) {
	var cla endpointv3.ClusterLoadAssignment
	if err := a.UnmarshalTo(&cla); err != nil {
		return "", nil, fmt.Errorf("not a ClusterLoadAssignment: %v", err)
	}
	if cla.GetClusterName() == "" {
		return "", nil, fmt.Errorf("ClusterLoadAssignment without cluster_name")
	}
	var eps []string
	for _, l := range cla.GetEndpoints() {
		for _, le := range l.GetLbEndpoints() {
			switch le.GetHealthStatus() {
			case corev3.HealthStatus_UNKNOWN, corev3.HealthStatus_HEALTHY:
			default:
				continue
			}
			sa := le.GetEndpoint().GetAddress().GetSocketAddress()
			if sa == nil {
				return "", nil, fmt.Errorf("%s: an endpoint without a socket address", cla.GetClusterName())
			}
			if sa.GetProtocol() != corev3.SocketAddress_TCP {
				return "", nil, fmt.Errorf("%s: endpoint %s: protocol %s, only TCP", cla.GetClusterName(), sa.GetAddress(), sa.GetProtocol())
			}
			port := sa.GetPortValue()
			if port == 0 || port > 65535 {
				return "", nil, fmt.Errorf("%s: endpoint %s: port %d, expected 1 to 65535", cla.GetClusterName(), sa.GetAddress(), port)
			}
			host := sa.GetAddress()
			if _, err := netip.ParseAddr(host); err != nil && !validHostname(host) {
				return "", nil, fmt.Errorf("%s: endpoint address %q is neither an IP nor a host name", cla.GetClusterName(), host)
			}
			eps = append(eps, net.JoinHostPort(host, strconv.Itoa(int(port))))
		}
	}
	sort.Strings(eps)
	return cla.GetClusterName(), eps, nil
}

func validHostname(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

// listener is a decoded Listener: its address and either a cluster (tcp_proxy) or a route
// configuration name (http_connection_manager with RDS); or, for an inbound listener, the
// inbound policy it pushes.
type listener struct {
	name    string
	addr    netip.AddrPort
	cluster string
	rds     string
	inbound *xdsmeta.InboundPolicy
}

func decodeListener(a *anypb.Any) (*listener, error) {
	var l listenerv3.Listener
	if err := a.UnmarshalTo(&l); err != nil {
		return nil, fmt.Errorf("not a Listener: %v", err)
	}
	if l.GetName() == "" {
		return nil, fmt.Errorf("listener without a name")
	}
	sa := l.GetAddress().GetSocketAddress()
	if sa == nil {
		return nil, fmt.Errorf("listener %s: no socket address", l.GetName())
	}
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil || sa.GetPortValue() == 0 || sa.GetPortValue() > 65535 {
		return nil, fmt.Errorf("listener %s: address %s:%d is not ip:port", l.GetName(), sa.GetAddress(), sa.GetPortValue())
	}
	out := &listener{name: l.GetName(), addr: netip.AddrPortFrom(ip, uint16(sa.GetPortValue()))}
	md := l.GetMetadata().GetTypedFilterMetadata()[xdsmeta.FilterKey]
	if l.GetTrafficDirection() == corev3.TrafficDirection_INBOUND {
		// The proxy's inbound data path is its own: an inbound listener only carries who may
		// call the inbound listener on its port. Filters would be half-applied, so none are taken.
		if len(l.GetFilterChains()) != 0 {
			return nil, fmt.Errorf("listener %s: an inbound listener carries only Countersign policy metadata, no filter chains", l.GetName())
		}
		ip, err := xdsmeta.DecodeInbound(md)
		if err != nil {
			return nil, fmt.Errorf("listener %s: %v", l.GetName(), err)
		}
		out.inbound = &ip
		return out, nil
	}
	if md != nil {
		return nil, fmt.Errorf("listener %s: Countersign policy metadata is only meaningful on an inbound listener (traffic_direction INBOUND)", l.GetName())
	}
	if len(l.GetFilterChains()) != 1 || len(l.GetFilterChains()[0].GetFilters()) != 1 {
		return nil, fmt.Errorf("listener %s: expected one filter chain with one filter (tcp_proxy or http_connection_manager)", l.GetName())
	}
	f := l.GetFilterChains()[0].GetFilters()[0]
	switch f.GetName() {
	case wellknown.TCPProxy:
		var tp tcpv3.TcpProxy
		if err := f.GetTypedConfig().UnmarshalTo(&tp); err != nil {
			return nil, fmt.Errorf("listener %s: tcp_proxy: %v", l.GetName(), err)
		}
		if out.cluster = tp.GetCluster(); out.cluster == "" {
			return nil, fmt.Errorf("listener %s: tcp_proxy without a cluster", l.GetName())
		}
	case wellknown.HTTPConnectionManager:
		var h hcmv3.HttpConnectionManager
		if err := f.GetTypedConfig().UnmarshalTo(&h); err != nil {
			return nil, fmt.Errorf("listener %s: http_connection_manager: %v", l.GetName(), err)
		}
		if h.GetRds() == nil || h.GetRds().GetRouteConfigName() == "" || h.GetRds().GetConfigSource().GetAds() == nil {
			return nil, fmt.Errorf("listener %s: http_connection_manager must use RDS over ADS", l.GetName())
		}
		out.rds = h.GetRds().GetRouteConfigName()
	default:
		return nil, fmt.Errorf("listener %s: filter %q is not supported (tcp_proxy or http_connection_manager)", l.GetName(), f.GetName())
	}
	return out, nil
}

// decodeRoute returns a RouteConfiguration's name and its single cluster: one virtual host
// for every domain, one route for every path. Richer routing is refused, not half-applied.
func decodeRoute(a *anypb.Any) (string, string, error) {
	var rc routev3.RouteConfiguration
	if err := a.UnmarshalTo(&rc); err != nil {
		return "", "", fmt.Errorf("not a RouteConfiguration: %v", err)
	}
	vh := rc.GetVirtualHosts()
	if len(vh) != 1 || len(vh[0].GetRoutes()) != 1 {
		return "", "", fmt.Errorf("route %s: expected one virtual host with one route", rc.GetName())
	}
	r := vh[0].GetRoutes()[0]
	if r.GetMatch().GetPrefix() != "/" {
		return "", "", fmt.Errorf("route %s: only the prefix \"/\" is supported, got %v", rc.GetName(), r.GetMatch())
	}
	c := r.GetRoute().GetCluster()
	if c == "" {
		return "", "", fmt.Errorf("route %s: the route action must name a cluster", rc.GetName())
	}
	return rc.GetName(), c, nil
}
