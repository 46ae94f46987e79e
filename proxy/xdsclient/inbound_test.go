package xdsclient

import (
	"crypto/tls"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/countersign/countersign/proxy/xdsmeta"
)

func inboundListener(t *testing.T, name string, port uint32, ip *xdsmeta.InboundPolicy, dir corev3.TrafficDirection) *anypb.Any {
	l := &listenerv3.Listener{Name: name, TrafficDirection: dir, Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
		SocketAddress: &corev3.SocketAddress{Address: "0.0.0.0", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}}
	if ip != nil {
		md, err := xdsmeta.EncodeInbound(*ip)
		if err != nil {
			t.Fatal(err)
		}
		l.Metadata = &corev3.Metadata{TypedFilterMetadata: map[string]*anypb.Any{xdsmeta.FilterKey: md}}
	}
	return anyOf(t, l)
}

// TestInboundNarrowing: a pushed inbound Listener narrows who may call the proxy's inbound
// listener on its port (applied in the published State, with an engine enforcing the
// narrowings); one that would widen the pinned allow list, or is malformed, is NACKed with a
// reason and the last good State kept; one for a port the proxy does not serve is ignored.
func TestInboundNarrowing(t *testing.T) {
	var events []Event
	pinned := map[uint16][]string{8443: {"back", "prod"}}
	c, err := New(Config{
		Server:  "x:1",
		TLS:     &tls.Config{},
		NodeID:  "n",
		Floor:   floorEngine(t),
		Allowed: func(string) []string { return nil },
		Inbound: func(port uint16) (string, []string, bool) {
			a, ok := pinned[port]
			return "api", a, ok
		},
		OnEvent: func(e Event) { events = append(events, e) },
	})
	if err != nil {
		t.Fatal(err)
	}
	s := &sent{}
	push := func(version string, ls ...*anypb.Any) *discoveryv3.DiscoveryRequest {
		t.Helper()
		n := len(s.reqs)
		if err := c.handle(s, &discoveryv3.DiscoveryResponse{TypeUrl: resource.ListenerType, VersionInfo: version, Nonce: "n" + version, Resources: ls}); err != nil {
			t.Fatal(err)
		}
		return s.reqs[n]
	}
	in := corev3.TrafficDirection_INBOUND
	// Narrow to one of the two pinned callers, and pin one build of it.
	ack := push("1", inboundListener(t, "inbound|ns/back:http|8443", 8443, &xdsmeta.InboundPolicy{Allow: []string{"back"},
		Narrow: map[string]xdsmeta.Narrowing{"back": {MREnclave: []string{mrB}}}}, in),
		inboundListener(t, "inbound|ns/other:http|9999", 9999, &xdsmeta.InboundPolicy{Allow: []string{"back"}}, in))
	if ack.ErrorDetail != nil {
		t.Fatalf("narrowing NACKed: %s", ack.ErrorDetail.Message)
	}
	st := c.State()
	got := st.InboundOn(8443)
	if got == nil || got.Pinned != "api" || len(got.Allow) != 1 || got.Allow[0] != "back" {
		t.Fatalf("inbound state %+v", got)
	}
	if st.InboundOn(9999) != nil {
		t.Error("an inbound listener for a port this proxy does not serve was applied")
	}
	now := time.Now()
	if d := got.Engine.Policy.Evaluate(claims(mrA, true), "back", now); d.Allowed() {
		t.Error("the narrowed engine accepts the build the narrowing removed")
	}
	if d := got.Engine.Policy.Evaluate(claims(mrB, true), "back", now); !d.Allowed() {
		t.Errorf("the narrowed engine refuses the pinned build: %v", d.Rejection)
	}

	bad := map[string]struct {
		l    *anypb.Any
		want string
	}{
		"widens allow": {inboundListener(t, "i", 8443, &xdsmeta.InboundPolicy{Allow: []string{"back", "other"}}, in), "allow[1]: widens the policy floor"},
		"widens build": {inboundListener(t, "i", 8443, &xdsmeta.InboundPolicy{Allow: []string{"back"}, Narrow: map[string]xdsmeta.Narrowing{"back": {MREnclave: []string{mrC}}}}, in), "narrow.back.mrenclave[0]"},
		"empty allow":  {inboundListener(t, "i", 8443, &xdsmeta.InboundPolicy{}, in), "allow: empty"},
		"no metadata":  {inboundListener(t, "i", 8443, nil, in), "no countersign.io/policy metadata"},
		"outbound with policy": {inboundListener(t, "i", 8443, &xdsmeta.InboundPolicy{Allow: []string{"back"}}, corev3.TrafficDirection_OUTBOUND),
			"only meaningful on an inbound listener"},
	}
	v := 2
	for name, b := range bad {
		v++
		nack := push(strconv.Itoa(v), b.l)
		if nack.ErrorDetail == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if !strings.Contains(nack.ErrorDetail.Message, b.want) || !strings.Contains(nack.ErrorDetail.Message, "listener i") {
			t.Errorf("%s: NACK reason %q, want it to name the listener and contain %q", name, nack.ErrorDetail.Message, b.want)
		}
		if nack.VersionInfo != "1" {
			t.Errorf("%s: NACK keeps version %q, want 1", name, nack.VersionInfo)
		}
		if c.State() != st {
			t.Errorf("%s: the state changed after a rejected push", name)
		}
		if ev := events[len(events)-1]; strings.HasPrefix(name, "widens") != ev.Widening {
			t.Errorf("%s: event widening=%v", name, ev.Widening)
		}
	}
	// Two inbound listeners for one port: refused rather than guessing which applies.
	if nack := push("20", inboundListener(t, "a", 8443, &xdsmeta.InboundPolicy{Allow: []string{"back"}}, in),
		inboundListener(t, "b", 8443, &xdsmeta.InboundPolicy{Allow: []string{"prod"}}, in)); nack.ErrorDetail == nil {
		t.Error("two inbound listeners for one port were accepted")
	}
	// Removed: the pinned allow list is in force again.
	if ack := push("30"); ack.ErrorDetail != nil || c.State().InboundOn(8443) != nil {
		t.Errorf("removing the narrowing: %v %+v", ack.ErrorDetail, c.State().InboundOn(8443))
	}
}
