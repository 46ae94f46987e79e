package xdsclient

import (
	"crypto/tls"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/countersign/countersign/proxy/xdsmeta"
)

type sent struct {
	reqs []*discoveryv3.DiscoveryRequest
}

func (s *sent) Send(r *discoveryv3.DiscoveryRequest) error { s.reqs = append(s.reqs, r); return nil }

func anyOf(t *testing.T, m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func cluster(t *testing.T, name string, cp *xdsmeta.ClusterPolicy, typ clusterv3.Cluster_DiscoveryType) *anypb.Any {
	c := &clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: typ},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}}
	if cp != nil {
		md, err := xdsmeta.Encode(*cp)
		if err != nil {
			t.Fatal(err)
		}
		c.Metadata = &corev3.Metadata{TypedFilterMetadata: map[string]*anypb.Any{xdsmeta.FilterKey: md}}
	}
	return anyOf(t, c)
}

func cla(t *testing.T, name string, port uint32) *anypb.Any {
	return anyOf(t, &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.1.0.2", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}}},
	}}}}})
}

// TestNackKeepsLastGood: a good push is ACKed and applied (after its endpoints arrive); a bad
// one of each kind is NACKed with a reason and the version kept, and the state is unchanged.
func TestNackKeepsLastGood(t *testing.T) {
	var events []Event
	c, err := New(Config{
		Server:  "x:1",
		TLS:     &tls.Config{},
		NodeID:  "n",
		Floor:   floorEngine(t),
		Allowed: func(string) []string { return []string{"back"} },
		OnEvent: func(e Event) { events = append(events, e) },
	})
	if err != nil {
		t.Fatal(err)
	}
	s := &sent{}
	good := &xdsmeta.ClusterPolicy{Protocol: "http", Identities: []string{"back"}}
	must := func(resp *discoveryv3.DiscoveryResponse) {
		t.Helper()
		if err := c.handle(s, resp); err != nil {
			t.Fatal(err)
		}
	}
	must(&discoveryv3.DiscoveryResponse{TypeUrl: resource.ClusterType, VersionInfo: "1", Nonce: "a", Resources: []*anypb.Any{cluster(t, "c", good, clusterv3.Cluster_EDS)}})
	if c.State().Cluster("c") != nil {
		t.Error("a cluster is active before its endpoints arrived")
	}
	if last := s.reqs[len(s.reqs)-1]; last.TypeUrl != resource.EndpointType || len(last.ResourceNames) != 1 || last.ResourceNames[0] != "c" {
		t.Errorf("no EDS subscription for c: %v", last)
	}
	must(&discoveryv3.DiscoveryResponse{TypeUrl: resource.EndpointType, VersionInfo: "1", Nonce: "b", Resources: []*anypb.Any{cla(t, "c", 8443)}})
	st := c.State()
	if cl := st.Cluster("c"); cl == nil || len(cl.Endpoints) != 1 || cl.Endpoints[0] != "10.1.0.2:8443" {
		t.Fatalf("state after EDS: %+v", st.Clusters)
	}
	bad := map[string]*discoveryv3.DiscoveryResponse{
		"not EDS":       {TypeUrl: resource.ClusterType, VersionInfo: "2", Nonce: "c", Resources: []*anypb.Any{cluster(t, "c", good, clusterv3.Cluster_STATIC)}},
		"no metadata":   {TypeUrl: resource.ClusterType, VersionInfo: "3", Nonce: "d", Resources: []*anypb.Any{cluster(t, "c", nil, clusterv3.Cluster_EDS)}},
		"widening":      {TypeUrl: resource.ClusterType, VersionInfo: "4", Nonce: "e", Resources: []*anypb.Any{cluster(t, "c", &xdsmeta.ClusterPolicy{Protocol: "http", Identities: []string{"prod"}}, clusterv3.Cluster_EDS)}},
		"bad port":      {TypeUrl: resource.EndpointType, VersionInfo: "5", Nonce: "f", Resources: []*anypb.Any{cla(t, "c", 70000)}},
		"wrong type":    {TypeUrl: resource.EndpointType, VersionInfo: "6", Nonce: "g", Resources: []*anypb.Any{cluster(t, "c", good, clusterv3.Cluster_EDS)}},
		"duplicate":     {TypeUrl: resource.ClusterType, VersionInfo: "7", Nonce: "h", Resources: []*anypb.Any{cluster(t, "c", good, clusterv3.Cluster_EDS), cluster(t, "c", good, clusterv3.Cluster_EDS)}},
		"unknown proto": {TypeUrl: resource.ClusterType, VersionInfo: "8", Nonce: "i", Resources: []*anypb.Any{cluster(t, "c", &xdsmeta.ClusterPolicy{Protocol: "udp", Identities: []string{"back"}}, clusterv3.Cluster_EDS)}},
	}
	for name, resp := range bad {
		n := len(s.reqs)
		must(resp)
		nack := s.reqs[n]
		if nack.ErrorDetail == nil || nack.ErrorDetail.Message == "" {
			t.Errorf("%s: not NACKed: %v", name, nack)
			continue
		}
		if nack.ResponseNonce != resp.Nonce || nack.VersionInfo != "1" {
			t.Errorf("%s: NACK nonce %q version %q, want %q and the kept version 1", name, nack.ResponseNonce, nack.VersionInfo, resp.Nonce)
		}
		if c.State() != st {
			t.Errorf("%s: the state changed after a rejected response", name)
		}
		if ev := events[len(events)-1]; ev.Err == nil || (name == "widening") != ev.Widening {
			t.Errorf("%s: event %+v", name, ev)
		}
		t.Logf("%s: NACK %q", name, nack.ErrorDetail.Message)
	}
	for _, ev := range events[2:] {
		if msg := strings.ToLower(ev.Err.Error()); !strings.Contains(msg, "cluster") && !strings.Contains(msg, "c:") {
			t.Errorf("a NACK reason does not name the resource or its type: %v", ev.Err)
		}
	}
}
