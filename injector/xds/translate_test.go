package xds

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/countersign/countersign/proxy/xdsmeta"
)

func p[T any](v T) *T { return &v }

func TestTranslate(t *testing.T) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "records", Namespace: "ns"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", Ports: []corev1.ServicePort{
			{Name: "http", Port: 80}, {Name: "redis", Port: 6379}, {Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
		}},
	}
	outside := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: "ns"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "records-x", Namespace: "ns", Labels: map[string]string{discoveryv1.LabelServiceName: "records"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.1.0.2"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "api-1"}},
			{Addresses: []string{"10.1.0.3"}, Conditions: discoveryv1.EndpointConditions{Ready: p(false)}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "api-2"}},
		},
		Ports: []discoveryv1.EndpointPort{{Name: p("http"), Port: p(int32(8080))}, {Name: p("redis"), Port: p(int32(6379))}},
	}
	pods := map[string]*corev1.Pod{"ns/api-1": {ObjectMeta: metav1.ObjectMeta{Name: "api-1", Namespace: "ns", Annotations: map[string]string{AnnotationPodIdentity: "records-api"}}}}
	res, skipped := Translate(Input{Services: []*corev1.Service{svc, outside}, Slices: []*discoveryv1.EndpointSlice{sl}, Pods: pods})
	if len(skipped) != 0 {
		t.Fatalf("skipped %v", skipped)
	}
	if n := len(res[resource.ClusterType]); n != 2 {
		t.Fatalf("%d clusters, want 2 (http, redis; udp and the plain service left out)", n)
	}
	c := res[resource.ClusterType][0].(*clusterv3.Cluster)
	if c.Name != "ns/records:http" {
		t.Errorf("cluster name %q", c.Name)
	}
	cp, err := xdsmeta.Decode(c.Metadata.TypedFilterMetadata[xdsmeta.FilterKey])
	if err != nil {
		t.Fatal(err)
	}
	if cp.Protocol != "http" || len(cp.Identities) != 1 || cp.Identities[0] != "records-api" || cp.Authority != "records.ns.svc:80" {
		t.Errorf("policy from the pods' identities: %+v", cp)
	}
	cla := res[resource.EndpointType][0].(*endpointv3.ClusterLoadAssignment)
	lbs := cla.Endpoints[0].LbEndpoints
	if len(lbs) != 1 || lbs[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue() != 8080 {
		t.Errorf("endpoints %v, want only the ready one on 8080", lbs)
	}
	ls := res[resource.ListenerType]
	if len(ls) != 2 || ls[0].(*listenerv3.Listener).GetAddress().GetSocketAddress().GetAddress() != "10.96.0.10" {
		t.Fatalf("listeners %v", ls)
	}
	if f := ls[0].(*listenerv3.Listener).FilterChains[0].Filters[0].Name; f != wellknown.HTTPConnectionManager {
		t.Errorf("http listener filter %s", f)
	}
	if f := ls[1].(*listenerv3.Listener).FilterChains[0].Filters[0].Name; f != wellknown.TCPProxy {
		t.Errorf("tcp listener filter %s", f)
	}
	if len(res[resource.RouteType]) != 1 {
		t.Errorf("%d routes, want 1 (http only)", len(res[resource.RouteType]))
	}
	snap, err := cachev3.NewSnapshot("1", res)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Consistent(); err != nil {
		t.Errorf("snapshot not consistent: %v", err)
	}
	// Deterministic: the same input gives the same digest.
	res2, _ := Translate(Input{Services: []*corev1.Service{outside, svc}, Slices: []*discoveryv1.EndpointSlice{sl}, Pods: pods})
	if digestOf(res) != digestOf(res2) {
		t.Error("translation is not deterministic")
	}
	// A malformed narrowing annotation leaves the service out, with a reason.
	svc.Annotations = map[string]string{AnnotationNarrow: `{"records-api":{"mrenclav":["x"]}}`}
	if _, sk := Translate(Input{Services: []*corev1.Service{svc}, Slices: []*discoveryv1.EndpointSlice{sl}, Pods: pods}); len(sk) != 1 {
		t.Errorf("skipped %v, want the service with the bad annotation", sk)
	}
}

func names(rs []types.Resource) []string {
	var out []string
	for _, r := range rs {
		out = append(out, cachev3.GetResourceName(r))
	}
	return out
}

// TestTranslateInboundAndViews: countersign.dev/allow on a Service becomes an inbound Listener
// on each target port (resolved through the EndpointSlices), and each proxy's view holds only
// what it may use: clusters it names or whose identities it may call (mixed ones included, so
// a widening is reported), their endpoints, listeners and routes, and the inbound listeners of
// the Services whose identity it proves.
func TestTranslateInboundAndViews(t *testing.T) {
	mk := func(name, id, allow string, port, target int32) (*corev1.Service, *discoveryv1.EndpointSlice) {
		ann := map[string]string{AnnotationUpstreamIdentity: id}
		if allow != "" {
			ann[AnnotationAllow] = allow
		}
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Annotations: ann},
			Spec: corev1.ServiceSpec{ClusterIP: "10.96.0." + fmt.Sprint(port%200), Ports: []corev1.ServicePort{{Name: "http", Port: port, TargetPort: intstr.FromString("api")}}}}
		sl := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: name + "-x", Namespace: "ns", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.2"}}},
			Ports:       []discoveryv1.EndpointPort{{Name: p("http"), Port: p(target)}},
		}
		return svc, sl
	}
	recSvc, recSl := mk("records", "records-api", "portal, ingress", 80, 8443)
	recSvc.Annotations[AnnotationAllowNarrow] = `{"portal":{"allowDebug":false}}`
	redisSvc, redisSl := mk("redis", "redis", "", 6379, 7443)
	mixedSvc, mixedSl := mk("mixed", "redis,rogue", "", 81, 7444)
	res, scope, skipped := translate(Input{Services: []*corev1.Service{recSvc, redisSvc, mixedSvc}, Slices: []*discoveryv1.EndpointSlice{recSl, redisSl, mixedSl}})
	if len(skipped) != 0 {
		t.Fatalf("skipped %v", skipped)
	}
	in := InboundName("ns/records:http", 8443)
	var il *listenerv3.Listener
	for _, r := range res[resource.ListenerType] {
		if l := r.(*listenerv3.Listener); l.Name == in {
			il = l
		}
	}
	if il == nil {
		t.Fatalf("no inbound listener %s in %v", in, names(res[resource.ListenerType]))
	}
	if il.TrafficDirection != corev3.TrafficDirection_INBOUND || il.GetAddress().GetSocketAddress().GetPortValue() != 8443 || len(il.FilterChains) != 0 {
		t.Errorf("inbound listener %v", il)
	}
	ip, err := xdsmeta.DecodeInbound(il.Metadata.TypedFilterMetadata[xdsmeta.FilterKey])
	if err != nil || !slices.Equal(ip.Allow, []string{"portal", "ingress"}) || ip.Narrow["portal"].AllowDebug == nil {
		t.Errorf("inbound policy %+v %v", ip, err)
	}
	if !slices.Equal(scope[in], []string{"records-api"}) {
		t.Errorf("scope %v", scope)
	}

	for _, tc := range []struct {
		name      string
		node      xdsmeta.NodeInfo
		described bool
		clusters  []string
		listeners []string
	}{
		{"undescribed: every cluster, no inbound", xdsmeta.NodeInfo{}, false,
			[]string{"ns/mixed:http", "ns/records:http", "ns/redis:http"}, []string{"ns/mixed:http", "ns/records:http", "ns/redis:http"}},
		{"records-api calls redis", xdsmeta.NodeInfo{Identity: "records-api", UpstreamIdentities: []string{"redis"}}, true,
			[]string{"ns/mixed:http", "ns/redis:http"}, []string{in, "ns/mixed:http", "ns/redis:http"}},
		{"portal calls records-api", xdsmeta.NodeInfo{Identity: "portal", UpstreamIdentities: []string{"records-api"}}, true,
			[]string{"ns/records:http"}, []string{"ns/records:http"}},
		{"a named cluster is always sent", xdsmeta.NodeInfo{Identity: "x", Clusters: []string{"ns/records:http"}}, true,
			[]string{"ns/records:http"}, []string{"ns/records:http"}},
		{"redis calls nobody", xdsmeta.NodeInfo{Identity: "redis"}, true, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := View(res, scope, tc.node, tc.described)
			cl, ls := names(v[resource.ClusterType]), names(v[resource.ListenerType])
			sort.Strings(cl)
			sort.Strings(ls)
			if !slices.Equal(cl, tc.clusters) || !slices.Equal(ls, tc.listeners) {
				t.Errorf("clusters %v listeners %v, want %v %v", cl, ls, tc.clusters, tc.listeners)
			}
			if !slices.Equal(names(v[resource.EndpointType]), names(v[resource.ClusterType])) {
				t.Errorf("endpoints %v for clusters %v", names(v[resource.EndpointType]), names(v[resource.ClusterType]))
			}
			snap, err := cachev3.NewSnapshot("1", v)
			if err == nil {
				err = snap.Consistent()
			}
			if err != nil {
				t.Errorf("view not consistent: %v", err)
			}
		})
	}
	// A narrowing without an allow list leaves the Service out, with a reason.
	delete(recSvc.Annotations, AnnotationAllow)
	if _, _, sk := translate(Input{Services: []*corev1.Service{recSvc}, Slices: []*discoveryv1.EndpointSlice{recSl}}); len(sk) != 1 || !strings.Contains(sk[0].Reason, AnnotationAllow) {
		t.Errorf("skipped %v", sk)
	}
}

// Translate turns the cluster state into Envoy resources. It is pure and deterministic.
func Translate(in Input) (map[resource.Type][]types.Resource, []Skipped) {
	out, _, skipped := translate(in)
	return out, skipped
}
