// Package xds is Countersign's control plane: an xDS server (ADS over gRPC with mTLS, state
// of the world, go-control-plane's snapshot cache) fed by client-go informers on Services,
// EndpointSlices and Pods. Every opted-in Service port becomes, in Envoy's own types, a
// Cluster (EDS, with the Countersign policy in typed filter metadata), its
// ClusterLoadAssignment, a Listener at the Service's cluster IP and, for HTTP ports, a
// RouteConfiguration. Each proxy, identified by its node ID, gets a consistent, versioned
// snapshot. The control plane is outside the trusted computing base: proxies check that
// what it sends only narrows their pinned policy.
package xds

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/countersign/countersign/internal/strictdecode"
	"github.com/countersign/countersign/proxy/xdsmeta"
)

// Annotations read by the control plane.
const (
	// AnnotationUpstreamIdentity on a Service names the policy identities its endpoints prove
	// (comma-separated). Without it, the identities of the Service's pods are used.
	AnnotationUpstreamIdentity = "countersign.dev/upstream-identity"
	// AnnotationNarrow on a Service is a JSON object of per-identity narrowings
	// (xdsmeta.Narrowing), e.g. to pin one build during a rollout.
	AnnotationNarrow = "countersign.dev/narrow"
	// AnnotationPodIdentity on a Pod is its proxy's identity (set by the injector's users).
	AnnotationPodIdentity = "countersign.dev/identity"
	// AnnotationAllow on a Service narrows who may call its pods' proxies: comma-separated
	// policy identities, sent as an inbound Listener on each target port to the proxies that
	// prove the Service's identities. Each proxy accepts it only as a subset of the allow list
	// pinned for its inbound listener on that port.
	AnnotationAllow = "countersign.dev/allow"
	// AnnotationAllowNarrow on a Service is a JSON object of per-identity narrowings of the
	// callers named by AnnotationAllow (xdsmeta.Narrowing).
	AnnotationAllowNarrow = "countersign.dev/allow-narrow"
	// LabelServiceName is the EndpointSlice label naming its Service.
	LabelServiceName = discoveryv1.LabelServiceName
)

// Input is what the translation reads.
type Input struct {
	Services []*corev1.Service
	Slices   []*discoveryv1.EndpointSlice
	// Pods by namespace/name.
	Pods map[string]*corev1.Pod
}

// Skipped explains a Service port left out of the snapshot.
type Skipped struct {
	Service string
	Reason  string
}

// ClusterName is the name of a Service port's cluster: namespace/name:port-name (or number).
func ClusterName(ns, name string, p corev1.ServicePort) string {
	port := p.Name
	if port == "" {
		port = fmt.Sprint(p.Port)
	}
	return ns + "/" + name + ":" + port
}

// InboundName is the name of the inbound Listener for a Service port's target port.
func InboundName(cluster string, port int32) string {
	return fmt.Sprintf("inbound|%s|%d", cluster, port)
}

// translate also returns, for each inbound Listener, the identities of the proxies it is for.
func translate(in Input) (map[resource.Type][]types.Resource, map[string][]string, []Skipped) {
	out := map[resource.Type][]types.Resource{}
	scope := map[string][]string{}
	var skipped []Skipped
	svcs := append([]*corev1.Service(nil), in.Services...)
	sort.Slice(svcs, func(i, j int) bool {
		return svcs[i].Namespace+"/"+svcs[i].Name < svcs[j].Namespace+"/"+svcs[j].Name
	})
	slicesBySvc := map[string][]*discoveryv1.EndpointSlice{}
	for _, s := range in.Slices {
		if n := s.Labels[LabelServiceName]; n != "" {
			slicesBySvc[s.Namespace+"/"+n] = append(slicesBySvc[s.Namespace+"/"+n], s)
		}
	}
	for _, svc := range svcs {
		key := svc.Namespace + "/" + svc.Name
		slices := slicesBySvc[key]
		sort.Slice(slices, func(i, j int) bool { return slices[i].Name < slices[j].Name })
		ids := identities(svc, slices, in.Pods)
		if len(ids) == 0 {
			continue // not in the mesh
		}
		var narrow map[string]xdsmeta.Narrowing
		if s := svc.Annotations[AnnotationNarrow]; s != "" {
			if err := strictdecode.JSON([]byte(s), &narrow); err != nil {
				skipped = append(skipped, Skipped{key, fmt.Sprintf("annotation %s: %v", AnnotationNarrow, err)})
				continue
			}
		}
		var inbound *xdsmeta.InboundPolicy
		if a := svc.Annotations[AnnotationAllow]; a != "" {
			inbound = &xdsmeta.InboundPolicy{}
			for _, id := range strings.Split(a, ",") {
				if id = strings.TrimSpace(id); id != "" {
					inbound.Allow = append(inbound.Allow, id)
				}
			}
			if s := svc.Annotations[AnnotationAllowNarrow]; s != "" {
				if err := strictdecode.JSON([]byte(s), &inbound.Narrow); err != nil {
					skipped = append(skipped, Skipped{key, fmt.Sprintf("annotation %s: %v", AnnotationAllowNarrow, err)})
					continue
				}
			}
		} else if svc.Annotations[AnnotationAllowNarrow] != "" {
			skipped = append(skipped, Skipped{key, fmt.Sprintf("annotation %s without %s", AnnotationAllowNarrow, AnnotationAllow)})
			continue
		}
		vip, vipErr := netip.ParseAddr(svc.Spec.ClusterIP)
		for _, p := range svc.Spec.Ports {
			if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
				continue
			}
			name := ClusterName(svc.Namespace, svc.Name, p)
			proto := protocolOf(p)
			cp := xdsmeta.ClusterPolicy{Protocol: proto, Identities: ids, Narrow: narrow}
			if proto == xdsmeta.ProtocolHTTP {
				cp.Authority = fmt.Sprintf("%s.%s.svc:%d", svc.Name, svc.Namespace, p.Port)
			}
			md, err := xdsmeta.Encode(cp)
			if err != nil {
				skipped = append(skipped, Skipped{key, err.Error()})
				continue
			}
			out[resource.ClusterType] = append(out[resource.ClusterType], &clusterv3.Cluster{
				Name:                 name,
				ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
				EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads()},
				Metadata:             &corev3.Metadata{TypedFilterMetadata: map[string]*anypb.Any{xdsmeta.FilterKey: md}},
			})
			out[resource.EndpointType] = append(out[resource.EndpointType], assignment(name, p, slices))
			if inbound != nil {
				imd, err := xdsmeta.EncodeInbound(*inbound)
				if err != nil {
					skipped = append(skipped, Skipped{key, err.Error()})
				} else {
					for _, tp := range targetPorts(p, slices) {
						iname := InboundName(name, tp)
						out[resource.ListenerType] = append(out[resource.ListenerType], &listenerv3.Listener{
							Name:             iname,
							TrafficDirection: corev3.TrafficDirection_INBOUND,
							Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
								Address: "0.0.0.0", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(tp)},
							}}},
							Metadata: &corev3.Metadata{TypedFilterMetadata: map[string]*anypb.Any{xdsmeta.FilterKey: imd}},
						})
						scope[iname] = ids
					}
				}
			}
			if vipErr != nil || !vip.IsValid() || vip.IsUnspecified() {
				continue // headless: endpoints only, no listener
			}
			l := &listenerv3.Listener{
				Name: name,
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: vip.String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p.Port)},
				}}},
			}
			var filter *listenerv3.Filter
			if proto == xdsmeta.ProtocolHTTP {
				filter = mustFilter(wellknown.HTTPConnectionManager, &hcmv3.HttpConnectionManager{
					StatPrefix:     name,
					RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{ConfigSource: ads(), RouteConfigName: name}},
				})
				out[resource.RouteType] = append(out[resource.RouteType], &routev3.RouteConfiguration{
					Name: name,
					VirtualHosts: []*routev3.VirtualHost{{
						Name: name, Domains: []string{"*"},
						Routes: []*routev3.Route{{
							Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
							Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: name}}},
						}},
					}},
				})
			} else {
				filter = mustFilter(wellknown.TCPProxy, &tcpv3.TcpProxy{StatPrefix: name, ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: name}})
			}
			l.FilterChains = []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{filter}}}
			out[resource.ListenerType] = append(out[resource.ListenerType], l)
		}
	}
	return out, scope, skipped
}

// targetPorts are the ports the Service port's endpoints listen on: the slices' ports of the
// same name (named target ports resolve there), else a numeric targetPort (or the port).
func targetPorts(p corev1.ServicePort, slices []*discoveryv1.EndpointSlice) []int32 {
	set := map[int32]bool{}
	for _, sl := range slices {
		for _, sp := range sl.Ports {
			if sp.Port != nil && ptrString(sp.Name) == p.Name && (sp.Protocol == nil || *sp.Protocol == corev1.ProtocolTCP) {
				set[*sp.Port] = true
			}
		}
	}
	if len(set) == 0 {
		switch {
		case p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal > 0:
			set[p.TargetPort.IntVal] = true
		case p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal == 0:
			set[p.Port] = true
		}
	}
	out := make([]int32, 0, len(set))
	for tp := range set {
		out = append(out, tp)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// View is what one proxy is sent, cut from the whole translation. A proxy that described
// itself (xdsmeta.NodeInfo) gets the clusters its outbound listeners name, the clusters that
// name at least one identity it may call (a cluster mixing those with others is still sent,
// so the proxy reports the widening), their endpoints, listeners and routes, and the inbound
// listeners of the Services it backs (scope: by the identity it proves). A proxy that did not
// describe itself gets every cluster and no inbound listener. The proxy checks every resource
// against its pinned floor either way: this is about not sending what it cannot use.
func View(all map[resource.Type][]types.Resource, scope map[string][]string, n xdsmeta.NodeInfo, described bool) map[resource.Type][]types.Resource {
	out := map[resource.Type][]types.Resource{}
	keep := map[string]bool{}
	for _, r := range all[resource.ClusterType] {
		c := r.(*clusterv3.Cluster)
		ok := !described || slices.Contains(n.Clusters, c.GetName())
		if !ok {
			cp, err := xdsmeta.Decode(c.GetMetadata().GetTypedFilterMetadata()[xdsmeta.FilterKey])
			ok = err == nil && slices.ContainsFunc(cp.Identities, func(id string) bool { return slices.Contains(n.UpstreamIdentities, id) })
		}
		if ok {
			keep[c.GetName()] = true
			out[resource.ClusterType] = append(out[resource.ClusterType], c)
		}
	}
	for _, r := range all[resource.EndpointType] {
		if keep[r.(*endpointv3.ClusterLoadAssignment).GetClusterName()] {
			out[resource.EndpointType] = append(out[resource.EndpointType], r)
		}
	}
	for _, r := range all[resource.ListenerType] {
		l := r.(*listenerv3.Listener)
		if ids, inbound := scope[l.GetName()]; inbound {
			if described && slices.Contains(ids, n.Identity) {
				out[resource.ListenerType] = append(out[resource.ListenerType], l)
			}
			continue
		}
		if keep[l.GetName()] { // a VIP listener is named after its cluster
			out[resource.ListenerType] = append(out[resource.ListenerType], l)
		}
	}
	for _, r := range all[resource.RouteType] {
		if keep[r.(*routev3.RouteConfiguration).GetName()] {
			out[resource.RouteType] = append(out[resource.RouteType], r)
		}
	}
	return out
}

func ads() *corev3.ConfigSource {
	return &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3, ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
}

func mustFilter(name string, cfg proto.Message) *listenerv3.Filter {
	a, err := anypb.New(cfg)
	if err != nil {
		panic(err) // only our own well-formed messages are marshalled
	}
	return &listenerv3.Filter{Name: name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}
}

func protocolOf(p corev1.ServicePort) string {
	if p.AppProtocol != nil {
		if strings.EqualFold(*p.AppProtocol, "http") || strings.EqualFold(*p.AppProtocol, "kubernetes.io/http") {
			return xdsmeta.ProtocolHTTP
		}
		return xdsmeta.ProtocolTCP
	}
	if p.Name == "http" || strings.HasPrefix(p.Name, "http-") {
		return xdsmeta.ProtocolHTTP
	}
	return xdsmeta.ProtocolTCP
}

// podRef is the pod an endpoint of the slice points at (its namespace defaults to the slice's).
func podRef(sl *discoveryv1.EndpointSlice, ep discoveryv1.Endpoint) (ns, name string, ok bool) {
	if ep.TargetRef == nil || ep.TargetRef.Kind != "Pod" {
		return "", "", false
	}
	ns = ep.TargetRef.Namespace
	if ns == "" {
		ns = sl.Namespace
	}
	return ns, ep.TargetRef.Name, true
}

// identities: the Service's annotation, else the union of its endpoints' pods' identities.
func identities(svc *corev1.Service, slices []*discoveryv1.EndpointSlice, pods map[string]*corev1.Pod) []string {
	set := map[string]bool{}
	if s := svc.Annotations[AnnotationUpstreamIdentity]; s != "" {
		for _, id := range strings.Split(s, ",") {
			if id = strings.TrimSpace(id); id != "" {
				set[id] = true
			}
		}
	} else {
		for _, sl := range slices {
			for _, ep := range sl.Endpoints {
				ns, name, ok := podRef(sl, ep)
				if !ok {
					continue
				}
				if pod := pods[ns+"/"+name]; pod != nil {
					if id := pod.Annotations[AnnotationPodIdentity]; id != "" {
						set[id] = true
					}
				}
			}
		}
	}
	out := make([]string, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// assignment lists the ready endpoints of a Service port: the slices' ports with the same
// name as the Service port.
func assignment(cluster string, p corev1.ServicePort, slices []*discoveryv1.EndpointSlice) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: cluster}
	var lbs []*endpointv3.LbEndpoint
	seen := map[string]bool{}
	for _, sl := range slices {
		if sl.AddressType != discoveryv1.AddressTypeIPv4 && sl.AddressType != discoveryv1.AddressTypeIPv6 && sl.AddressType != discoveryv1.AddressTypeFQDN {
			continue
		}
		var port int32
		for _, sp := range sl.Ports {
			if sp.Port != nil && ptrString(sp.Name) == p.Name && (sp.Protocol == nil || *sp.Protocol == corev1.ProtocolTCP) {
				port = *sp.Port
			}
		}
		if port == 0 {
			continue
		}
		for _, ep := range sl.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			if ep.Conditions.Terminating != nil && *ep.Conditions.Terminating {
				continue
			}
			for _, addr := range ep.Addresses {
				k := fmt.Sprintf("%s|%d", addr, port)
				if seen[k] {
					continue
				}
				seen[k] = true
				lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
						Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
					}}},
				}}})
			}
		}
	}
	sort.Slice(lbs, func(i, j int) bool {
		a, b := lbs[i].GetEndpoint().GetAddress().GetSocketAddress(), lbs[j].GetEndpoint().GetAddress().GetSocketAddress()
		if a.GetAddress() != b.GetAddress() {
			return a.GetAddress() < b.GetAddress()
		}
		return a.GetPortValue() < b.GetPortValue()
	})
	cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}
	return cla
}

func ptrString(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
