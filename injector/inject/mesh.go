package inject

// Transparent interception and the control-plane subscription of injected proxies
// (docs/injection.md, docs/transparent.md, docs/xds.md). inject.go calls meshConfig from
// proxyConfig and applyMesh from Inject; everything else about the mesh is here.

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/countersign/countersign/proxy/config"
)

// Mesh annotations.
const (
	// AnnotationTransparent: "enabled" intercepts the app's TCP traffic with iptables (an init
	// container with NET_ADMIN installs the rules); "disabled" or absent does not.
	AnnotationTransparent = "countersign.dev/transparent"
	// TransparentInboundPrefix starts one annotation per app port reached through the
	// proxy's inbound interception:
	// transparent-inbound.countersign.dev/<name>: "port=8080 protocol=http allow=portal,ingress"
	TransparentInboundPrefix = "transparent-inbound.countersign.dev/"
	// AnnotationExcludeInboundPorts, AnnotationExcludeOutboundPorts (comma-separated ports)
	// and AnnotationExcludeOutboundCIDRs (comma-separated CIDRs) are reached without the proxy.
	// The admin port and the ports of inbound.countersign.dev listeners are always excluded
	// from inbound interception.
	AnnotationExcludeInboundPorts  = "countersign.dev/exclude-inbound-ports"
	AnnotationExcludeOutboundPorts = "countersign.dev/exclude-outbound-ports"
	AnnotationExcludeOutboundCIDRs = "countersign.dev/exclude-outbound-cidrs"
	// AnnotationXDSUpstreamIdentities are the identities clusters pushed by the control plane
	// may require of their upstreams (the proxy's xds.upstreamIdentities). Without it the
	// control plane can only narrow policy and move the endpoints of named clusters.
	AnnotationXDSUpstreamIdentities = "countersign.dev/xds-upstream-identities"
	// AnnotationXDS (enabled or disabled) says whether the pod's proxy subscribes to the
	// control plane. Default: enabled when the injector runs one. A pod that does not gets
	// the lean proxy build without the xDS client (--proxy-sim-image); one that does gets the
	// xDS-capable build (--proxy-sim-xds-image).
	AnnotationXDS = "countersign.dev/xds"
)

// Names and paths of what transparent mode and xDS add.
const (
	IptablesContainerName = "countersign-iptables"
	VolumeXDS             = "countersign-xds"
	XDSDir                = "/etc/countersign/xds"
)

// MaxTransparentInbound bounds the transparent-inbound annotations per pod.
const MaxTransparentInbound = 32

// XDS is the control plane injected proxies subscribe to.
type XDS struct {
	// Address is the control plane's host:port; ServerName the name in its certificate.
	Address, ServerName string
	// ClientSecret is the Secret, in the pod's namespace, holding the proxy's client
	// certificate for the control plane (tls.crt, tls.key) and the CA that verifies the
	// control plane (ca.crt): the keys cert-manager writes.
	ClientSecret string
}

// transparentEnabled reads AnnotationTransparent.
func transparentEnabled(ann map[string]string) (bool, error) {
	v, ok := ann[AnnotationTransparent]
	if !ok {
		return false, nil
	}
	switch v {
	case ValueEnabled:
		return true, nil
	case ValueDisabled:
		return false, nil
	}
	return false, annErr(AnnotationTransparent, v, "expected %s or %s", ValueEnabled, ValueDisabled)
}

var transparentInboundFields = map[string]bool{"port": true, "protocol": true, "allow": true}

// parseTransparent reads the interception annotations; nil when interception is off. adminPort
// and the explicit inbound listeners are excluded from inbound interception.
func (c *Config) parseTransparent(ann map[string]string, adminPort uint16, inbound []Listener) (*Transparent, error) {
	on, err := transparentEnabled(ann)
	if err != nil {
		return nil, err
	}
	tin := listenerNames(ann, TransparentInboundPrefix)
	if !on {
		// Annotations that only mean something with interception are an error without it:
		// the author expects traffic to go through the proxy.
		for _, k := range append(tin, AnnotationExcludeInboundPorts, AnnotationExcludeOutboundPorts, AnnotationExcludeOutboundCIDRs) {
			if v, ok := ann[k]; ok {
				return nil, annErr(k, v, "only meaningful with %s=%s", AnnotationTransparent, ValueEnabled)
			}
		}
		return nil, nil
	}
	if c.ProxyInitImage == "" {
		return nil, annErr(AnnotationTransparent, ann[AnnotationTransparent], "this injector has no image for the iptables init container (its --proxy-init-image is not set)")
	}
	if len(tin) > MaxTransparentInbound {
		return nil, &Error{Reason: ReasonInvalidAnnotation, Message: fmt.Sprintf("%d %s* annotations, at most %d allowed", len(tin), TransparentInboundPrefix, MaxTransparentInbound)}
	}
	t := &Transparent{}
	for _, k := range tin {
		l, err := parseTransparentInbound(k, ann[k])
		if err != nil {
			return nil, err
		}
		t.Inbound = append(t.Inbound, l)
	}
	// Probes reach the admin port, and peers the explicit inbound listeners, directly.
	t.ExcludeInboundPorts = append(t.ExcludeInboundPorts, adminPort)
	for _, l := range inbound {
		t.ExcludeInboundPorts = append(t.ExcludeInboundPorts, l.Port)
	}
	if v, ok := ann[AnnotationExcludeInboundPorts]; ok {
		ps, err := parsePortList(AnnotationExcludeInboundPorts, v)
		if err != nil {
			return nil, err
		}
		t.ExcludeInboundPorts = append(t.ExcludeInboundPorts, ps...)
	}
	slices.Sort(t.ExcludeInboundPorts)
	t.ExcludeInboundPorts = slices.Compact(t.ExcludeInboundPorts)
	for _, in := range t.Inbound {
		if slices.Contains(t.ExcludeInboundPorts, in.Port) {
			return nil, &Error{Reason: ReasonPortConflict, Message: fmt.Sprintf(
				"port %d of annotation %s%s is excluded from inbound interception (it is the admin port, the port of an %s listener, or listed in %s)",
				in.Port, TransparentInboundPrefix, in.Name, InboundPrefix, AnnotationExcludeInboundPorts)}
		}
	}
	if v, ok := ann[AnnotationExcludeOutboundPorts]; ok {
		if t.ExcludeOutboundPorts, err = parsePortList(AnnotationExcludeOutboundPorts, v); err != nil {
			return nil, err
		}
	}
	if v, ok := ann[AnnotationExcludeOutboundCIDRs]; ok {
		for _, s := range strings.Split(v, ",") {
			s = strings.TrimSpace(s)
			if _, err := netip.ParsePrefix(s); err != nil {
				return nil, annErr(AnnotationExcludeOutboundCIDRs, v, "%q is not a CIDR (expected e.g. 10.96.0.1/32)", s)
			}
			t.ExcludeOutboundCIDRs = append(t.ExcludeOutboundCIDRs, s)
		}
	}
	return t, nil
}

// parseTransparentInbound reads one transparent-inbound.countersign.dev/<name> annotation.
func parseTransparentInbound(k, v string) (TransparentListener, error) {
	if len(v) > MaxAnnotationValue {
		return TransparentListener{}, annErr(k, v, "%d bytes, at most %d allowed", len(v), MaxAnnotationValue)
	}
	name := strings.TrimPrefix(k, TransparentInboundPrefix)
	if !listenerNameRE.MatchString(name) {
		return TransparentListener{}, annErr(k, v, "listener name %q (expected lowercase letters, digits and '-', at most 63)", name)
	}
	f, err := fieldsOf(k, v, transparentInboundFields)
	if err != nil {
		return TransparentListener{}, err
	}
	if f["port"] == "" {
		return TransparentListener{}, annErr(k, v, "port is required (expected port=<the app's port>)")
	}
	l := TransparentListener{Name: name}
	if l.Port, err = parsePort(k, v, "port", f["port"]); err != nil {
		return TransparentListener{}, err
	}
	if l.Protocol, err = parseProtocol(k, v, f["protocol"]); err != nil {
		return TransparentListener{}, err
	}
	if l.Identities, err = parseIdentities(k, v, "allow", f["allow"]); err != nil {
		return TransparentListener{}, err
	}
	return l, nil
}

// meshConfig renders the transparent and xds sections of the proxy's configuration.
func (c *Config) meshConfig(s *Settings, pc *config.Config) {
	if t := s.Transparent; t != nil {
		ct := &config.Transparent{
			ProxyUID:             config.DefaultProxyUID,
			ExcludeInboundPorts:  ints(t.ExcludeInboundPorts),
			ExcludeOutboundPorts: ints(t.ExcludeOutboundPorts),
			ExcludeOutboundCIDRs: t.ExcludeOutboundCIDRs,
		}
		for _, l := range t.Inbound {
			ct.Inbound = append(ct.Inbound, config.TransparentInbound{
				Name:     "t-" + l.Name,
				Port:     int(l.Port),
				Protocol: l.Protocol,
				Allow:    l.Identities,
			})
		}
		pc.Transparent = ct
	}
	if c.XDS != nil && s.XDS {
		pc.XDS = &config.XDS{
			Server:             c.XDS.Address,
			ServerName:         c.XDS.ServerName,
			CAFile:             XDSDir + "/ca.crt",
			CertFile:           XDSDir + "/tls.crt",
			KeyFile:            XDSDir + "/tls.key",
			UpstreamIdentities: s.XDSUpstreamIdentities,
		}
	}
}

func parsePortList(ann, v string) ([]uint16, error) {
	var out []uint16
	for _, s := range strings.Split(v, ",") {
		p, err := parsePort(ann, v, "port", strings.TrimSpace(s))
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// ints is the proxy configuration's form of a port list.
func ints(ports []uint16) []int {
	if ports == nil {
		return nil
	}
	out := make([]int, len(ports))
	for i, p := range ports {
		out[i] = int(p)
	}
	return out
}

// meshPorts are the ports transparent mode makes the proxy listen on, for portConflicts.
func meshPorts(s *Settings) map[uint16]string {
	if s.Transparent == nil {
		return nil
	}
	return map[uint16]string{
		config.DefaultInboundPort:  "the proxy's inbound interception port (" + AnnotationTransparent + ")",
		config.DefaultOutboundPort: "the proxy's outbound interception port (" + AnnotationTransparent + ")",
	}
}

// checkAppUID refuses a transparent pod whose app could run as the proxy's UID: its traffic
// would bypass interception.
func checkAppUID(pod *corev1.Pod, uid int) error {
	if ps := pod.Spec.SecurityContext; ps != nil && ps.RunAsUser != nil && int(*ps.RunAsUser) == uid {
		return &Error{Reason: ReasonInvalidConfig, Message: fmt.Sprintf(
			"the pod's securityContext.runAsUser is %d, the proxy's UID in transparent mode: the app's traffic would bypass interception; set runAsUser on the app containers to another UID", uid)}
	}
	for _, ctrs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, ctr := range ctrs {
			if ctr.Name == ContainerName || ctr.Name == IptablesContainerName {
				continue
			}
			if sc := ctr.SecurityContext; sc != nil && sc.RunAsUser != nil && int(*sc.RunAsUser) == uid {
				return &Error{Reason: ReasonInvalidConfig, Message: fmt.Sprintf(
					"container %s runs as UID %d, the proxy's UID in transparent mode: its traffic would bypass interception", ctr.Name, uid)}
			}
		}
	}
	return nil
}

// meshContainer adjusts the proxy sidecar: the excluded UID in transparent mode, the control
// plane's client certificate.
func (c *Config) meshContainer(pc *config.Config, proxy *corev1.Container) {
	if t := pc.Transparent; t != nil {
		uid := int64(t.ProxyUID)
		proxy.SecurityContext.RunAsUser = &uid
	}
	if c.XDS != nil && pc.XDS != nil {
		proxy.VolumeMounts = append(proxy.VolumeMounts, corev1.VolumeMount{Name: VolumeXDS, MountPath: XDSDir, ReadOnly: true})
	}
}

// meshPod adds (or removes, on re-injection) the iptables init container and the control
// plane's client certificate volume. It runs after the proxy sidecar was put first among the
// init containers.
func (c *Config) meshPod(pod *corev1.Pod, pc *config.Config) {
	pod.Spec.InitContainers = removeContainer(pod.Spec.InitContainers, IptablesContainerName)
	if pc.Transparent != nil {
		// Before the proxy sidecar: the rules are in place before anything else in the pod
		// sends or receives, and the proxy (excluded by UID) starts after them.
		pod.Spec.InitContainers = append([]corev1.Container{c.iptablesContainer()}, pod.Spec.InitContainers...)
	}
	if c.XDS != nil && pc.XDS != nil {
		pod.Spec.Volumes = upsertVolume(pod.Spec.Volumes, corev1.Volume{Name: VolumeXDS, VolumeSource: corev1.VolumeSource{
			Secret: &corev1.SecretVolumeSource{SecretName: c.XDS.ClientSecret}}})
	} else {
		pod.Spec.Volumes = removeVolume(pod.Spec.Volumes, VolumeXDS)
	}
}

// iptablesContainer installs the interception rules from the proxy's configuration and exits.
// It is the pod's only container with root and NET_ADMIN (iptables-nft needs no NET_RAW).
func (c *Config) iptablesContainer() corev1.Container {
	yes, no := true, false
	root := int64(0)
	cpu, mem := resource.MustParse("10m"), resource.MustParse("32Mi")
	return corev1.Container{
		Name:  IptablesContainerName,
		Image: c.ProxyInitImage,
		Args:  []string{"iptables", "--config", ConfigFile},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: cpu, corev1.ResourceMemory: mem},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: mem},
		},
		VolumeMounts: []corev1.VolumeMount{{Name: VolumeConfig, MountPath: ConfigDir, ReadOnly: true}},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                &root,
			RunAsNonRoot:             &no,
			Privileged:               &no,
			AllowPrivilegeEscalation: &no,
			ReadOnlyRootFilesystem:   &yes,
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"NET_ADMIN"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

func removeContainer(list []corev1.Container, name string) []corev1.Container {
	out := make([]corev1.Container, 0, len(list))
	for _, x := range list {
		if x.Name != name {
			out = append(out, x)
		}
	}
	return out
}
