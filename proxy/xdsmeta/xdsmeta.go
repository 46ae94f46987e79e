// Package xdsmeta is Countersign's policy as carried in Envoy resources: a Cluster's typed
// filter metadata under FilterKey holds a ClusterPolicy (a google.protobuf.Struct). The
// control plane (injector/xds) encodes it; the proxy (proxy/xdsclient) decodes it strictly
// and checks that it only narrows the policy floor pinned in the proxy's configuration.
package xdsmeta

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
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
func Encode(p ClusterPolicy) (*anypb.Any, error) {
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

// Decode parses a typed metadata entry strictly: a Struct with only known fields.
func Decode(a *anypb.Any) (ClusterPolicy, error) {
	var p ClusterPolicy
	if a == nil {
		return p, errors.New("no " + FilterKey + " metadata")
	}
	s := &structpb.Struct{}
	if err := a.UnmarshalTo(s); err != nil {
		return p, fmt.Errorf("%s: expected a google.protobuf.Struct, got %s", FilterKey, a.GetTypeUrl())
	}
	b, err := protojson.Marshal(s)
	if err != nil {
		return p, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return p, fmt.Errorf("%s: %v", FilterKey, err)
	}
	if p.Protocol != ProtocolHTTP && p.Protocol != ProtocolTCP {
		return p, fmt.Errorf("%s.protocol: %q, expected http or tcp", FilterKey, p.Protocol)
	}
	if len(p.Identities) == 0 {
		return p, fmt.Errorf("%s.identities: empty; a cluster must name the identities its upstreams prove", FilterKey)
	}
	return p, nil
}
