package inject

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/countersign/countersign/proxy/config"
)

func testConfig() *Config {
	return &Config{
		ProxyImage:           "registry.example/countersign/proxy@sha256:" + strings.Repeat("a", 64),
		ProxySimImage:        "registry.example/countersign/proxy-sim@sha256:" + strings.Repeat("b", 64),
		DefaultAttester:      "sgx",
		AttestationURL:       "https://attest.example",
		PolicyConfigMap:      "countersign-policy",
		SimPlatformKeySecret: "countersign-sim-platform-key",
		CPU:                  resource.MustParse("100m"),
		Memory:               resource.MustParse("128Mi"),
		EPC:                  resource.MustParse("64Mi"),
		ExcludedNamespaces:   []string{"kube-system", "countersign-system"},
	}
}

func testPod(ann map[string]string) *corev1.Pod {
	base := map[string]string{
		AnnotationIdentity:        "records-api",
		InboundPrefix + "api":     "port=8443 forward=8080 protocol=http allow=portal,ingress",
		OutboundPrefix + "redis":  "port=6380 upstream=redis.data.svc:8443 identity=redis protocol=tcp",
		OutboundPrefix + "models": "port=9001 upstream=inference.diag.svc.cluster.local:8443 identity=inference protocol=http",
	}
	for k, v := range ann {
		if v == "-" {
			delete(base, k)
		} else {
			base[k] = v
		}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "records", Namespace: "health", Labels: map[string]string{LabelInject: ValueEnabled}, Annotations: base},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "records@sha256:" + strings.Repeat("c", 64),
			Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}},
	}
}

func TestValidateNamesSetting(t *testing.T) {
	c := testConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.DefaultAttester, c.AttestationURL, c.ProxySimImage = "tdx", "ftp://x", ""
	err := c.Validate()
	for _, want := range []string{"default-attester", "attestation-url", "proxy-sim-image"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to name %s", err, want)
		}
	}
	// No sgx image: fine for a sim injector, refused when sgx is the default.
	c = testConfig()
	c.ProxyImage = ""
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "proxy-image") {
		t.Errorf("Validate() with default-attester sgx and no proxy-image = %v, want it to name proxy-image", err)
	}
	c.DefaultAttester = "sim"
	if err := c.Validate(); err != nil {
		t.Errorf("Validate() with default-attester sim and no proxy-image = %v", err)
	}
}

// TestInjectSGXWithoutImageRefused: an injector with no sgx (EGo) image refuses a pod asking for
// the sgx attester, naming the annotation, rather than injecting an empty image.
func TestInjectSGXWithoutImageRefused(t *testing.T) {
	c := testConfig()
	c.ProxyImage, c.DefaultAttester = "", "sim"
	_, err := c.ParseSettings(testPod(map[string]string{AnnotationAttester: "sgx"}))
	var e *Error
	if !errors.As(err, &e) || e.Reason != ReasonInvalidAnnotation || e.Annotation != AnnotationAttester || !strings.Contains(e.Message, "--proxy-image") {
		t.Fatalf("ParseSettings(sgx, no image) = %v, want an %s rejection of %s naming --proxy-image", err, ReasonInvalidAnnotation, AnnotationAttester)
	}
	if _, err := c.ParseSettings(testPod(nil)); err != nil {
		t.Errorf("ParseSettings(default sim) = %v", err)
	}
}

func TestDecide(t *testing.T) {
	c := testConfig()
	for _, tc := range []struct {
		name   string
		label  string
		ns     string
		nsOpt  bool
		inject bool
		reason Reason
	}{
		{"pod label", ValueEnabled, "health", false, true, ReasonInjected},
		{"namespace label", "", "health", true, true, ReasonInjected},
		{"pod opts out of an opted-in namespace", ValueDisabled, "health", true, false, ReasonOptedOut},
		{"no label", "", "health", false, false, ReasonNotOptedIn},
		{"other value", "yes", "health", false, false, ReasonNotOptedIn},
		{"kube-system", ValueEnabled, "kube-system", false, false, ReasonExcludedNamespace},
		{"own namespace", ValueEnabled, "countersign-system", true, false, ReasonExcludedNamespace},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPod(nil)
			p.Labels = map[string]string{}
			if tc.label != "" {
				p.Labels[LabelInject] = tc.label
			}
			ok, r := c.Decide(p, Request{Namespace: tc.ns, NamespaceOptedIn: tc.nsOpt})
			if ok != tc.inject || r != tc.reason {
				t.Errorf("Decide = %v, %s; want %v, %s", ok, r, tc.inject, tc.reason)
			}
		})
	}
}

func TestInjectSGX(t *testing.T) {
	c := testConfig()
	p := testPod(nil)
	if err := c.Inject(p); err != nil {
		t.Fatal(err)
	}
	if len(p.Spec.InitContainers) != 1 {
		t.Fatalf("%d init containers, want 1", len(p.Spec.InitContainers))
	}
	ctr := p.Spec.InitContainers[0]
	if ctr.Name != ContainerName || ctr.Image != c.ProxyImage {
		t.Errorf("container %s image %s", ctr.Name, ctr.Image)
	}
	if ctr.RestartPolicy == nil || *ctr.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Error("sidecar is not a native sidecar (restartPolicy Always)")
	}
	if ctr.StartupProbe == nil || ctr.StartupProbe.HTTPGet == nil || ctr.StartupProbe.HTTPGet.Path != "/readyz" || ctr.StartupProbe.HTTPGet.Port.IntValue() != DefaultAdminPort {
		t.Errorf("startup probe %+v, want /readyz on %d", ctr.StartupProbe, DefaultAdminPort)
	}
	for _, r := range []corev1.ResourceName{ResourceEPC, ResourceEnclave, ResourceProvision} {
		if _, ok := ctr.Resources.Limits[r]; !ok {
			t.Errorf("no %s limit", r)
		}
	}
	if q := ctr.Resources.Requests[ResourceEPC]; q.Cmp(c.EPC) != 0 {
		t.Errorf("EPC request %s, want %s", q.String(), c.EPC.String())
	}
	for _, v := range p.Spec.Volumes {
		if v.Name == VolumeSimKey {
			t.Error("sgx pod mounts the simulated platform key")
		}
	}
	// The generated configuration is exactly what proxy/config accepts.
	pc, err := config.Parse([]byte(p.Annotations[AnnotationProxyConfig]), "")
	if err != nil {
		t.Fatalf("generated config rejected by proxy/config: %v\n%s", err, p.Annotations[AnnotationProxyConfig])
	}
	if pc.Identity != "records-api" || pc.Attester.Type != "sgx" || len(pc.Inbound) != 1 || len(pc.Outbound) != 2 {
		t.Errorf("config %+v", pc)
	}
	if pc.Inbound[0].ForwardTo != "127.0.0.1:8080" || !reflect.DeepEqual(pc.Inbound[0].Allow, []string{"portal", "ingress"}) {
		t.Errorf("inbound %+v", pc.Inbound[0])
	}
	if pc.Outbound[0].Name != "models" || pc.Outbound[1].Upstream != "redis.data.svc:8443" || pc.Outbound[1].Protocol != "tcp" {
		t.Errorf("outbound %+v", pc.Outbound)
	}
	if pc.Claimed["app-image"] != p.Spec.Containers[0].Image {
		t.Errorf("claimed %v", pc.Claimed)
	}
	if pc.PolicyFile != PolicyDir+"/policy.yaml" {
		t.Errorf("policyFile %s", pc.PolicyFile)
	}
}

func TestInjectSim(t *testing.T) {
	c := testConfig()
	p := testPod(map[string]string{AnnotationAttester: "sim", AnnotationPolicy: "my-policy", AnnotationCPU: "250m"})
	if err := c.Inject(p); err != nil {
		t.Fatal(err)
	}
	ctr := p.Spec.InitContainers[0]
	if ctr.Image != c.ProxySimImage {
		t.Errorf("image %s, want the sim image", ctr.Image)
	}
	if _, ok := ctr.Resources.Requests[ResourceEPC]; ok {
		t.Error("sim pod requests EPC")
	}
	if q := ctr.Resources.Requests[corev1.ResourceCPU]; q.String() != "250m" {
		t.Errorf("cpu %s", q.String())
	}
	var sim, pol bool
	for _, v := range p.Spec.Volumes {
		sim = sim || v.Name == VolumeSimKey && v.Secret != nil && v.Secret.SecretName == c.SimPlatformKeySecret
		pol = pol || v.Name == VolumePolicy && v.ConfigMap != nil && v.ConfigMap.Name == "my-policy"
	}
	if !sim || !pol {
		t.Errorf("volumes %+v", p.Spec.Volumes)
	}
	var pc config.Config
	if err := yaml.Unmarshal([]byte(p.Annotations[AnnotationProxyConfig]), &pc); err != nil {
		t.Fatal(err)
	}
	if pc.Attester.SimPlatformKey != SimKeyDir+"/platform.pem" {
		t.Errorf("simPlatformKey %q", pc.Attester.SimPlatformKey)
	}
}

func TestInjectIdempotent(t *testing.T) {
	c := testConfig()
	p := testPod(nil)
	p.Spec.InitContainers = []corev1.Container{{Name: "migrate", Image: "m"}}
	once := injectTwice(t, c, p)
	if len(p.Spec.InitContainers) != 2 || p.Spec.InitContainers[0].Name != ContainerName || p.Spec.InitContainers[1].Name != "migrate" {
		t.Errorf("init containers %v", p.Spec.InitContainers)
	}
	// Switching attester on a re-injection removes the sim volume again.
	p.Annotations[AnnotationAttester] = "sim"
	if err := c.Inject(p); err != nil {
		t.Fatal(err)
	}
	delete(p.Annotations, AnnotationAttester)
	if err := c.Inject(p); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(once, p) {
		t.Error("sim then sgx differs from sgx")
	}
}

func TestInjectRejects(t *testing.T) {
	c := testConfig()
	for _, tc := range []struct {
		name   string
		ann    map[string]string
		mutate func(*corev1.Pod)
		reason Reason
		want   []string // substrings of the message
	}{
		{"missing identity", map[string]string{AnnotationIdentity: "-"}, nil, ReasonInvalidAnnotation, []string{AnnotationIdentity, "required"}},
		{"bad identity", map[string]string{AnnotationIdentity: "Records API"}, nil, ReasonInvalidAnnotation, []string{AnnotationIdentity, "expected lowercase"}},
		{"bad attester", map[string]string{AnnotationAttester: "tdx"}, nil, ReasonInvalidAnnotation, []string{AnnotationAttester, "expected sgx or sim"}},
		{"bad port", map[string]string{InboundPrefix + "api": "port=99999 forward=8080 protocol=http allow=a"}, nil, ReasonInvalidAnnotation, []string{InboundPrefix + "api", "expected 1-65535"}},
		{"missing forward", map[string]string{InboundPrefix + "api": "port=8443 protocol=http allow=a"}, nil, ReasonInvalidAnnotation, []string{InboundPrefix + "api", "forward is required"}},
		{"bad protocol", map[string]string{InboundPrefix + "api": "port=8443 forward=8080 protocol=h2 allow=a"}, nil, ReasonInvalidAnnotation, []string{"expected http, http2, grpc or tcp"}},
		{"unknown field", map[string]string{OutboundPrefix + "redis": "port=6380 upstream=r:1 identity=r protocol=tcp tls=off"}, nil, ReasonInvalidAnnotation, []string{OutboundPrefix + "redis", `unknown field "tls"`, "expected identity, port, protocol, upstream"}},
		{"bad upstream", map[string]string{OutboundPrefix + "redis": "port=6380 upstream=redis identity=r protocol=tcp"}, nil, ReasonInvalidAnnotation, []string{"upstream", "host:port"}},
		{"not key=value", map[string]string{OutboundPrefix + "redis": "6380"}, nil, ReasonInvalidAnnotation, []string{"is not key=value"}},
		{"bad listener name", map[string]string{InboundPrefix + "API": "port=8443 forward=8080 protocol=http allow=a"}, nil, ReasonInvalidAnnotation, []string{"listener name"}},
		{"no listeners", map[string]string{InboundPrefix + "api": "-", OutboundPrefix + "redis": "-", OutboundPrefix + "models": "-"}, nil, ReasonInvalidAnnotation, []string{"no listeners"}},
		{"bad cpu", map[string]string{AnnotationCPU: "lots"}, nil, ReasonInvalidAnnotation, []string{AnnotationCPU, "resource quantity"}},
		{"exponent quantity", map[string]string{AnnotationMemory: "1e-999999999"}, nil, ReasonInvalidAnnotation, []string{AnnotationMemory, "resource quantity"}},
		{"epc with sim", map[string]string{AnnotationAttester: "sim", AnnotationEPC: "64Mi"}, nil, ReasonInvalidAnnotation, []string{AnnotationEPC, "sgx"}},
		{"admin port", map[string]string{AnnotationAdminPort: "x"}, nil, ReasonInvalidAnnotation, []string{AnnotationAdminPort}},
		{"two listeners one port", map[string]string{OutboundPrefix + "redis": "port=8443 upstream=r:1 identity=r protocol=tcp"}, nil, ReasonPortConflict, []string{"port 8443"}},
		{"app uses admin port", nil, func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, corev1.ContainerPort{ContainerPort: DefaultAdminPort})
		}, ReasonPortConflict, []string{"15020", "container app"}},
		{"host network", nil, func(p *corev1.Pod) { p.Spec.HostNetwork = true }, ReasonHostNetwork, []string{"hostNetwork"}},
		{"proxy config invalid (duplicate outbound listen)", map[string]string{OutboundPrefix + "a": "port=7000 upstream=r:1 identity=r protocol=tcp", OutboundPrefix + "b": "port=7000 upstream=r:1 identity=r protocol=tcp"}, nil, ReasonInvalidConfig, []string{"generated from the annotations is invalid", "outbound[1].listen", "7000"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPod(tc.ann)
			if tc.mutate != nil {
				tc.mutate(p)
			}
			before := p.DeepCopy()
			err := c.Inject(p)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Inject() = %v, want *Error", err)
			}
			if e.Reason != tc.reason || !e.Reason.Denied() {
				t.Errorf("reason %s, want %s", e.Reason, tc.reason)
			}
			for _, w := range tc.want {
				if !strings.Contains(e.Message, w) {
					t.Errorf("message %q does not contain %q", e.Message, w)
				}
			}
			if !reflect.DeepEqual(before, p) {
				t.Error("a rejected pod was modified")
			}
		})
	}
}

// injectTwice injects p twice, fails if the second injection changed anything, and returns a
// copy of the injected pod.
func injectTwice(t *testing.T, c *Config, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	if err := c.Inject(p); err != nil {
		t.Fatal(err)
	}
	once := p.DeepCopy()
	if err := c.Inject(p); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(once, p) {
		t.Error("second injection changed the pod")
	}
	return once
}
