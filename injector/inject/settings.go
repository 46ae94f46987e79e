package inject

// Parse once, then render: ParseSettings reads and checks every Countersign annotation of a pod
// into a Settings value (as Linkerd's ResourceConfig does); Inject renders the proxy's
// configuration, containers and volumes from that value and nothing else, so no annotation is
// read, or a port re-parsed, after this file.

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/countersign/countersign/attestation/attester"
	"github.com/countersign/countersign/proxy/config"
)

// Settings is what a pod's annotations ask for, decoded and checked, with the injector's
// defaults filled in where the pod has no annotation.
type Settings struct {
	// Identity is the policy identity the proxy proves (countersign.dev/identity).
	Identity string
	// Attester is sgx or sim.
	Attester string
	// PolicyConfigMap holds the pod's policy.yaml (and the attestation service's CA).
	PolicyConfigMap string
	// AttestationURL is the attestation service; AttestationCAKey the key of the policy
	// ConfigMap holding its CA ("" for the system roots).
	AttestationURL   string
	AttestationCAKey string
	// SimMREnclave is the measurement a sim proxy claims (zero for the attester's default).
	SimMREnclave config.Measurement
	// CPU, Memory and EPC size the proxy container (EPC only with the sgx attester).
	CPU, Memory, EPC resource.Quantity
	// AdminPort serves /readyz, /healthz and /metrics.
	AdminPort uint16
	// Inbound and Outbound are the explicit listeners, sorted by annotation.
	Inbound  []Listener
	Outbound []Listener
	// Transparent is nil unless countersign.dev/transparent=enabled.
	Transparent *Transparent
	// XDS is whether the proxy subscribes to the control plane (countersign.dev/xds; default:
	// whether the injector runs one), and so which proxy build the pod gets.
	XDS bool
	// XDSUpstreamIdentities are what the control plane's clusters may require of upstreams.
	XDSUpstreamIdentities []string
	// AppImage is the first app container's image, claimed (not measured) runtime data.
	AppImage string
}

// Listener is one inbound.countersign.dev/<name> or outbound.countersign.dev/<name> annotation.
type Listener struct {
	// Annotation is the annotation's key, for messages.
	Annotation string
	Name       string
	Port       uint16
	Protocol   string
	// Forward is the app's port (inbound only).
	Forward uint16
	// Upstream is the peer proxy's host:port (outbound only).
	Upstream string
	// Identities are the callers allowed (inbound) or the identities the upstream must prove
	// (outbound).
	Identities []string
	// Public is the TLS Secret of a listener that serves browsers (inbound only; no Identities).
	Public string
}

// Transparent is the interception the transparent annotations ask for.
type Transparent struct {
	// Inbound are the app ports reached through inbound interception, sorted by annotation.
	Inbound []TransparentListener
	// ExcludeInboundPorts holds the admin port, the explicit inbound listeners' ports and the
	// annotated ones, sorted and without duplicates.
	ExcludeInboundPorts  []uint16
	ExcludeOutboundPorts []uint16
	ExcludeOutboundCIDRs []string
}

// TransparentListener is one transparent-inbound.countersign.dev/<name> annotation.
type TransparentListener struct {
	Name       string
	Port       uint16
	Protocol   string
	Identities []string
}

// boundedAnnotations are the single-valued annotations whose size ParseSettings caps.
var boundedAnnotations = []string{
	AnnotationIdentity, AnnotationAttester, AnnotationPolicy, AnnotationCPU, AnnotationMemory,
	AnnotationEPC, AnnotationAdminPort, AnnotationAttestationURL, AnnotationAttestationCAKey,
	AnnotationSimMREnclave, AnnotationTransparent, AnnotationExcludeInboundPorts,
	AnnotationExcludeOutboundPorts, AnnotationExcludeOutboundCIDRs, AnnotationXDSUpstreamIdentities,
	AnnotationXDS,
}

// ParseSettings decodes and checks the pod's annotations. A bad annotation is an *Error naming
// the annotation, its value and what is allowed; the pod is not changed.
func (c *Config) ParseSettings(pod *corev1.Pod) (*Settings, error) {
	ann := pod.Annotations
	for _, k := range boundedAnnotations {
		if v, ok := ann[k]; ok && len(v) > MaxAnnotationValue {
			return nil, annErr(k, v, "%d bytes, at most %d allowed", len(v), MaxAnnotationValue)
		}
	}
	s := &Settings{}
	var err error
	if s.Identity, err = parseIdentity(ann); err != nil {
		return nil, err
	}
	if s.Attester, err = c.parseAttester(ann); err != nil {
		return nil, err
	}
	if s.PolicyConfigMap, err = c.parsePolicyConfigMap(ann); err != nil {
		return nil, err
	}
	if s.AdminPort, err = parseAdminPort(ann); err != nil {
		return nil, err
	}
	if s.Inbound, s.Outbound, err = parseListeners(ann); err != nil {
		return nil, err
	}
	if s.Transparent, err = c.parseTransparent(ann, s.AdminPort, s.Inbound); err != nil {
		return nil, err
	}
	if len(s.Inbound)+len(s.Outbound) == 0 && s.Transparent == nil {
		return nil, &Error{Reason: ReasonInvalidAnnotation, Message: fmt.Sprintf(
			"no listeners: at least one %s<name> or %s<name> annotation, or %s=%s, is required", InboundPrefix, OutboundPrefix, AnnotationTransparent, ValueEnabled)}
	}
	if s.XDS, s.XDSUpstreamIdentities, err = c.parseXDS(ann); err != nil {
		return nil, err
	}
	if s.AttestationURL, s.AttestationCAKey, err = c.parseAttestationService(ann); err != nil {
		return nil, err
	}
	if s.SimMREnclave, err = parseSimMREnclave(ann, s.Attester); err != nil {
		return nil, err
	}
	if err := c.parseResources(ann, s); err != nil {
		return nil, err
	}
	for _, ctr := range pod.Spec.Containers {
		if ctr.Image != "" {
			s.AppImage = ctr.Image
			break
		}
	}
	return s, nil
}

func parseIdentity(ann map[string]string) (string, error) {
	id, ok := ann[AnnotationIdentity]
	if !ok || id == "" {
		return "", &Error{Reason: ReasonInvalidAnnotation, Annotation: AnnotationIdentity, Message: fmt.Sprintf(
			"annotation %s is required: the policy identity this workload's proxy proves (e.g. records-api)", AnnotationIdentity)}
	}
	if !identityRE.MatchString(id) {
		return "", annErr(AnnotationIdentity, id, "not a policy identity name (expected lowercase letters, digits, '.', '_' or '-', at most 63)")
	}
	return id, nil
}

func (c *Config) parseAttester(ann map[string]string) (string, error) {
	v, ok := ann[AnnotationAttester]
	if !ok {
		v = c.DefaultAttester
	} else if v != attester.NameSGX && v != attester.NameSim {
		return "", annErr(AnnotationAttester, v, "expected sgx or sim")
	}
	if v == attester.NameSGX && c.ProxyImage == "" {
		// The enclave image is built only where EGo's toolchain is (docs/images.md); without
		// one the pod would get no proxy it could attest with.
		return "", annErr(AnnotationAttester, v, "this injector has no image for the sgx (EGo enclave) proxy (its --proxy-image is not set); use %s=sim or install the chart with image.proxy", AnnotationAttester)
	}
	return v, nil
}

func (c *Config) parsePolicyConfigMap(ann map[string]string) (string, error) {
	v, ok := ann[AnnotationPolicy]
	if !ok {
		return c.PolicyConfigMap, nil
	}
	if !dnsLabelRE.MatchString(v) {
		return "", annErr(AnnotationPolicy, v, "not a ConfigMap name (expected a DNS subdomain name)")
	}
	return v, nil
}

func parseAdminPort(ann map[string]string) (uint16, error) {
	v, ok := ann[AnnotationAdminPort]
	if !ok {
		return DefaultAdminPort, nil
	}
	return parsePort(AnnotationAdminPort, v, "admin port", v)
}

// parseResources reads the proxy's CPU, memory and (sgx only) EPC.
func (c *Config) parseResources(ann map[string]string, s *Settings) error {
	var err error
	if s.CPU, err = parseQuantity(ann, AnnotationCPU, c.CPU); err != nil {
		return err
	}
	if s.Memory, err = parseQuantity(ann, AnnotationMemory, c.Memory); err != nil {
		return err
	}
	s.EPC = c.EPC
	if s.Attester == attester.NameSGX {
		s.EPC, err = parseQuantity(ann, AnnotationEPC, c.EPC)
		return err
	}
	if v, ok := ann[AnnotationEPC]; ok {
		return annErr(AnnotationEPC, v, "only meaningful with %s=sgx (this pod uses the %s attester)", AnnotationAttester, s.Attester)
	}
	return nil
}

// parseXDS reads whether the proxy uses the control plane and the upstream identities xDS
// clusters may require (nil without the annotation).
func (c *Config) parseXDS(ann map[string]string) (bool, []string, error) {
	use := c.XDS != nil
	if v, ok := ann[AnnotationXDS]; ok {
		switch v {
		case ValueEnabled:
			if c.XDS == nil {
				return false, nil, annErr(AnnotationXDS, v, "this injector runs no control plane (its --xds-listen is not set)")
			}
			use = true
		case ValueDisabled:
			use = false
		default:
			return false, nil, annErr(AnnotationXDS, v, "expected %s or %s", ValueEnabled, ValueDisabled)
		}
	}
	v, ok := ann[AnnotationXDSUpstreamIdentities]
	if !ok {
		return use, nil, nil
	}
	if c.XDS == nil {
		return false, nil, annErr(AnnotationXDSUpstreamIdentities, v, "this injector runs no control plane (its --xds-listen is not set)")
	}
	if !use {
		return false, nil, annErr(AnnotationXDSUpstreamIdentities, v, "only meaningful when the proxy uses the control plane (this pod has %s=%s)", AnnotationXDS, ValueDisabled)
	}
	ids, err := parseIdentities(AnnotationXDSUpstreamIdentities, v, "identities", v)
	return use, ids, err
}

// listenerNames returns the sorted keys of ann that start with one of the prefixes.
func listenerNames(ann map[string]string, prefixes ...string) []string {
	var ks []string
	for k := range ann {
		for _, p := range prefixes {
			if strings.HasPrefix(k, p) {
				ks = append(ks, k)
				break
			}
		}
	}
	sort.Strings(ks)
	return ks
}
