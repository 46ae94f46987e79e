// Package xdsmeta is Countersign's policy as carried in Envoy resources: a Cluster's typed
// filter metadata under FilterKey holds a ClusterPolicy, an inbound Listener's an
// InboundPolicy (each a google.protobuf.Struct); the node metadata under NodeKey carries a
// proxy's NodeInfo. The control plane (injector/xds) encodes the policies; the proxy
// (proxy/xdsclient) decodes them strictly and checks that they only narrow the policy floor
// pinned in the proxy's configuration.
package xdsmeta

import (
	"encoding/json"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/countersign/countersign/internal/strictdecode"
)

// FilterKey is the key of Countersign's entry in typed_filter_metadata.
const FilterKey = "countersign.io/policy"

// Protocols of a cluster.
const (
	ProtocolHTTP = "http"
	ProtocolTCP  = "tcp"
)

// ClusterPolicy is what a cluster's upstreams must prove and how to talk to them.
type ClusterPolicy struct {
	// Protocol is http or tcp.
	Protocol string `json:"protocol"`
	// Identities are policy identity names; an upstream must prove one of them.
	Identities []string `json:"identities"`
	// Authority is the Host sent upstream (http); default the endpoint address.
	Authority string `json:"authority,omitempty"`
	// Narrow optionally narrows named identities further (e.g. a rollout pins one build).
	Narrow map[string]Narrowing `json:"narrow,omitempty"`
}

// Narrowing narrows one identity. Absent fields keep the floor's value.
type Narrowing struct {
	MREnclave        []string `json:"mrenclave,omitempty"`
	MRSigner         []string `json:"mrsigner,omitempty"`
	MinSVN           *uint64  `json:"minSvn,omitempty"`
	AllowDebug       *bool    `json:"allowDebug,omitempty"`
	AttestationTypes []string `json:"attestationTypes,omitempty"`
	PolicyHash       []string `json:"policyHash,omitempty"`
	// MaxTokenAge is a Go duration ("1h").
	MaxTokenAge string `json:"maxTokenAge,omitempty"`
}

// Encode returns p as an Any holding a google.protobuf.Struct.
func Encode(p ClusterPolicy) (*anypb.Any, error) { return encode(p) }

func encode(p any) (*anypb.Any, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	s := &structpb.Struct{}
	if err := protojson.Unmarshal(b, s); err != nil {
		return nil, err
	}
	// Deterministic, so that equal policies give equal bytes (the control plane cuts a new
	// snapshot version only when the bytes change).
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, s, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, err
	}
	return a, nil
}

// Decode parses a cluster's typed metadata entry strictly: a Struct with only known fields.
func Decode(a *anypb.Any) (ClusterPolicy, error) {
	var p ClusterPolicy
	if err := decode(a, &p); err != nil {
		return p, err
	}
	if p.Protocol != ProtocolHTTP && p.Protocol != ProtocolTCP {
		return p, fmt.Errorf("%s.protocol: %q, expected http or tcp", FilterKey, p.Protocol)
	}
	if len(p.Identities) == 0 {
		return p, fmt.Errorf("%s.identities: empty; a cluster must name the identities its upstreams prove", FilterKey)
	}
	return p, nil
}

func decode(a *anypb.Any, p any) error {
	if a == nil {
		return errors.New("no " + FilterKey + " metadata")
	}
	s := &structpb.Struct{}
	if err := a.UnmarshalTo(s); err != nil {
		return fmt.Errorf("%s: expected a google.protobuf.Struct, got %s", FilterKey, a.GetTypeUrl())
	}
	b, err := protojson.Marshal(s)
	if err != nil {
		return err
	}
	if err := strictdecode.JSON(b, p); err != nil {
		return fmt.Errorf("%s: %v", FilterKey, err)
	}
	return nil
}

// InboundPolicy is what an inbound Listener's typed filter metadata (under FilterKey) holds:
// who may call the proxy's inbound listener on the Listener's port. It narrows the listener's
// pinned allow list, never widens it.
type InboundPolicy struct {
	// Allow are the policy identities allowed to call; a subset of the pinned allow list.
	Allow []string `json:"allow"`
	// Narrow optionally narrows named identities further.
	Narrow map[string]Narrowing `json:"narrow,omitempty"`
}

// EncodeInbound returns p as an Any holding a google.protobuf.Struct.
func EncodeInbound(p InboundPolicy) (*anypb.Any, error) { return encode(p) }

// DecodeInbound parses an inbound Listener's metadata strictly.
func DecodeInbound(a *anypb.Any) (InboundPolicy, error) {
	var p InboundPolicy
	if err := decode(a, &p); err != nil {
		return p, err
	}
	if len(p.Allow) == 0 {
		return p, fmt.Errorf("%s.allow: empty; an inbound listener's policy must name the identities allowed to call", FilterKey)
	}
	return p, nil
}

// NodeKey is the key of Countersign's entry in the xDS node metadata.
const NodeKey = "countersign.io/node"

// NodeInfo is what a proxy tells the control plane about itself, so the control plane can
// send it only what it may accept. It is a hint: the proxy checks every resource against its
// pinned floor whatever the control plane does with it.
type NodeInfo struct {
	// Identity is the policy identity the proxy proves (inbound listeners for the Services it
	// backs are sent to it).
	Identity string `json:"identity"`
	// UpstreamIdentities may be named by any cluster (xds.upstreamIdentities).
	UpstreamIdentities []string `json:"upstreamIdentities,omitempty"`
	// Clusters are named by the proxy's outbound listeners; they are always sent, so that a
	// widening is reported rather than silently left out.
	Clusters []string `json:"clusters,omitempty"`
}

// EncodeNode returns the node metadata Struct carrying n under NodeKey.
func EncodeNode(n NodeInfo) (*structpb.Struct, error) {
	b, err := json.Marshal(n)
	if err != nil {
		return nil, err
	}
	s := &structpb.Struct{}
	if err := protojson.Unmarshal(b, s); err != nil {
		return nil, err
	}
	return &structpb.Struct{Fields: map[string]*structpb.Value{NodeKey: structpb.NewStructValue(s)}}, nil
}

// DecodeNode reads NodeInfo from node metadata; ok is false when there is none.
func DecodeNode(md *structpb.Struct) (n NodeInfo, ok bool, err error) {
	v := md.GetFields()[NodeKey]
	if v == nil || v.GetStructValue() == nil {
		return n, false, nil
	}
	b, err := protojson.Marshal(v.GetStructValue())
	if err != nil {
		return n, false, err
	}
	if err := strictdecode.JSON(b, &n); err != nil {
		return n, false, fmt.Errorf("node metadata %s: %v", NodeKey, err)
	}
	return n, true, nil
}
