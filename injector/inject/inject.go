// Package inject decides whether a pod gets the Countersign proxy and adds it: a pure function
// of a typed corev1.Pod and the injector's settings, with no I/O. The proxy goes in as a native
// sidecar (an init container with restartPolicy Always and a startup probe on /readyz); its
// configuration is generated from the pod's annotations in the proxy's own format
// (proxy/config), validated with that package's Validate, stored in an annotation and mounted
// into the proxy through the downward API. Injection is idempotent: a pod that already has the
// sidecar gets the same sidecar again, so applying it twice changes nothing.
package inject

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/countersign/countersign/attestation/attester"
	"github.com/countersign/countersign/proxy/config"
)

// Names of what the injector adds.
const (
	ContainerName     = "countersign-proxy"
	VolumeConfig      = "countersign-config"
	VolumePolicy      = "countersign-policy"
	VolumeSimKey      = "countersign-sim-key"
	ConfigDir         = "/etc/countersign/config"
	ConfigFile        = ConfigDir + "/proxy.yaml"
	PolicyDir         = "/etc/countersign/policy"
	SimKeyDir         = "/etc/countersign/sim"
	DefaultAdminPort  = 15020
	ResourceEPC       = corev1.ResourceName("sgx.intel.com/epc")
	ResourceEnclave   = corev1.ResourceName("sgx.intel.com/enclave")
	ResourceProvision = corev1.ResourceName("sgx.intel.com/provision")
)

// Config is what the injector adds, the same for every pod (flags of the injector binary).
type Config struct {
	// ProxyImage runs the proxy in an EGo enclave (attester sgx; empty refuses sgx pods, as the
	// image is not built everywhere: docs/images.md); ProxySimImage is the plain
	// build for the sim attester without the xDS client (-tags noxds), and ProxySimXDSImage
	// the sim build with it, for pods whose proxy uses the control plane (required with XDS).
	// All pinned by digest in production.
	ProxyImage       string
	ProxySimImage    string
	ProxySimXDSImage string
	// DefaultAttester is used when a pod has no countersign.dev/attester annotation.
	DefaultAttester string
	// AttestationURL is the attestation service (MAA or the local service).
	AttestationURL string
	// AttestationCAKey, when set, is the key in the policy ConfigMap holding PEM roots for the
	// attestation service's TLS certificate.
	AttestationCAKey string
	// PolicyConfigMap is the default ConfigMap (in the pod's namespace) holding policy.yaml.
	PolicyConfigMap string
	// SimPlatformKeySecret is the Secret (in the pod's namespace) holding platform.pem, the
	// simulated platform key (sim attester only).
	SimPlatformKeySecret string
	// CPU, Memory and EPC are the default proxy resources.
	CPU, Memory, EPC resource.Quantity
	// ExcludedNamespaces are never injected (the injector's own, kube-system).
	ExcludedNamespaces []string
	// ProxyInitImage runs `proxy iptables` in the init container of transparent pods (an
	// image with the proxy binary and iptables-nft); empty refuses transparent pods (mesh.go).
	ProxyInitImage string
	// XDS, when set, is the control plane every injected proxy subscribes to (mesh.go).
	XDS *XDS
}

// Validate names the setting at fault (the injector maps them to its flags).
func (c *Config) Validate() error {
	var errs []error
	if c.ProxyImage == "" && c.DefaultAttester == attester.NameSGX {
		errs = append(errs, errors.New("proxy-image: required with default-attester sgx (empty refuses sgx pods)"))
	}
	if c.ProxySimImage == "" {
		errs = append(errs, errors.New("proxy-sim-image: required"))
	}
	if c.XDS != nil && c.ProxySimXDSImage == "" {
		errs = append(errs, errors.New("proxy-sim-xds-image: required with xds-listen (the lean proxy-sim image has no xDS client)"))
	}
	if c.DefaultAttester != attester.NameSGX && c.DefaultAttester != attester.NameSim {
		errs = append(errs, fmt.Errorf("default-attester: %q, expected sgx or sim", c.DefaultAttester))
	}
	if !strings.HasPrefix(c.AttestationURL, "https://") {
		errs = append(errs, fmt.Errorf("attestation-url: %q, expected https://host[:port]", c.AttestationURL))
	}
	if c.PolicyConfigMap == "" {
		errs = append(errs, errors.New("policy-configmap: required"))
	}
	if c.SimPlatformKeySecret == "" {
		errs = append(errs, errors.New("sim-platform-key-secret: required"))
	}
	for _, q := range []struct {
		name string
		q    resource.Quantity
	}{{"proxy-cpu", c.CPU}, {"proxy-memory", c.Memory}, {"sgx-epc", c.EPC}} {
		if q.q.Sign() <= 0 {
			errs = append(errs, fmt.Errorf("%s: %q, expected a positive quantity", q.name, q.q.String()))
		}
	}
	return errors.Join(errs...)
}

// Request is what Decide needs besides the pod.
type Request struct {
	// Namespace of the pod (the AdmissionReview's, since pods may omit it).
	Namespace string
	// NamespaceOptedIn is true when the request came through the namespace-selector webhook
	// (the pod's namespace carries countersign.dev/inject=enabled).
	NamespaceOptedIn bool
}

// Decide reports whether the pod is to be injected, and if not, why.
func (c *Config) Decide(pod *corev1.Pod, r Request) (bool, Reason) {
	if slices.Contains(c.ExcludedNamespaces, r.Namespace) {
		return false, ReasonExcludedNamespace
	}
	switch pod.Labels[LabelInject] {
	case ValueDisabled:
		return false, ReasonOptedOut
	case ValueEnabled:
		return true, ReasonInjected
	}
	if r.NamespaceOptedIn {
		return true, ReasonInjected
	}
	return false, ReasonNotOptedIn
}

// Inject adds (or refreshes) the proxy sidecar in pod, in place. It returns an *Error whose
// reason is one of the rejections when the pod's annotations are invalid or conflict with it;
// a rejected pod is not changed.
func (c *Config) Inject(pod *corev1.Pod) error {
	if pod.Spec.HostNetwork {
		return &Error{Reason: ReasonHostNetwork, Message: "pods with hostNetwork: true cannot be injected: the proxy's listeners would bind on the node"}
	}
	s, err := c.ParseSettings(pod)
	if err != nil {
		return err
	}
	pc := c.proxyConfig(s)
	// Validate exactly what the proxy will read: the proxy's own defaults and checks.
	check := *pc
	check.SetDefaults()
	if err := check.Validate(); err != nil {
		return &Error{Reason: ReasonInvalidConfig, Message: "the proxy configuration generated from the annotations is invalid: " + err.Error()}
	}
	// JSON is YAML: proxy/config reads it as is, and it encodes several times faster than
	// going through sigs.k8s.io/yaml (this is on every opted-in pod's admission path).
	cfgYAML, err := json.MarshalIndent(pc, "", "  ")
	if err != nil {
		return &Error{Reason: ReasonInvalidConfig, Message: "cannot encode the proxy configuration: " + err.Error()}
	}
	if err := portConflicts(pod, s); err != nil {
		return err
	}
	if pc.Transparent != nil {
		if err := checkAppUID(pod, pc.Transparent.ProxyUID); err != nil {
			return err
		}
	}
	c.render(pod, s, pc, string(cfgYAML))
	return nil
}

// render writes the sidecar, its volumes and the configuration annotation into pod.
func (c *Config) render(pod *corev1.Pod, s *Settings, pc *config.Config, cfgYAML string) {
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[AnnotationProxyConfig] = cfgYAML
	pod.Annotations[AnnotationStatus] = StatusInjected

	sgx := s.Attester == attester.NameSGX
	ctr := c.container(s, sgx)
	pubVols, pubMounts := publicCerts(s.Inbound)
	ctr.VolumeMounts = append(ctr.VolumeMounts, pubMounts...)
	c.meshContainer(pc, &ctr)
	pod.Spec.InitContainers = upsertContainer(pod.Spec.InitContainers, ctr)
	c.meshPod(pod, pc)
	vols := []corev1.Volume{
		{Name: VolumeConfig, VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
			Items: []corev1.DownwardAPIVolumeFile{{Path: "proxy.yaml", FieldRef: &corev1.ObjectFieldSelector{
				APIVersion: "v1", FieldPath: "metadata.annotations['" + AnnotationProxyConfig + "']"}}},
		}}},
		{Name: VolumePolicy, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: s.PolicyConfigMap}}}},
	}
	pod.Spec.Volumes = upsertVolume(pod.Spec.Volumes, vols[0])
	pod.Spec.Volumes = upsertVolume(pod.Spec.Volumes, vols[1])
	simVol := corev1.Volume{Name: VolumeSimKey, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
		SecretName: c.SimPlatformKeySecret}}}
	if sgx {
		pod.Spec.Volumes = removeVolume(pod.Spec.Volumes, VolumeSimKey)
	} else {
		pod.Spec.Volumes = upsertVolume(pod.Spec.Volumes, simVol)
	}
	pod.Spec.Volumes = setPublicVolumes(pod.Spec.Volumes, pubVols)
}

// proxyConfig renders the proxy's configuration from the settings. It leaves defaults unset so
// the stored configuration is what the pod's author wrote plus what the injector decides.
func (c *Config) proxyConfig(s *Settings) *config.Config {
	pc := &config.Config{
		Attester:   config.Attester{Type: s.Attester},
		PolicyFile: PolicyDir + "/policy.yaml",
		Identity:   s.Identity,
		Admin:      config.Admin{Listen: hostPort("0.0.0.0", s.AdminPort)},
		AttestationService: config.AttestationService{
			URL: s.AttestationURL,
		},
	}
	if s.AttestationCAKey != "" {
		pc.AttestationService.CAFile = PolicyDir + "/" + s.AttestationCAKey
	}
	if s.Attester == attester.NameSim {
		pc.Attester.SimPlatformKey = SimKeyDir + "/platform.pem"
	}
	pc.Attester.SimIdentity.MREnclave = s.SimMREnclave
	// The app's image is claimed (not measured) runtime data: docs/trust-model.md.
	if s.AppImage != "" {
		pc.Claimed = map[string]string{"app-image": s.AppImage}
	}
	for _, l := range s.Inbound {
		in := config.Inbound{
			Name:      l.Name,
			Listen:    hostPort("0.0.0.0", l.Port),
			Protocol:  l.Protocol,
			ForwardTo: hostPort("127.0.0.1", l.Forward),
			Allow:     l.Identities,
		}
		if l.Public != "" {
			in.Public = true
			in.CertFile, in.KeyFile = publicCertFiles(l.Name)
		}
		pc.Inbound = append(pc.Inbound, in)
	}
	for _, l := range s.Outbound {
		pc.Outbound = append(pc.Outbound, config.Outbound{
			Name:             l.Name,
			Listen:           hostPort("127.0.0.1", l.Port),
			Protocol:         l.Protocol,
			Upstream:         l.Upstream,
			UpstreamIdentity: l.Identities,
		})
	}
	c.meshConfig(s, pc)
	return pc
}

func hostPort(host string, port uint16) string { return host + ":" + strconv.Itoa(int(port)) }

var dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$`)

func intstrPort(p uint16) intstr.IntOrString { return intstr.FromInt32(int32(p)) }

// portConflicts refuses a pod whose containers already use a port the proxy listens on: they
// share one network namespace.
func portConflicts(pod *corev1.Pod, s *Settings) error {
	owner := map[int32]string{int32(s.AdminPort): "the proxy's admin port (" + AnnotationAdminPort + ")"}
	claim := func(port int32, what string) error {
		if prev, ok := owner[port]; ok {
			return &Error{Reason: ReasonPortConflict, Message: fmt.Sprintf("port %d is used by both %s and %s", port, prev, what)}
		}
		owner[port] = what
		return nil
	}
	for p, what := range meshPorts(s) {
		if err := claim(int32(p), what); err != nil {
			return err
		}
	}
	for _, l := range append(slices.Clip(s.Inbound), s.Outbound...) {
		if err := claim(int32(l.Port), "annotation "+l.Annotation); err != nil {
			return err
		}
	}
	for _, ctrs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, ctr := range ctrs {
			if ctr.Name == ContainerName {
				continue
			}
			for _, p := range ctr.Ports {
				if err := claim(p.ContainerPort, "container "+ctr.Name); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (c *Config) container(s *Settings, sgx bool) corev1.Container {
	adminPort, cpu, mem, epc := s.AdminPort, s.CPU, s.Memory, s.EPC
	always := corev1.ContainerRestartPolicyAlways
	yes, no := true, false
	uid := int64(65532)
	image := c.ProxySimImage // the lean build, without the xDS client
	if c.XDS != nil && s.XDS {
		image = c.ProxySimXDSImage
	}
	req := corev1.ResourceList{corev1.ResourceCPU: cpu, corev1.ResourceMemory: mem}
	lim := corev1.ResourceList{corev1.ResourceMemory: mem}
	if sgx {
		image = c.ProxyImage
		one := resource.MustParse("1")
		for _, l := range []corev1.ResourceList{req, lim} {
			l[ResourceEPC] = epc
			l[ResourceEnclave] = one
			l[ResourceProvision] = one
		}
	}
	ctr := corev1.Container{
		Name:          ContainerName,
		Image:         image,
		Args:          []string{"run", "--config", ConfigFile},
		RestartPolicy: &always,
		Resources:     corev1.ResourceRequirements{Requests: req, Limits: lim},
		VolumeMounts: []corev1.VolumeMount{
			{Name: VolumeConfig, MountPath: ConfigDir, ReadOnly: true},
			{Name: VolumePolicy, MountPath: PolicyDir, ReadOnly: true},
		},
		StartupProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstrPort(adminPort)}},
			PeriodSeconds:    1,
			FailureThreshold: 120,
			TimeoutSeconds:   1,
		},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstrPort(adminPort)}},
			PeriodSeconds: 5, TimeoutSeconds: 1, FailureThreshold: 3,
		},
		LivenessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstrPort(adminPort)}},
			PeriodSeconds: 10, TimeoutSeconds: 1, FailureThreshold: 3,
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             &yes,
			RunAsUser:                &uid,
			ReadOnlyRootFilesystem:   &yes,
			AllowPrivilegeEscalation: &no,
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	ctr.Ports = append(ctr.Ports, corev1.ContainerPort{Name: "cs-admin", ContainerPort: int32(adminPort), Protocol: corev1.ProtocolTCP})
	for i, l := range s.Inbound {
		ctr.Ports = append(ctr.Ports, corev1.ContainerPort{Name: fmt.Sprintf("cs-in-%d", i), ContainerPort: int32(l.Port), Protocol: corev1.ProtocolTCP})
	}
	if !sgx {
		ctr.VolumeMounts = append(ctr.VolumeMounts, corev1.VolumeMount{Name: VolumeSimKey, MountPath: SimKeyDir, ReadOnly: true})
	}
	return ctr
}

// upsertContainer puts the sidecar first among the init containers (so it starts before the
// others and before the app), replacing an earlier copy.
func upsertContainer(list []corev1.Container, c corev1.Container) []corev1.Container {
	out := []corev1.Container{c}
	for _, x := range list {
		if x.Name != c.Name {
			out = append(out, x)
		}
	}
	return out
}

func upsertVolume(list []corev1.Volume, v corev1.Volume) []corev1.Volume {
	for i := range list {
		if list[i].Name == v.Name {
			list[i] = v
			return list
		}
	}
	return append(list, v)
}

func removeVolume(list []corev1.Volume, name string) []corev1.Volume {
	return slices.DeleteFunc(list, func(v corev1.Volume) bool { return v.Name == name })
}
