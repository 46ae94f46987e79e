package inject

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/countersign/countersign/proxy/cli"
	"github.com/countersign/countersign/proxy/config"
)

func meshConfigForTest() *Config {
	c := testConfig()
	c.ProxyInitImage = "registry.example/countersign/proxy-init@sha256:" + strings.Repeat("d", 64)
	c.ProxySimXDSImage = "registry.example/countersign/proxy-sim-xds@sha256:" + strings.Repeat("e", 64)
	c.XDS = &XDS{Address: "cs-injector.countersign-system.svc:15010", ServerName: "cs-injector.countersign-system.svc", ClientSecret: "countersign-xds-client"}
	return c
}

func transparentPod(ann map[string]string) *corev1.Pod {
	base := map[string]string{
		AnnotationTransparent:                "enabled",
		TransparentInboundPrefix + "api":     "port=8080 protocol=http allow=portal,ingress",
		TransparentInboundPrefix + "metrics": "port=9100 protocol=tcp allow=monitor",
		AnnotationExcludeInboundPorts:        "9000",
		AnnotationExcludeOutboundPorts:       "5432,53",
		AnnotationExcludeOutboundCIDRs:       "10.96.0.1/32",
		AnnotationXDSUpstreamIdentities:      "redis,inference",
	}
	for k, v := range ann {
		base[k] = v
	}
	return testPod(base)
}

// TestInjectTransparent: countersign.dev/transparent=enabled adds the iptables init container
// before the proxy sidecar, with root and NET_ADMIN in that container only; the proxy runs as
// the excluded UID; the generated configuration carries the transparent section (the admin
// port and explicit inbound listener ports excluded from interception) and, when the injector
// runs a control plane, the xds section with the client certificate mounted; and
// `proxy iptables --config` reads that configuration into the expected rules.
func TestInjectTransparent(t *testing.T) {
	c := meshConfigForTest()
	p := transparentPod(nil)
	p.Spec.InitContainers = []corev1.Container{{Name: "migrate", Image: "m"}}
	if err := c.Inject(p); err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, ic := range p.Spec.InitContainers {
		order = append(order, ic.Name)
	}
	if !slices.Equal(order, []string{IptablesContainerName, ContainerName, "migrate"}) {
		t.Fatalf("init containers %v, want the iptables container, then the proxy sidecar, then the pod's own", order)
	}
	ipt, proxy := p.Spec.InitContainers[0], p.Spec.InitContainers[1]
	sc := ipt.SecurityContext
	if ipt.Image != c.ProxyInitImage || !slices.Equal(ipt.Args, []string{"iptables", "--config", ConfigFile}) || ipt.RestartPolicy != nil {
		t.Errorf("iptables container %s %v restartPolicy %v", ipt.Image, ipt.Args, ipt.RestartPolicy)
	}
	if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 0 || !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN"}) ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || *sc.Privileged || *sc.AllowPrivilegeEscalation {
		t.Errorf("iptables security context %+v, want root with NET_ADMIN only, unprivileged", sc)
	}
	if u := proxy.SecurityContext.RunAsUser; u == nil || *u != config.DefaultProxyUID || !*proxy.SecurityContext.RunAsNonRoot {
		t.Errorf("proxy runs as %v, want the excluded UID %d", u, config.DefaultProxyUID)
	}
	if proxy.SecurityContext.Capabilities.Add != nil {
		t.Errorf("the proxy got capabilities %v", proxy.SecurityContext.Capabilities.Add)
	}
	for _, ctr := range append(p.Spec.Containers, p.Spec.InitContainers[2]) {
		if ctr.SecurityContext != nil && ctr.SecurityContext.Capabilities != nil {
			t.Errorf("container %s was given capabilities", ctr.Name)
		}
	}
	var xdsVol, xdsMount bool
	for _, v := range p.Spec.Volumes {
		xdsVol = xdsVol || v.Name == VolumeXDS && v.Secret != nil && v.Secret.SecretName == c.XDS.ClientSecret
	}
	for _, m := range proxy.VolumeMounts {
		xdsMount = xdsMount || m.Name == VolumeXDS && m.MountPath == XDSDir && m.ReadOnly
	}
	if !xdsVol || !xdsMount {
		t.Errorf("control plane client certificate: volume %v mount %v", xdsVol, xdsMount)
	}

	raw := p.Annotations[AnnotationProxyConfig]
	pc, err := config.Parse([]byte(raw), "")
	if err != nil {
		t.Fatalf("generated config rejected by proxy/config: %v\n%s", err, raw)
	}
	tr := pc.Transparent
	if tr == nil || len(tr.Inbound) != 2 || tr.Inbound[0].Name != "t-api" || tr.Inbound[0].Port != 8080 || !slices.Equal(tr.Inbound[0].Allow, []string{"portal", "ingress"}) ||
		tr.Inbound[1].Protocol != "tcp" || tr.ProxyUID != config.DefaultProxyUID {
		t.Fatalf("transparent section %+v", tr)
	}
	if !slices.Equal(tr.ExcludeInboundPorts, []int{8443, 9000, DefaultAdminPort}) || !slices.Equal(tr.ExcludeOutboundPorts, []int{5432, 53}) ||
		!slices.Equal(tr.ExcludeOutboundCIDRs, []string{"10.96.0.1/32"}) {
		t.Errorf("exclusions in %+v, want the admin port, the explicit inbound port and the annotated ones", tr)
	}
	x := pc.XDS
	if x == nil || x.Server != c.XDS.Address || x.ServerName != c.XDS.ServerName || x.CertFile != XDSDir+"/tls.crt" || x.CAFile != XDSDir+"/ca.crt" ||
		!slices.Equal(x.UpstreamIdentities, []string{"redis", "inference"}) || x.NodeID != "records-api" {
		t.Errorf("xds section %+v", x)
	}

	// The init container's command reads exactly this configuration.
	f := filepath.Join(t.TempDir(), "proxy.yaml")
	if err := os.WriteFile(f, []byte(raw), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errw bytes.Buffer
	if code := cli.Main(context.Background(), []string{"iptables", "--config", f, "--dry-run"}, nil, &out, &errw); code != 0 {
		t.Fatalf("proxy iptables --config --dry-run: exit %d: %s", code, errw.String())
	}
	for _, want := range []string{"--uid-owner 1337 -j RETURN", "--to-ports 15006", "--to-ports 15001", "--dport 15020 -j RETURN",
		"--dport 8443 -j RETURN", "--dport 9000 -j RETURN", "--dport 5432 -j RETURN", "-d 10.96.0.1/32 -j RETURN"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("rules lack %q:\n%s", want, out.String())
		}
	}
}

func TestInjectTransparentIdempotent(t *testing.T) {
	c := meshConfigForTest()
	p := transparentPod(nil)
	injectTwice(t, c, p)
	// Turned off on a re-injection: the init container and the proxy's UID go back.
	for k := range p.Annotations {
		if strings.HasPrefix(k, TransparentInboundPrefix) || strings.HasPrefix(k, "countersign.dev/exclude-") {
			delete(p.Annotations, k)
		}
	}
	p.Annotations[AnnotationTransparent] = ValueDisabled
	if err := c.Inject(p); err != nil {
		t.Fatal(err)
	}
	if len(p.Spec.InitContainers) != 1 || p.Spec.InitContainers[0].Name != ContainerName || *p.Spec.InitContainers[0].SecurityContext.RunAsUser != 65532 {
		t.Errorf("after disabling: init containers %+v", p.Spec.InitContainers)
	}
	// Without a control plane the xds section and volume go away.
	c.XDS = nil
	delete(p.Annotations, AnnotationXDSUpstreamIdentities)
	if err := c.Inject(p); err != nil {
		t.Fatal(err)
	}
	for _, v := range p.Spec.Volumes {
		if v.Name == VolumeXDS {
			t.Error("the control plane's client certificate is still mounted without a control plane")
		}
	}
	if strings.Contains(p.Annotations[AnnotationProxyConfig], `"xds"`) {
		t.Error("xds section without a control plane")
	}
}

func TestInjectTransparentRejects(t *testing.T) {
	uid := func(u int64) *int64 { return &u }
	for _, tc := range []struct {
		name   string
		ann    map[string]string
		cfg    func(*Config)
		mutate func(*corev1.Pod)
		reason Reason
		want   []string
	}{
		{"bad value", map[string]string{AnnotationTransparent: "yes"}, nil, nil, ReasonInvalidAnnotation, []string{AnnotationTransparent, "expected enabled or disabled"}},
		{"inbound without transparent", map[string]string{AnnotationTransparent: "-"}, nil, nil, ReasonInvalidAnnotation, []string{TransparentInboundPrefix, "only meaningful with " + AnnotationTransparent}},
		{"no init image", nil, func(c *Config) { c.ProxyInitImage = "" }, nil, ReasonInvalidAnnotation, []string{AnnotationTransparent, "--proxy-init-image"}},
		{"bad inbound port", map[string]string{TransparentInboundPrefix + "api": "port=0 protocol=http allow=a"}, nil, nil, ReasonInvalidAnnotation, []string{TransparentInboundPrefix + "api", "expected 1-65535"}},
		{"inbound unknown field", map[string]string{TransparentInboundPrefix + "api": "port=8080 forward=1 protocol=http allow=a"}, nil, nil, ReasonInvalidAnnotation, []string{TransparentInboundPrefix + "api", `unknown field "forward"`}},
		{"inbound no allow", map[string]string{TransparentInboundPrefix + "api": "port=8080 protocol=http"}, nil, nil, ReasonInvalidAnnotation, []string{TransparentInboundPrefix + "api", "allow is required"}},
		{"bad exclude port", map[string]string{AnnotationExcludeOutboundPorts: "53,dns"}, nil, nil, ReasonInvalidAnnotation, []string{AnnotationExcludeOutboundPorts, `"dns" is not a port`}},
		{"bad cidr", map[string]string{AnnotationExcludeOutboundCIDRs: "10.96.0.1"}, nil, nil, ReasonInvalidAnnotation, []string{AnnotationExcludeOutboundCIDRs, "not a CIDR"}},
		{"intercepted port excluded", map[string]string{AnnotationExcludeInboundPorts: "8080"}, nil, nil, ReasonPortConflict, []string{"port 8080", TransparentInboundPrefix + "api", "excluded"}},
		{"intercepting the admin port", map[string]string{TransparentInboundPrefix + "admin": "port=15020 protocol=http allow=a"}, nil, nil, ReasonPortConflict, []string{"port 15020", "excluded"}},
		{"app uses the interception port", nil, nil, func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, corev1.ContainerPort{ContainerPort: 15006})
		}, ReasonPortConflict, []string{"15006", "interception port"}},
		{"app runs as the proxy UID", nil, nil, func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsUser: uid(1337)}
		}, ReasonInvalidConfig, []string{"container app", "1337", "bypass interception"}},
		{"pod runs as the proxy UID", nil, nil, func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: uid(1337)}
		}, ReasonInvalidConfig, []string{"runAsUser is 1337"}},
		{"upstream identities without a control plane", nil, func(c *Config) { c.XDS = nil }, nil, ReasonInvalidAnnotation, []string{AnnotationXDSUpstreamIdentities, "--xds-listen"}},
		{"bad upstream identity", map[string]string{AnnotationXDSUpstreamIdentities: "Redis"}, nil, nil, ReasonInvalidAnnotation, []string{AnnotationXDSUpstreamIdentities, "not a policy identity name"}},
		{"xds neither enabled nor disabled", map[string]string{AnnotationXDS: "yes"}, nil, nil, ReasonInvalidAnnotation, []string{AnnotationXDS, `"yes"`, "enabled or disabled"}},
		{"xds enabled without a control plane", map[string]string{AnnotationXDS: ValueEnabled}, func(c *Config) { c.XDS = nil }, func(p *corev1.Pod) {
			delete(p.Annotations, AnnotationXDSUpstreamIdentities)
		}, ReasonInvalidAnnotation, []string{AnnotationXDS, "--xds-listen"}},
		{"upstream identities with xds disabled", map[string]string{AnnotationXDS: ValueDisabled}, nil, nil, ReasonInvalidAnnotation, []string{AnnotationXDSUpstreamIdentities, AnnotationXDS + "=disabled"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := meshConfigForTest()
			if tc.cfg != nil {
				tc.cfg(c)
			}
			p := transparentPod(nil)
			for k, v := range tc.ann {
				if v == "-" {
					delete(p.Annotations, k)
				} else {
					p.Annotations[k] = v
				}
			}
			if tc.mutate != nil {
				tc.mutate(p)
			}
			before := p.DeepCopy()
			err := c.Inject(p)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Inject() = %v, want *Error", err)
			}
			if e.Reason != tc.reason {
				t.Errorf("reason %s, want %s (%s)", e.Reason, tc.reason, e.Message)
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

// TestInjectTransparentOnly: a pod may use interception alone, without explicit listeners.
func TestInjectTransparentOnly(t *testing.T) {
	c := meshConfigForTest()
	p := transparentPod(map[string]string{InboundPrefix + "api": "-", OutboundPrefix + "redis": "-", OutboundPrefix + "models": "-"})
	for _, k := range []string{InboundPrefix + "api", OutboundPrefix + "redis", OutboundPrefix + "models"} {
		delete(p.Annotations, k)
	}
	if err := c.Inject(p); err != nil {
		t.Fatal(err)
	}
	pc, err := config.Parse([]byte(p.Annotations[AnnotationProxyConfig]), "")
	if err != nil || len(pc.Inbound)+len(pc.Outbound) != 0 || len(pc.Transparent.Inbound) != 2 {
		t.Errorf("transparent-only config: %v %+v", err, pc)
	}
}
