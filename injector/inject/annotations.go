package inject

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Labels and annotations (docs/injection.md is the reference).
const (
	// LabelInject on a pod or its namespace: "enabled" opts in; "disabled" on the pod opts out.
	LabelInject   = "countersign.dev/inject"
	ValueEnabled  = "enabled"
	ValueDisabled = "disabled"

	// AnnotationIdentity is the policy identity the workload's proxy proves (required).
	AnnotationIdentity = "countersign.dev/identity"
	// AnnotationAttester is sgx or sim (default: the injector's --default-attester).
	AnnotationAttester = "countersign.dev/attester"
	// AnnotationPolicy names the ConfigMap in the pod's namespace holding policy.yaml.
	AnnotationPolicy = "countersign.dev/policy-configmap"
	// AnnotationCPU and AnnotationMemory size the proxy container (requests; memory also limit).
	AnnotationCPU    = "countersign.dev/proxy-cpu"
	AnnotationMemory = "countersign.dev/proxy-memory"
	// AnnotationEPC is the SGX enclave page cache the proxy requests (sgx only).
	AnnotationEPC = "countersign.dev/sgx-epc"
	// AnnotationAdminPort is the proxy's admin port (/readyz, /metrics), default 15020.
	AnnotationAdminPort = "countersign.dev/admin-port"
	// InboundPrefix and OutboundPrefix start the per-listener annotations:
	// inbound.countersign.dev/<name>: "port=8443 forward=8080 protocol=http allow=a,b"
	//   (or, for browsers, "port=9443 forward=8080 protocol=http public=<tls Secret>")
	// outbound.countersign.dev/<name>: "port=6380 upstream=host:port identity=a,b protocol=tcp"
	InboundPrefix  = "inbound.countersign.dev/"
	OutboundPrefix = "outbound.countersign.dev/"

	// Written by the injector.
	AnnotationStatus      = "countersign.dev/status"
	AnnotationProxyConfig = "countersign.dev/proxy-config"
	StatusInjected        = "injected"
)

// MaxAnnotationValue bounds one configuration annotation's value.
const MaxAnnotationValue = 4096

// MaxListeners bounds inbound plus outbound listeners per pod.
const MaxListeners = 32

var listenerNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// fieldsOf splits "k=v k=v" into a map, naming the annotation on error.
func fieldsOf(ann, value string, allowed map[string]bool) (map[string]string, error) {
	out := map[string]string{}
	for _, f := range strings.Fields(value) {
		k, v, ok := strings.Cut(f, "=")
		if !ok || v == "" {
			return nil, annErr(ann, value, "%q is not key=value", f)
		}
		if !allowed[k] {
			return nil, annErr(ann, value, "unknown field %q (expected %s)", k, keys(allowed))
		}
		if _, dup := out[k]; dup {
			return nil, annErr(ann, value, "field %q given twice (expected each field once)", k)
		}
		out[k] = v
	}
	return out, nil
}

func keys(m map[string]bool) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ", ")
}

// annErr is a rejection naming the annotation, what was wrong and, in the format, what was expected.
func annErr(ann, value, format string, args ...any) *Error {
	v := value
	if len(v) > 120 {
		v = v[:120] + "..."
	}
	return &Error{Reason: ReasonInvalidAnnotation, Annotation: ann, Value: value,
		Message: fmt.Sprintf("annotation %s=%q: %s", ann, v, fmt.Sprintf(format, args...))}
}

func parsePort(ann, value, field, s string) (uint16, error) {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil || p < 1 {
		return 0, annErr(ann, value, "%s %q is not a port (expected 1-65535)", field, s)
	}
	return uint16(p), nil
}

// parseProtocol reads a transparent route's protocol: http or tcp.
func parseProtocol(ann, value, s string) (string, error) {
	switch s {
	case "http", "tcp":
		return s, nil
	case "":
		return "", annErr(ann, value, "protocol is required (expected http or tcp)")
	case "http2", "grpc":
		return "", annErr(ann, value, "protocol %q (expected http or tcp: http2 and grpc need an inbound.countersign.dev or outbound.countersign.dev listener)", s)
	}
	return "", annErr(ann, value, "protocol %q (expected http or tcp)", s)
}

// parseListenerProtocol reads an explicit listener's protocol: http, http2, grpc or tcp
// (docs/proxy-config.md).
func parseListenerProtocol(ann, value, s string) (string, error) {
	switch s {
	case "http", "http2", "grpc", "tcp":
		return s, nil
	case "":
		return "", annErr(ann, value, "protocol is required (expected http, http2, grpc or tcp)")
	}
	return "", annErr(ann, value, "protocol %q (expected http, http2, grpc or tcp)", s)
}

func parseIdentities(ann, value, field, s string) ([]string, error) {
	if s == "" {
		return nil, annErr(ann, value, "%s is required (expected a comma-separated list of policy identity names)", field)
	}
	ids := strings.Split(s, ",")
	for _, id := range ids {
		if !identityRE.MatchString(id) {
			return nil, annErr(ann, value, "%s %q is not a policy identity name (expected lowercase letters, digits, '.', '_' or '-')", field, id)
		}
	}
	return ids, nil
}

var identityRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`)

var inboundFields = map[string]bool{
	"port":     true,
	"forward":  true,
	"protocol": true,
	"allow":    true,
	"public":   true,
}
var outboundFields = map[string]bool{"port": true, "upstream": true, "identity": true, "protocol": true}

// parseListeners reads every inbound.countersign.dev/* and outbound.countersign.dev/* annotation,
// in a stable order (sorted by annotation key).
func parseListeners(ann map[string]string) (in, out []Listener, err error) {
	ks := listenerNames(ann, InboundPrefix, OutboundPrefix)
	if len(ks) > MaxListeners {
		return nil, nil, &Error{Reason: ReasonInvalidAnnotation,
			Message: fmt.Sprintf("%d listener annotations, at most %d allowed", len(ks), MaxListeners)}
	}
	for _, k := range ks {
		l, err := parseListener(k, ann[k])
		if err != nil {
			return nil, nil, err
		}
		if strings.HasPrefix(k, InboundPrefix) {
			in = append(in, l)
		} else {
			out = append(out, l)
		}
	}
	return in, out, nil
}

// parseListener reads one listener annotation k=v.
func parseListener(k, v string) (Listener, error) {
	if len(v) > MaxAnnotationValue {
		return Listener{}, annErr(k, v, "%d bytes, at most %d allowed", len(v), MaxAnnotationValue)
	}
	inbound := strings.HasPrefix(k, InboundPrefix)
	name := strings.TrimPrefix(strings.TrimPrefix(k, InboundPrefix), OutboundPrefix)
	if !listenerNameRE.MatchString(name) {
		return Listener{}, annErr(k, v, "listener name %q (expected lowercase letters, digits and '-', at most 63)", name)
	}
	allowed := outboundFields
	if inbound {
		allowed = inboundFields
	}
	f, err := fieldsOf(k, v, allowed)
	if err != nil {
		return Listener{}, err
	}
	l := Listener{Annotation: k, Name: name}
	if f["port"] == "" {
		return Listener{}, annErr(k, v, "port is required (expected port=1-65535)")
	}
	if l.Port, err = parsePort(k, v, "port", f["port"]); err != nil {
		return Listener{}, err
	}
	if l.Protocol, err = parseListenerProtocol(k, v, f["protocol"]); err != nil {
		return Listener{}, err
	}
	if inbound {
		if f["forward"] == "" {
			return Listener{}, annErr(k, v, "forward is required (expected forward=<the app's port>)")
		}
		if l.Forward, err = parsePort(k, v, "forward", f["forward"]); err != nil {
			return Listener{}, err
		}
		if l.Public, err = parsePublic(k, v, f); err != nil {
			return Listener{}, err
		}
		if l.Public == "" {
			if l.Identities, err = parseIdentities(k, v, "allow", f["allow"]); err != nil {
				return Listener{}, err
			}
		}
		return l, nil
	}
	l.Upstream = f["upstream"]
	if err := checkHostPort(l.Upstream); err != nil {
		return Listener{}, annErr(k, v, "upstream %q: %v (expected upstream=host:port of the peer's proxy)", l.Upstream, err)
	}
	if l.Identities, err = parseIdentities(k, v, "identity", f["identity"]); err != nil {
		return Listener{}, err
	}
	return l, nil
}

var quantityRE = regexp.MustCompile(`^[0-9]{1,12}(\.[0-9]{1,6})?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$`)

var hostRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$`)

func checkHostPort(hp string) error {
	if hp == "" {
		return fmt.Errorf("missing")
	}
	i := strings.LastIndexByte(hp, ':')
	if i <= 0 {
		return fmt.Errorf("no port")
	}
	host, port := hp[:i], hp[i+1:]
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
		if !strings.Contains(host, ":") {
			return fmt.Errorf("bad IPv6 literal")
		}
	} else if !hostRE.MatchString(host) {
		return fmt.Errorf("bad host %q", host)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("bad port %q", port)
	}
	return nil
}

// parseQuantity reads a resource quantity annotation.
func parseQuantity(ann map[string]string, key string, def resource.Quantity) (resource.Quantity, error) {
	v, ok := ann[key]
	if !ok {
		return def, nil
	}
	// Decimal and binary suffixes only: exponent forms ("1e-999999999") make
	// resource.ParseQuantity spin for minutes (found by FuzzReview).
	if !quantityRE.MatchString(v) {
		return resource.Quantity{}, annErr(key, v, "not a positive resource quantity (expected e.g. \"100m\", \"64Mi\")")
	}
	q, err := resource.ParseQuantity(v)
	if err != nil || q.Sign() <= 0 {
		return resource.Quantity{}, annErr(key, v, "not a positive resource quantity (expected e.g. \"100m\", \"64Mi\")")
	}
	return q, nil
}
