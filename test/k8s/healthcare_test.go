package k8s_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/countersign/countersign/attestation/policy"
	"github.com/countersign/countersign/injector/inject"
	"github.com/countersign/countersign/internal/testnet"
	"github.com/countersign/countersign/proxy/config"
	"github.com/countersign/countersign/proxy/server"
	"github.com/countersign/countersign/test/k8s/kubetest"
)

func healthcareChart(t *testing.T) string {
	root, err := kubetest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "charts", "healthcare-demo")
}

// sgxMAA selects the sgx attester and Azure Attestation (no local service).
var sgxMAA = []string{"attester=sgx", "attestation.deployLocal=false", "attestation.url=https://countersigndemo.weu.attest.azure.net"}

// sgxDocs is docs/healthcare-demo.md's sgx install line ("Install it into a cluster", step 3),
// its placeholders filled in, with a measurement for every identity.
var sgxDocs = []string{"--set", "attester=sgx", "--set", "attestation.deployLocal=false",
	"--set", "attestation.url=https://countersigndemo.weu.attest.azure.net",
	"--set", "identities.allowDebug=false",
	"--set-json", `identities.recordsApi.mrenclave=["` + strings.Repeat("d4", 32) + `"]`,
	"--set-json", `identities.inference.mrenclave=["` + strings.Repeat("e5", 32) + `"]`,
	"--set-json", `identities.redis.mrenclave=["` + strings.Repeat("F6", 32) + `"]`}

// TestChartHealthcareDemoLintAndRender lints the chart and renders it with good and bad values:
// values.schema.json refuses a value of the wrong type or format, naming the field; the
// templates' checks (hd.validate) refuse invalid combinations, saying why.
func TestChartHealthcareDemoLintAndRender(t *testing.T) {
	helm := kubetest.Bin(t, "helm")
	sets := func(kv []string) []string {
		var out []string
		for _, s := range kv {
			out = append(out, "--set", s)
		}
		return out
	}
	for _, vals := range [][]string{nil, sets(sgxMAA), sgxDocs} {
		args := append([]string{"lint", healthcareChart(t), "--strict", "--kube-version", kubeVersion}, vals...)
		if out, err := exec.Command(helm, args...).CombinedOutput(); err != nil {
			t.Errorf("helm lint %v: %v\n%s", vals, err, out)
		}
	}
	render := func(t *testing.T, args []string) (string, error) {
		t.Helper()
		args = append([]string{"template", "hd", healthcareChart(t), "--namespace", "demo", "--kube-version", kubeVersion}, args...)
		out, err := exec.Command(helm, args...).CombinedOutput()
		return string(out), err
	}
	// PEM-shaped files for --set-file: the schema checks the shape, the chart does not parse them.
	dir := t.TempDir()
	priv, pub := filepath.Join(dir, "platform.pem"), filepath.Join(dir, "platform.pem.pub")
	for f, typ := range map[string]string{priv: "PRIVATE KEY", pub: "PUBLIC KEY"} {
		b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: []byte("not a key")})
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("Accepted", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			args []string
			want []string // in the rendered manifests
		}{
			{"Defaults", nil, []string{"countersign.dev/attester: sim", "url: https://hd-attestation.demo.svc:8443", "allowDebug: true"}},
			{"DocsSimInstall", []string{"--set-file", "simPlatformKey.privateKey=" + priv, "--set-file", "simPlatformKey.publicKey=" + pub},
				[]string{"kind: Secret\nmetadata:\n  name: countersign-sim-platform-key"}},
			{"DocsSGXInstall", sgxDocs, []string{"countersign.dev/attester: sgx", "url: https://countersigndemo.weu.attest.azure.net",
				"records-api: {mrenclave: [\"" + strings.Repeat("d4", 32) + "\"], allowDebug: false}",
				"inference: {mrenclave: [\"" + strings.Repeat("e5", 32) + "\"], allowDebug: false}",
				"redis: {mrenclave: [\"" + strings.Repeat("F6", 32) + "\"], allowDebug: false}"}},
			{"OwnPortalCertificateNoHosts", []string{"--set", "portal.tls.secretName=portal-tls", "--set-json", "portal.tls.hosts=[]"},
				[]string{"public=portal-tls"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				out, err := render(t, tc.args)
				if err != nil {
					t.Fatalf("helm template %v: %v\n%s", tc.args, err, out)
				}
				for _, w := range tc.want {
					if !strings.Contains(out, w) {
						t.Errorf("helm template %v: output lacks %q", tc.args, w)
					}
				}
			})
		}
	})

	// Refused by values.schema.json: helm names the field as a JSON pointer.
	const schemaErr = "values don't meet the specifications of the schema"
	t.Run("RefusedBySchema", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			args []string
			want string
		}{
			{"WrongAttester", []string{"--set", "attester=tdx"}, "at '/attester': value must be one of 'sgx', 'sim'"},
			{"ShortMREnclave", []string{"--set-json", `identities.recordsApi.mrenclave=["a1a1a1"]`}, "at '/identities/recordsApi/mrenclave/0': 'a1a1a1' does not match"},
			{"NonHexMREnclave", []string{"--set-json", `identities.redis.mrenclave=["` + strings.Repeat("g7", 32) + `"]`}, "at '/identities/redis/mrenclave/0'"},
			{"NoMREnclave", []string{"--set-json", "identities.inference.mrenclave=[]"}, "at '/identities/inference/mrenclave': minItems"},
			{"PortAboveRange", []string{"--set", "records.port=70000"}, "at '/records/port': maximum"},
			{"PortZero", []string{"--set", "redis.servicePort=0"}, "at '/redis/servicePort': minimum"},
			{"PortNotANumber", []string{"--set", "portal.port=https"}, "at '/portal/port': got string, want integer"},
			{"UnknownTopLevelKey", []string{"--set", "replicaCount=2"}, "at '': additional properties 'replicaCount' not allowed"},
			{"UnknownNestedKey", []string{"--set", "redis.replicas=3"}, "at '/redis': additional properties 'replicas' not allowed"},
			{"URLWithPath", []string{"--set", "attestation.url=https://countersigndemo.weu.attest.azure.net/attest"}, "at '/attestation/url'"},
			{"URLTrailingSlash", []string{"--set", "attestation.url=https://countersigndemo.weu.attest.azure.net/"}, "at '/attestation/url'"},
			{"URLPlainHTTP", []string{"--set", "attestation.url=http://countersigndemo.weu.attest.azure.net"}, "at '/attestation/url'"},
			{"IdentityNameUppercase", []string{"--set", "identities.recordsApi.name=Records"}, "at '/identities/recordsApi/name'"},
			{"KeyFileNameNotContents", []string{"--set", "simPlatformKey.privateKey=platform.pem"}, "at '/simPlatformKey/privateKey'"},
			{"ImageTagNotDigest", []string{"--set", "redis.image.tag=7.0"}, "at '/redis/image': additional properties 'tag' not allowed"},
			{"ImageDigestNotSHA256", []string{"--set", "records.image.digest=latest"}, "at '/records/image/digest'"},
			{"SelfSignedPortalNoHosts", []string{"--set-json", "portal.tls.hosts=[]"}, "at '/portal/tls/hosts': minItems"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				out, err := render(t, tc.args)
				if err == nil || !strings.Contains(out, schemaErr) || !strings.Contains(out, tc.want) {
					t.Errorf("helm template %v: %v, want the schema to refuse it saying %q\n%s", tc.args, err, tc.want, out)
				}
			})
		}
	})

	// Refused by the templates (hd.validate): combinations the schema does not express.
	t.Run("RefusedByTemplates", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			args []string
			want string
		}{
			{"SGXWithLocalService", []string{"--set", "attester=sgx"}, "attestation.deployLocal: the local attestation service refuses real SGX quotes"},
			{"NoLocalServiceNoURL", []string{"--set", "attestation.deployLocal=false"}, "attestation.url: required"},
			{"SimWithoutAllowDebug", []string{"--set", "identities.allowDebug=false"}, "a sim deployment needs allowDebug: true"},
			{"HalfASimKey", []string{"--set-file", "simPlatformKey.privateKey=" + priv}, "simPlatformKey: set both privateKey and publicKey"},
			// The issuer check stays behind the schema for installs that skip it.
			{"URLTrailingSlashSchemaSkipped", []string{"--skip-schema-validation", "--set", "attestation.url=https://countersigndemo.weu.attest.azure.net/"},
				"expected https://host[:port] with no path or trailing slash"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				out, err := render(t, tc.args)
				if err == nil || !strings.Contains(out, tc.want) {
					t.Errorf("helm template %v: %v, want a failure saying %q\n%s", tc.args, err, tc.want, out)
				}
			})
		}
	})
}

// workload is what one of the chart's pods must come out of admission with.
type workload struct {
	identity string
	inbound  []config.Inbound  // name, listen, protocol, forwardTo, allow, public, certFile, keyFile
	outbound []config.Outbound // name, listen, protocol, upstream, upstreamIdentity
}

// healthcareWorkloads are the injected workloads of release rel, from the chart's values and
// docs/healthcare-demo.md (written out here, not read back from the chart).
func healthcareWorkloads(rel string) map[string]workload {
	cert, key := inject.PublicDir+"/portal/tls.crt", inject.PublicDir+"/portal/tls.key"
	return map[string]workload{
		"records": {identity: "records-api",
			inbound: []config.Inbound{{
				Name:      "portal",
				Listen:    "0.0.0.0:9443",
				Protocol:  "http",
				ForwardTo: "127.0.0.1:8081",
				Public:    true,
				CertFile:  cert,
				KeyFile:   key,
			}},
			outbound: []config.Outbound{ // sorted by annotation key
				{
					Name:             "inference",
					Listen:           "127.0.0.1:7001",
					Protocol:         "http",
					Upstream:         rel + "-inference:8443",
					UpstreamIdentity: []string{"inference"},
				},
				{
					Name:             "redis",
					Listen:           "127.0.0.1:6380",
					Protocol:         "tcp",
					Upstream:         rel + "-redis:6443",
					UpstreamIdentity: []string{"redis"},
				},
			}},
		"inference": {identity: "inference",
			inbound: []config.Inbound{{
				Name:      "oip",
				Listen:    "0.0.0.0:8443",
				Protocol:  "http",
				ForwardTo: "127.0.0.1:8000",
				Allow:     []string{"records-api"},
			}}},
		"redis": {identity: "redis",
			inbound: []config.Inbound{{
				Name:      "redis",
				Listen:    "0.0.0.0:6443",
				Protocol:  "tcp",
				ForwardTo: "127.0.0.1:6379",
				Allow:     []string{"records-api"},
			}}},
	}
}

// demoRelease is one helm install of charts/healthcare-demo and what its pods must show.
type demoRelease struct {
	name, ns string
	attester string
	url      string // the attestation service every proxy config must name
	caFile   string // its roots in the proxy config ("" = system roots)
	local    bool   // the local attestation service is deployed (one more pod, not injected)
}

// TestHealthcareChartInstallsInjected installs charts/countersign (the injector as a local
// process, as in TestAPIServer) and then charts/healthcare-demo into a real kube-apiserver with
// kube-controller-manager: Deployments and the StatefulSet create their pods through admission,
// and every workload pod must come out injected as the chart's annotations asked. There is no
// scheduler and no kubelet: pods stay Pending and images are never pulled; what a kubelet would
// mount into each proxy is materialized from the API objects and given to the proxy's own
// constructor instead.
func TestHealthcareChartInstallsInjected(t *testing.T) {
	start := time.Now()
	c := kubetest.StartWithControllerManager(t)
	e := &env{
		t:        t,
		c:        c,
		injector: buildInjector(t),
		port:     testnet.FreePort(t),
		admin:    testnet.FreePort(t),
	}
	proxyBin := goBuild(t, "proxy", "./proxy/cmd/proxy")
	ctx := context.Background()
	e.namespace(csNS, nil)
	e.namespace("apps", nil) // startInjector's probe
	e.helmCountersign("install")
	e.startInjector()
	t.Logf("cluster, controller-manager and injector up in %.1fs", time.Since(start).Seconds())

	// docs/healthcare-demo.md, "Install it into a cluster", step by step.
	keys := t.TempDir()
	if out, err := exec.Command(proxyBin, "sim-platform-key", "--out", filepath.Join(keys, "platform.pem")).CombinedOutput(); err != nil {
		t.Fatalf("proxy sim-platform-key: %v\n%s", err, out)
	}
	sim := demoRelease{
		name:     "hd",
		ns:       "demo",
		attester: "sim",
		url:      "https://hd-attestation.demo.svc:8443",
		caFile:   inject.PolicyDir + "/attestation-ca.pem",
		local:    true,
	}
	t.Run("Sim", func(t *testing.T) {
		installStart := time.Now()
		helmOK(t, c, "install", sim.name, healthcareChart(t), "--namespace", sim.ns, "--create-namespace",
			"--set-file", "simPlatformKey.privateKey="+filepath.Join(keys, "platform.pem"),
			"--set-file", "simPlatformKey.publicKey="+filepath.Join(keys, "platform.pem.pub"))
		pods := waitReleasePods(t, c, sim)
		t.Logf("helm install to %d pods admitted: %.1fs", len(pods), time.Since(installStart).Seconds())
		checkRelease(t, c, sim, pods)
		checkLocalAttestation(t, c, sim, pods["attestation"])
	})

	maa := demoRelease{name: "hd-sgx", ns: "demo-sgx", attester: "sgx", url: "https://countersigndemo.weu.attest.azure.net"}
	t.Run("SGXWithAzureAttestation", func(t *testing.T) {
		args := []string{"install", maa.name, healthcareChart(t), "--namespace", maa.ns, "--create-namespace"}
		for _, s := range sgxMAA {
			args = append(args, "--set", s)
		}
		helmOK(t, c, args...)
		pods := waitReleasePods(t, c, maa)
		checkRelease(t, c, maa, pods)
	})

	// helm upgrade: the generated certificates are kept (running sidecars keep trusting the
	// attestation service, browsers the portal), and a scaled-up Deployment's new pod is injected.
	t.Run("UpgradeKeepsCertificatesNewPodsInjected", func(t *testing.T) {
		secrets := func() string {
			var b strings.Builder
			for _, n := range []string{"hd-attestation-tls", "hd-portal-tls"} {
				s, err := c.Client.CoreV1().Secrets(sim.ns).Get(ctx, n, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				b.Write(s.Data["tls.crt"])
			}
			return b.String()
		}
		before := secrets()
		helmOK(t, c, "upgrade", sim.name, healthcareChart(t), "--namespace", sim.ns, "--reuse-values", "--set", "records.replicas=2")
		if secrets() != before {
			t.Error("helm upgrade replaced the generated certificates")
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			pl, err := c.Client.CoreV1().Pods(sim.ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=hd,app.kubernetes.io/name=records"})
			if err != nil {
				t.Fatal(err)
			}
			if len(pl.Items) >= 2 {
				for i := range pl.Items {
					checkInjected(t, &pl.Items[i])
					checkWorkload(t, c, sim, "records", &pl.Items[i])
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d records pods after scaling to 2\n%s", len(pl.Items), controllerStatus(t, c, sim.ns))
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
	// The public-listener and attestation-service annotations are refused at admission, through
	// the API server, with a message naming the annotation and what was expected.
	t.Run("BadPerPodAnnotationsRejected", func(t *testing.T) {
		for _, tc := range []struct {
			ann  map[string]string
			want string
		}{
			{map[string]string{inject.InboundPrefix + "portal": "port=9443 forward=8081 protocol=http public=hd-portal-tls allow=portal"},
				`annotation inbound.countersign.dev/portal="port=9443 forward=8081 protocol=http public=hd-portal-tls allow=portal": a public listener does not authenticate callers (expected no allow with public=)`},
			{map[string]string{inject.InboundPrefix + "portal": "port=9443 forward=8081 protocol=tcp public=hd-portal-tls"},
				"expected protocol=http"},
			{map[string]string{inject.AnnotationAttestationURL: "https://countersigndemo.weu.attest.azure.net/"},
				`annotation countersign.dev/attestation-url="https://countersigndemo.weu.attest.azure.net/": not an attestation service URL (expected https://host[:port], no path`},
		} {
			_, err := e.create(sim.ns, optedInPod(podName("bad-public"), tc.ann))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v: %v, want a rejection containing %q", tc.ann, err, tc.want)
			}
		}
	})
	t.Logf("whole test %.1fs", time.Since(start).Seconds())
}

func helmOK(t *testing.T, c *kubetest.Cluster, args ...string) string {
	t.Helper()
	out, err := c.Helm(context.Background(), t, args...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args[:2], " "), err, out)
	}
	return out
}

// waitReleasePods waits until the release's controllers have created every pod: one per
// workload (replicas 1), and the attestation service's when deployed.
func waitReleasePods(t *testing.T, c *kubetest.Cluster, r demoRelease) map[string]*corev1.Pod {
	t.Helper()
	want := []string{"inference", "records", "redis"}
	if r.local {
		want = append(want, "attestation")
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		pl, err := c.Client.CoreV1().Pods(r.ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + r.name})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]*corev1.Pod{}
		for i := range pl.Items {
			p := &pl.Items[i]
			name := p.Labels["app.kubernetes.io/name"]
			if _, dup := got[name]; dup {
				t.Fatalf("two %s pods in release %s", name, r.name)
			}
			got[name] = p
		}
		if len(got) == len(want) {
			for _, w := range want {
				if got[w] == nil {
					t.Fatalf("release %s: pods %v, want %v", r.name, mapKeys(got), want)
				}
			}
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("release %s: pods %v after 90s, want %v\n%s", r.name, mapKeys(got), want, controllerStatus(t, c, r.ns))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func mapKeys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// controllerStatus describes why pods may be missing: the workloads' status and the
// namespace's warning events (a FailedCreate carries the admission error).
func controllerStatus(t *testing.T, c *kubetest.Cluster, ns string) string {
	ctx := context.Background()
	var b strings.Builder
	if ds, err := c.Client.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, d := range ds.Items {
			fmt.Fprintf(&b, "deployment %s: replicas %d, conditions %v\n", d.Name, d.Status.Replicas, d.Status.Conditions)
		}
	}
	if ss, err := c.Client.AppsV1().StatefulSets(ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, s := range ss.Items {
			fmt.Fprintf(&b, "statefulset %s: replicas %d\n", s.Name, s.Status.Replicas)
		}
	}
	if evs, err := c.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, ev := range evs.Items {
			if ev.Type == corev1.EventTypeWarning {
				fmt.Fprintf(&b, "event %s %s/%s: %s\n", ev.Reason, ev.InvolvedObject.Kind, ev.InvolvedObject.Name, ev.Message)
			}
		}
	}
	return b.String()
}

func checkRelease(t *testing.T, c *kubetest.Cluster, r demoRelease, pods map[string]*corev1.Pod) {
	t.Helper()
	for name := range healthcareWorkloads(r.name) {
		p := pods[name]
		t.Run(name, func(t *testing.T) {
			checkInjected(t, p)
			checkWorkload(t, c, r, name, p)
		})
	}
	if r.local {
		// The attestation service is what the sidecars attest to: opted out, not injected.
		checkUntouched(t, pods["attestation"])
		checkVolumesExist(t, c, pods["attestation"])
	}
}

var (
	sgxResources = []corev1.ResourceName{inject.ResourceEPC, inject.ResourceEnclave, inject.ResourceProvision}
	annoRE       = regexp.MustCompile(`^metadata\.annotations\['(.+)'\]$`)
)

// checkWorkload checks one injected pod of the release against what the chart asked for.
func checkWorkload(t *testing.T, c *kubetest.Cluster, r demoRelease, name string, p *corev1.Pod) {
	t.Helper()
	w := healthcareWorkloads(r.name)[name]
	pc, err := config.Parse([]byte(p.Annotations[inject.AnnotationProxyConfig]), "")
	if err != nil {
		t.Fatalf("pod %s: stored proxy config: %v", p.Name, err)
	}
	// The pod's owner is the release's controller: it went through admission as created by
	// kube-controller-manager, not by this test.
	if len(p.OwnerReferences) != 1 || !strings.HasPrefix(p.OwnerReferences[0].Name, r.name+"-"+name) {
		t.Errorf("pod %s owners %v, want the release's %s controller", p.Name, p.OwnerReferences, name)
	}
	if pc.Identity != w.identity {
		t.Errorf("pod %s: identity %q, want %q", p.Name, pc.Identity, w.identity)
	}
	if pc.Attester.Type != r.attester {
		t.Errorf("pod %s: attester %q, want %q", p.Name, pc.Attester.Type, r.attester)
	}
	if pc.AttestationService.URL != r.url || pc.AttestationService.CAFile != r.caFile {
		t.Errorf("pod %s: attestationService %+v, want url %s caFile %q (the chart's attestation.url, not the injector's default)",
			p.Name, pc.AttestationService, r.url, r.caFile)
	}
	type in struct {
		Name, Listen, Protocol, ForwardTo string
		Allow                             []string
		Public                            bool
		CertFile, KeyFile                 string
	}
	var gotIn, wantIn []in
	for _, l := range pc.Inbound {
		gotIn = append(gotIn, in{l.Name, l.Listen, l.Protocol, l.ForwardTo, l.Allow, l.Public, l.CertFile, l.KeyFile})
	}
	for _, l := range w.inbound {
		wantIn = append(wantIn, in{l.Name, l.Listen, l.Protocol, l.ForwardTo, l.Allow, l.Public, l.CertFile, l.KeyFile})
	}
	if fmt.Sprint(gotIn) != fmt.Sprint(wantIn) {
		t.Errorf("pod %s: inbound\n got  %+v\n want %+v", p.Name, gotIn, wantIn)
	}
	type out struct {
		Name, Listen, Protocol, Upstream string
		UpstreamIdentity                 []string
	}
	var gotOut, wantOut []out
	for _, l := range pc.Outbound {
		gotOut = append(gotOut, out{l.Name, l.Listen, l.Protocol, l.Upstream, l.UpstreamIdentity})
	}
	for _, l := range w.outbound {
		wantOut = append(wantOut, out{l.Name, l.Listen, l.Protocol, l.Upstream, l.UpstreamIdentity})
	}
	if fmt.Sprint(gotOut) != fmt.Sprint(wantOut) {
		t.Errorf("pod %s: outbound\n got  %+v\n want %+v", p.Name, gotOut, wantOut)
	}

	// sim or sgx, as the chart's attester value said.
	proxy := p.Spec.InitContainers[0]
	wantImg, hasSim := simImg, false
	if r.attester == "sgx" {
		wantImg = proxyImg
	}
	for _, v := range p.Spec.Volumes {
		hasSim = hasSim || v.Name == inject.VolumeSimKey
	}
	if proxy.Image != wantImg || hasSim != (r.attester == "sim") {
		t.Errorf("pod %s: proxy image %s, sim key volume %v; want %s, %v", p.Name, proxy.Image, hasSim, wantImg, r.attester == "sim")
	}
	for _, res := range sgxResources {
		q, ok := proxy.Resources.Requests[res]
		switch {
		case r.attester == "sim" && ok:
			t.Errorf("pod %s: sim proxy requests %s", p.Name, res)
		case r.attester == "sgx" && (!ok || q.Sign() <= 0):
			t.Errorf("pod %s: sgx proxy does not request %s", p.Name, res)
		}
	}
	if r.attester == "sgx" {
		if q := proxy.Resources.Requests[inject.ResourceEPC]; q.Cmp(resource.MustParse("64Mi")) != 0 {
			t.Errorf("pod %s: EPC request %s, want 64Mi", p.Name, q.String())
		}
	}
	for _, ctr := range p.Spec.Containers {
		if slices.ContainsFunc(ctr.VolumeMounts, func(m corev1.VolumeMount) bool { return strings.HasPrefix(m.Name, "countersign-") }) {
			t.Errorf("pod %s: app container %s mounts the proxy's volumes", p.Name, ctr.Name)
		}
	}
	checkVolumesExist(t, c, p)
	checkProxyWouldStart(t, c, p)
}

// checkVolumesExist fails for every ConfigMap or Secret volume of the pod (or key it projects)
// missing from the namespace: a kubelet would keep the pod in ContainerCreating.
func checkVolumesExist(t *testing.T, c *kubetest.Cluster, p *corev1.Pod) {
	t.Helper()
	for _, v := range p.Spec.Volumes {
		var data map[string]bool
		var kind, name string
		var items []corev1.KeyToPath
		switch {
		case v.ConfigMap != nil:
			kind, name, items = "ConfigMap", v.ConfigMap.Name, v.ConfigMap.Items
			cm, err := c.Client.CoreV1().ConfigMaps(p.Namespace).Get(context.Background(), name, metav1.GetOptions{})
			if err == nil {
				data = map[string]bool{}
				for k := range cm.Data {
					data[k] = true
				}
			}
		case v.Secret != nil:
			kind, name, items = "Secret", v.Secret.SecretName, v.Secret.Items
			s, err := c.Client.CoreV1().Secrets(p.Namespace).Get(context.Background(), name, metav1.GetOptions{})
			if err == nil {
				data = map[string]bool{}
				for k := range s.Data {
					data[k] = true
				}
			}
		default:
			continue
		}
		if data == nil {
			t.Errorf("pod %s: volume %s needs %s %s/%s, which does not exist", p.Name, v.Name, kind, p.Namespace, name)
			continue
		}
		for _, it := range items {
			if !data[it.Key] {
				t.Errorf("pod %s: volume %s needs key %s of %s %s, which has %v", p.Name, v.Name, it.Key, kind, name, mapKeys(data))
			}
		}
	}
}

// checkProxyWouldStart writes what a kubelet would mount into the proxy container (the
// downward-API configuration, the policy ConfigMap, the sim key and public certificate Secrets)
// under a temporary root, and builds the proxy from it with proxy/server.New, which loads the
// policy and its issuers' CA, checks every identity the configuration names against the policy,
// loads the sim platform key and the attestation service's CA. Public certificates are loaded as
// the listener does. Nothing is dialled: the attestation service's name does not resolve here.
func checkProxyWouldStart(t *testing.T, c *kubetest.Cluster, p *corev1.Pod) {
	t.Helper()
	ctx := context.Background()
	root := t.TempDir()
	proxy := p.Spec.InitContainers[0]
	write := func(dir, file string, b []byte) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, file), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range proxy.VolumeMounts {
		i := slices.IndexFunc(p.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if i < 0 {
			t.Errorf("pod %s: proxy mounts volume %s, which the pod lacks", p.Name, m.Name)
			continue
		}
		v, dir := p.Spec.Volumes[i], filepath.Join(root, m.MountPath)
		switch {
		case v.DownwardAPI != nil:
			for _, it := range v.DownwardAPI.Items {
				a := annoRE.FindStringSubmatch(it.FieldRef.FieldPath)
				if a == nil {
					t.Fatalf("pod %s: downward-API field %s", p.Name, it.FieldRef.FieldPath)
				}
				write(dir, it.Path, []byte(p.Annotations[a[1]]))
			}
		case v.ConfigMap != nil:
			cm, err := c.Client.CoreV1().ConfigMaps(p.Namespace).Get(ctx, v.ConfigMap.Name, metav1.GetOptions{})
			if err != nil {
				t.Errorf("pod %s: %v", p.Name, err)
				continue
			}
			for k, d := range cm.Data {
				write(dir, k, []byte(d))
			}
		case v.Secret != nil:
			s, err := c.Client.CoreV1().Secrets(p.Namespace).Get(ctx, v.Secret.SecretName, metav1.GetOptions{})
			if err != nil {
				t.Errorf("pod %s: %v", p.Name, err)
				continue
			}
			for k, d := range s.Data {
				if len(v.Secret.Items) == 0 || slices.ContainsFunc(v.Secret.Items, func(it corev1.KeyToPath) bool { return it.Key == k }) {
					write(dir, k, d)
				}
			}
		}
	}
	raw, err := os.ReadFile(filepath.Join(root, inject.ConfigFile))
	if err != nil {
		t.Fatalf("pod %s: no proxy configuration where the proxy reads it: %v", p.Name, err)
	}
	if len(proxy.Args) != 3 || proxy.Args[2] != inject.ConfigFile {
		t.Errorf("pod %s: proxy args %v, want run --config %s", p.Name, proxy.Args, inject.ConfigFile)
	}
	cfg, err := config.Parse(raw, "")
	if err != nil {
		t.Fatal(err)
	}
	in := func(p *string) {
		if *p != "" {
			*p = filepath.Join(root, *p)
		}
	}
	in(&cfg.PolicyFile)
	in(&cfg.AttestationService.CAFile)
	in(&cfg.Attester.SimPlatformKey)
	for i := range cfg.Inbound {
		in(&cfg.Inbound[i].CertFile)
		in(&cfg.Inbound[i].KeyFile)
		if cfg.Inbound[i].Public {
			pair, err := tls.LoadX509KeyPair(cfg.Inbound[i].CertFile, cfg.Inbound[i].KeyFile)
			if err != nil {
				t.Errorf("pod %s: public listener %s: %v", p.Name, cfg.Inbound[i].Name, err)
			} else if leaf, _ := x509.ParseCertificate(pair.Certificate[0]); leaf == nil || leaf.VerifyHostname("localhost") != nil {
				t.Errorf("pod %s: public listener %s: certificate not valid for localhost (the port-forward NOTES.txt describes)", p.Name, cfg.Inbound[i].Name)
			}
		}
	}
	if _, err := server.New(cfg, server.Options{}); err != nil {
		t.Errorf("pod %s: the proxy would not start with what is mounted: %v", p.Name, err)
	}
	// A sim proxy claims the measurement the injector put in its configuration: its own
	// identity in the policy must list it, or its peers would refuse it.
	if cfg.Attester.Type == "sim" {
		pol, err := policy.Load(cfg.PolicyFile)
		if err != nil {
			t.Fatalf("pod %s: %v", p.Name, err)
		}
		id, ok := pol.Identities[cfg.Identity]
		mr := cfg.Attester.SimIdentity.MREnclave.String()
		if !ok || cfg.Attester.SimIdentity.MREnclave.IsZero() || !slices.ContainsFunc(id.MREnclave, func(m string) bool { return strings.EqualFold(m, mr) }) {
			t.Errorf("pod %s: sim proxy claims mrenclave %q, which the policy's identity %s does not list", p.Name, mr, cfg.Identity)
		}
	}
}

// checkLocalAttestation checks that the sidecars would trust the local attestation service:
// the certificate it serves (its TLS Secret, as mounted) verifies under the CA the policy
// ConfigMap gives the proxies, for the host of the URL they attest to; and its issuer flag is
// that URL, byte for byte (the policy's issuer).
func checkLocalAttestation(t *testing.T, c *kubetest.Cluster, r demoRelease, p *corev1.Pod) {
	t.Helper()
	ctx := context.Background()
	cm, err := c.Client.CoreV1().ConfigMaps(r.ns).Get(ctx, r.name+"-policy", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(cm.Data["attestation-ca.pem"])) {
		t.Fatal("policy ConfigMap has no attestation-ca.pem")
	}
	sec, err := c.Client.CoreV1().Secrets(r.ns).Get(ctx, r.name+"-attestation-tls", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(sec.Data["tls.crt"])
	if blk == nil {
		t.Fatal("attestation TLS Secret has no certificate")
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(r.url, "https://")
	host = host[:strings.LastIndexByte(host, ':')]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
		t.Errorf("the attestation service's certificate does not verify for %s under the sidecars' CA: %v", host, err)
	}
	args := strings.Join(p.Spec.Containers[0].Args, " ")
	for _, want := range []string{"--issuer=" + r.url, "--tls-cert=/tls/tls.crt", "--sim-platform-key=/platform/platform.pem.pub"} {
		if !strings.Contains(args, want) {
			t.Errorf("attestation service args %q lack %q", args, want)
		}
	}
}
