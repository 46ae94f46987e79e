package k8s_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/countersign/countersign/internal/testbin"
	"github.com/countersign/countersign/internal/testnet"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/countersign/countersign/injector/certs"
	"github.com/countersign/countersign/injector/inject"
	"github.com/countersign/countersign/proxy/config"
	"github.com/countersign/countersign/test/k8s/kubetest"
)

const (
	release   = "cs"
	csNS      = "countersign-system"
	webhookCf = "cs-countersign-injector"
	secret    = "cs-countersign-injector-tls"
	proxyImg  = "registry.example/countersign/proxy@sha256:1111111111111111111111111111111111111111111111111111111111111111"
	simImg    = "registry.example/countersign/proxy-sim@sha256:2222222222222222222222222222222222222222222222222222222222222222"
	simXDSImg = "registry.example/countersign/proxy-sim-xds@sha256:2323232323232323232323232323232323232323232323232323232323232323"
)

// env is one API server with the chart installed and the injector running as a local process.
type env struct {
	t        *testing.T
	c        *kubetest.Cluster
	injector string // binary
	port     int
	admin    int
	xds      *xdsPKI // the injector also runs its control plane (xds_test.go)
	proc     *kubetest.Proc
	spans    *kubetest.SpanSink // the API server's trace spans of webhook calls (latency runs only)
}

// webhookSpan is the API server's trace span around one call of a mutating webhook: from
// sending the AdmissionReview to the patch applied.
const webhookSpan = "Call mutating webhook"

func buildInjector(t *testing.T) string { return goBuild(t, "injector", "./injector/cmd/injector") }

// goBuild builds a main package of the repository into the test's temporary directory.
func goBuild(t *testing.T, name, pkg string) string {
	t.Helper()
	bin, err := testbin.Path(pkg)
	if err != nil {
		t.Fatalf("build %s: %v", name, err)
	}
	return bin
}

// helmCountersign installs (or upgrades) charts/countersign with the webhook pointed at the
// injector running as a local process (startInjector).
func (e *env) helmCountersign(verb string) {
	e.t.Helper()
	out, err := e.c.Helm(context.Background(), e.t, verb, release, chartDir(e.t), "--namespace", csNS,
		"--set", fmt.Sprintf("webhook.url=https://127.0.0.1:%d", e.port),
		"--set", "injection.attestationURL=https://attest.countersign-system.svc:8443",
		"--set", "injection.defaultAttester=sim",
		"--set", "image.proxy.repository=registry.example/countersign/proxy",
		"--set", "image.proxy.digest="+proxyImg[strings.IndexByte(proxyImg, '@')+1:],
		"--set", "image.proxySim.repository=registry.example/countersign/proxy-sim",
		"--set", "image.proxySim.digest="+simImg[strings.IndexByte(simImg, '@')+1:],
		"--set", "image.proxySimXDS.repository=registry.example/countersign/proxy-sim-xds",
		"--set", "image.proxySimXDS.digest="+simXDSImg[strings.IndexByte(simXDSImg, '@')+1:])
	if err != nil {
		e.t.Fatalf("helm %s: %v\n%s", verb, err, out)
	}
}

func (e *env) startInjector(extra ...string) {
	e.t.Helper()
	args := []string{
		"--kubeconfig=" + e.c.Kubeconfig, "--namespace=" + csNS,
		"--listen=127.0.0.1:" + strconv.Itoa(e.port), "--admin-listen=127.0.0.1:" + strconv.Itoa(e.admin),
		"--webhook-config=" + webhookCf, "--cert-secret=" + secret, "--cert-hosts=127.0.0.1",
		"--proxy-image=" + proxyImg, "--proxy-sim-image=" + simImg, "--default-attester=sim",
		"--attestation-url=https://attest.countersign-system.svc:8443", "--log-level=debug",
	}
	if e.xds != nil {
		args = append(args, e.xds.flags()...)
	}
	e.proc = kubetest.StartProc(e.t, e.c.Dir, "injector", e.injector, append(args, extra...)...)
	// Ready: the admin endpoint says a certificate is loaded and the caBundle is set.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		mwc, err := e.c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), webhookCf, metav1.GetOptions{})
		if err == nil && len(mwc.Webhooks) > 0 && len(mwc.Webhooks[0].ClientConfig.CABundle) > 0 && e.injectorReady() {
			// The API server has picked up the caBundle once a dry-run create goes through the webhook.
			_, err := e.c.Client.CoreV1().Pods("apps").Create(context.Background(), optedInPod(podName("probe"), nil),
				metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if err == nil {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Fatalf("injector not ready in 30s; log %s", e.proc.Log)
}

// waitEvent waits for the Event with reason about the pod (written asynchronously).
func (e *env) waitEvent(ns, pod string, reason inject.Reason) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs, err := e.c.Client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			e.t.Fatal(err)
		}
		if slices.ContainsFunc(evs.Items, func(ev corev1.Event) bool {
			return ev.Reason == string(reason) && ev.InvolvedObject.Name == pod
		}) {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no %q Event for pod %s/%s", reason, ns, pod)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *env) injectorReady() bool {
	resp, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/readyz", e.admin))
	return err == nil && resp == 200
}

var podSeq int
var podSeqMu sync.Mutex

func podName(prefix string) string {
	podSeqMu.Lock()
	defer podSeqMu.Unlock()
	podSeq++
	return fmt.Sprintf("%s-%d", prefix, podSeq)
}

func optedInPod(name string, ann map[string]string) *corev1.Pod {
	a := map[string]string{
		inject.AnnotationIdentity:       "records-api",
		inject.InboundPrefix + "api":    "port=8443 forward=8080 protocol=http allow=portal",
		inject.OutboundPrefix + "redis": "port=6380 upstream=redis.data.svc:8443 identity=redis protocol=tcp",
	}
	for k, v := range ann {
		a[k] = v
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{inject.LabelInject: inject.ValueEnabled}, Annotations: a},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "records@sha256:" + strings.Repeat("c", 64)}}},
	}
}

func plainPod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "nginx@sha256:" + strings.Repeat("d", 64)}}},
	}
}

func (e *env) create(ns string, p *corev1.Pod) (*corev1.Pod, error) {
	return e.c.Client.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{})
}

func (e *env) namespace(name string, labels map[string]string) {
	e.t.Helper()
	_, err := e.c.Client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
}

func proxies(p *corev1.Pod) []corev1.Container {
	var out []corev1.Container
	for _, c := range append(slices.Clone(p.Spec.InitContainers), p.Spec.Containers...) {
		if c.Name == inject.ContainerName {
			out = append(out, c)
		}
	}
	return out
}

func checkInjected(t *testing.T, p *corev1.Pod) {
	t.Helper()
	ps := proxies(p)
	if len(ps) != 1 {
		t.Fatalf("pod %s has %d proxy containers, want 1", p.Name, len(ps))
	}
	c := ps[0]
	if p.Spec.InitContainers[0].Name != inject.ContainerName || c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("pod %s: proxy is not the first native sidecar", p.Name)
	}
	if c.StartupProbe == nil || c.StartupProbe.HTTPGet == nil || c.StartupProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("pod %s: no startup probe on /readyz", p.Name)
	}
	if _, err := config.Parse([]byte(p.Annotations[inject.AnnotationProxyConfig]), ""); err != nil {
		t.Errorf("pod %s: stored proxy config rejected by proxy/config: %v", p.Name, err)
	}
}

func checkUntouched(t *testing.T, p *corev1.Pod) {
	t.Helper()
	if len(proxies(p)) != 0 || p.Annotations[inject.AnnotationStatus] != "" || p.Annotations[inject.AnnotationProxyConfig] != "" {
		t.Errorf("pod %s/%s was injected, want untouched", p.Namespace, p.Name)
	}
}

func TestAPIServer(t *testing.T) {
	var spans *kubetest.SpanSink
	var extra []string
	if os.Getenv("COUNTERSIGN_ADMISSION_LATENCY") != "" {
		// The latency run traces every request, so the API server reports how long each call
		// of our webhook took, request to patch applied.
		spans = kubetest.NewSpanSink(t, webhookSpan)
		extra = spans.TracingArgs(t)
	}
	c := kubetest.Start(t, extra...)
	e := &env{
		t:        t,
		c:        c,
		injector: buildInjector(t),
		port:     testnet.FreePort(t),
		admin:    testnet.FreePort(t),
		xds:      newXDSPKI(t),
		spans:    spans,
	}
	ctx := context.Background()

	e.namespace(csNS, nil)
	e.namespace("apps", nil)
	e.namespace("team", map[string]string{inject.LabelInject: inject.ValueEnabled})
	e.helmCountersign("install")
	e.startInjector()

	t.Run("WebhookSpeaksHTTP1Only", func(t *testing.T) {
		// HTTP/2 is off unless --http2 (rapid-reset attack surface); the API server, which
		// offers h2, settles for HTTP/1.1 (every create below goes through it).
		c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", e.port), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}}) //nolint:gosec // only the protocol is checked
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if p := c.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
			t.Errorf("negotiated %q, want http/1.1", p)
		}
	})

	t.Run("InjectedWhenOptedIn", func(t *testing.T) {
		p, err := e.create("apps", optedInPod(podName("records"), nil))
		if err != nil {
			t.Fatal(err)
		}
		checkInjected(t, p)
		stored, err := c.Client.CoreV1().Pods("apps").Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		checkInjected(t, stored)
		// generateName pods (as controllers create them) are injected too.
		g := optedInPod("", nil)
		g.GenerateName = "records-"
		gp, err := e.create("apps", g)
		if err != nil {
			t.Fatal(err)
		}
		checkInjected(t, gp)
	})

	t.Run("ValidatingPolicyRefusesSidecarChange", func(t *testing.T) {
		p, err := e.create("apps", optedInPod(podName("patched"), nil))
		if err != nil {
			t.Fatal(err)
		}
		// A patch replacing the running proxy with another image: refused by the policy.
		alter := []byte(`[{"op":"replace","path":"/spec/initContainers/0/image","value":"evil/proxy@sha256:` + strings.Repeat("ab", 32) + `"}]`)
		deadline := time.Now().Add(15 * time.Second)
		for {
			_, err = c.Client.CoreV1().Pods("apps").Patch(ctx, p.Name, types.JSONPatchType, alter, metav1.PatchOptions{})
			if err != nil || time.Now().After(deadline) {
				break
			}
			// The policy's UPDATE rule may not be active yet: put the image back and retry.
			back := []byte(`[{"op":"replace","path":"/spec/initContainers/0/image","value":"` + p.Spec.InitContainers[0].Image + `"}]`)
			_, _ = c.Client.CoreV1().Pods("apps").Patch(ctx, p.Name, types.JSONPatchType, back, metav1.PatchOptions{})
			time.Sleep(200 * time.Millisecond)
		}
		if err == nil || !strings.Contains(err.Error(), "cannot be changed or removed after admission") {
			t.Fatalf("patch replacing the sidecar's image: %v, want refused by the ValidatingAdmissionPolicy", err)
		}
		// Updates that leave the injected containers alone pass (controllers label pods).
		relabel := []byte(`{"metadata":{"labels":{"team":"records"}}}`)
		if _, err := c.Client.CoreV1().Pods("apps").Patch(ctx, p.Name, types.MergePatchType, relabel, metav1.PatchOptions{}); err != nil {
			t.Errorf("label update of an injected pod refused: %v", err)
		}
		stored, err := c.Client.CoreV1().Pods("apps").Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil || stored.Spec.InitContainers[0].Image != p.Spec.InitContainers[0].Image {
			t.Errorf("the stored sidecar changed: %v", err)
		}
	})

	t.Run("ControlPlane", func(t *testing.T) { controlPlane(t, e, e.xds) })

	t.Run("UntouchedOtherwise", func(t *testing.T) {
		p, err := e.create("apps", plainPod(podName("plain")))
		if err != nil {
			t.Fatal(err)
		}
		checkUntouched(t, p)
	})

	t.Run("NotInjectedTwice", func(t *testing.T) {
		p, err := e.create("apps", optedInPod(podName("twice"), nil))
		if err != nil {
			t.Fatal(err)
		}
		// Submit the already-injected pod again (as a reinvocation or a copy would).
		again := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: podName("twice"), Labels: p.Labels, Annotations: p.Annotations}, Spec: p.Spec}
		again.Spec.Priority = nil // computed by the Priority admission plugin
		q, err := e.create("apps", again)
		if err != nil {
			t.Fatal(err)
		}
		checkInjected(t, q)
		if len(q.Spec.Volumes) != len(p.Spec.Volumes) || len(q.Spec.InitContainers) != len(p.Spec.InitContainers) {
			t.Errorf("re-injected pod has %d volumes and %d init containers, first had %d and %d",
				len(q.Spec.Volumes), len(q.Spec.InitContainers), len(p.Spec.Volumes), len(p.Spec.InitContainers))
		}
	})

	t.Run("NamespaceOptInAndOptOut", func(t *testing.T) {
		in := optedInPod(podName("ns-in"), nil)
		delete(in.Labels, inject.LabelInject)
		p, err := e.create("team", in)
		if err != nil {
			t.Fatal(err)
		}
		checkInjected(t, p)
		out := optedInPod(podName("ns-out"), nil)
		out.Labels[inject.LabelInject] = inject.ValueDisabled
		q, err := e.create("team", out)
		if err != nil {
			t.Fatal(err)
		}
		checkUntouched(t, q)
		// Opt-out of a pod in a namespace that did not opt in either.
		r, err := e.create("apps", out.DeepCopy())
		if err != nil {
			t.Fatal(err)
		}
		checkUntouched(t, r)
	})

	t.Run("BadAnnotationsRejected", func(t *testing.T) {
		for _, tc := range []struct {
			ann  map[string]string
			want []string
		}{
			{map[string]string{inject.InboundPrefix + "api": "port=8443 forward=http protocol=http allow=portal"},
				[]string{"annotation inbound.countersign.dev/api=", "forward \"http\" is not a port (expected 1-65535)"}},
			{map[string]string{inject.AnnotationAttester: "tdx"}, []string{"annotation countersign.dev/attester=\"tdx\"", "expected sgx or sim"}},
			{map[string]string{inject.AnnotationIdentity: ""}, []string{"annotation countersign.dev/identity is required"}},
		} {
			name := podName("bad")
			_, err := e.create("apps", optedInPod(name, tc.ann))
			if err == nil {
				t.Errorf("%v: pod admitted, want rejection", tc.ann)
				continue
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%v: error %q lacks %q", tc.ann, err, w)
				}
			}
			e.waitEvent("apps", name, inject.ReasonInvalidAnnotation)
		}
	})

	t.Run("KubeSystemUntouched", func(t *testing.T) {
		p, err := e.create("kube-system", optedInPod(podName("sys"), nil))
		if err != nil {
			t.Fatal(err)
		}
		checkUntouched(t, p)
		// The injector's own namespace as well.
		q, err := e.create(csNS, optedInPod(podName("own"), nil))
		if err != nil {
			t.Fatal(err)
		}
		checkUntouched(t, q)
	})

	t.Run("AdmissionLatency", func(t *testing.T) { admissionLatency(t, e) })

	t.Run("CertificateRotation", func(t *testing.T) { certificateRotation(t, e) })

	t.Run("InjectorDownRejects", func(t *testing.T) {
		e.proc.Stop()
		_, err := e.create("apps", optedInPod(podName("down"), nil))
		if err == nil {
			t.Fatal("opted-in pod admitted while the injector is down")
		}
		if !strings.Contains(err.Error(), "pods.inject.countersign.dev") {
			t.Errorf("error does not name the webhook: %v", err)
		}
		// Pods that did not opt in never reach the webhook.
		if _, err := e.create("apps", plainPod(podName("down-plain"))); err != nil {
			t.Errorf("plain pod refused while the injector is down: %v", err)
		}
	})

	t.Run("ValidatingPolicyStopsBypass", func(t *testing.T) {
		// Bypass: the webhook configuration is deleted (or edited away).
		if err := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx, webhookCf, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		// The policy's informer sees the deletion of nothing; the webhook's removal takes a moment.
		deadline := time.Now().Add(15 * time.Second)
		var err error
		for time.Now().Before(deadline) {
			_, err = e.create("apps", optedInPod(podName("bypass"), nil))
			if err != nil && strings.Contains(err.Error(), "ValidatingAdmissionPolicy") {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err == nil || !strings.Contains(err.Error(), "no countersign-proxy sidecar") {
			t.Fatalf("opted-in pod without the sidecar: %v, want rejection by the validating policy", err)
		}
		// A look-alike sidecar with another image is refused too.
		fake := optedInPod(podName("fake"), nil)
		always := corev1.ContainerRestartPolicyAlways
		fake.Spec.InitContainers = []corev1.Container{{Name: inject.ContainerName, Image: "evil/proxy:latest", RestartPolicy: &always}}
		if _, err := e.create("apps", fake); err == nil || !strings.Contains(err.Error(), "no countersign-proxy sidecar") {
			t.Errorf("look-alike sidecar: %v, want rejection", err)
		}
		// Namespace opt-in is enforced as well.
		ns := plainPod(podName("ns-bypass"))
		if _, err := e.create("team", ns); err == nil {
			t.Error("pod in an opted-in namespace admitted without the sidecar")
		}
		if _, err := e.create("apps", plainPod(podName("plain"))); err != nil {
			t.Errorf("plain pod refused by the policy: %v", err)
		}
		if _, err := e.create("kube-system", optedInPod(podName("sys"), nil)); err != nil {
			t.Errorf("kube-system pod refused by the policy: %v", err)
		}
	})
}

// admissionLatency creates pods one after the other through the API server and reports the
// create round trip for opted-in pods (webhook called) and plain pods (webhook not called).
func admissionLatency(t *testing.T, e *env) {
	mode := os.Getenv("COUNTERSIGN_ADMISSION_LATENCY")
	switch mode {
	case "strict", "report":
	case "":
		t.Skip("measured alone, with no other test running and no -race, by `make test-admission-latency` " +
			"(which `make test` runs after the parallel tests); COUNTERSIGN_ADMISSION_LATENCY=report measures it here")
	default:
		t.Fatalf("COUNTERSIGN_ADMISSION_LATENCY=%q: expected strict, report or unset", mode)
	}
	const n = 500
	// Protobuf, as in-cluster controllers use, so client-side JSON (slow under -race) does not
	// dominate what is measured.
	rc := rest.CopyConfig(e.c.Config)
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	var measuredFrom, measuredTo time.Time // the opted-in creates after warm-up
	measure := func(mk func(i int) *corev1.Pod) []time.Duration {
		ds := make([]time.Duration, 0, n)
		for i := 0; i < n+20; i++ {
			if i == 20 {
				measuredFrom = time.Now()
			}
			start := time.Now()
			if _, err := client.CoreV1().Pods("apps").Create(context.Background(), mk(i), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			if i >= 20 { // warm-up
				ds = append(ds, time.Since(start))
			}
		}
		measuredTo = time.Now()
		slices.Sort(ds)
		return ds
	}
	m0 := apiserverSums(t, e)
	plain := measure(func(i int) *corev1.Pod { return plainPod(podName("lat-plain")) })
	m1 := apiserverSums(t, e)
	injected := measure(func(i int) *corev1.Pod { return optedInPod(podName("lat-inj"), nil) })
	m2 := apiserverSums(t, e)

	// The admission latency: the API server's own span around each call of our webhook, from
	// sending the AdmissionReview to having applied the patch.
	calls, roundTrips, err := webhookCalls(e, measuredFrom, measuredTo, n)
	if err != nil {
		t.Fatal(err)
	}
	verdict := "MET"
	if pct(calls, .99) > 10*time.Millisecond {
		verdict = "MISSED"
	}
	report := fmt.Sprintf("admission latency through the API server, %d opted-in pod creates (target p99 <= 10 ms: %s):\n"+
		"  webhook call, API server's span (request sent -> patch applied): p50 %6.2f ms  p99 %6.2f ms  max %6.2f ms  (%d calls traced)\n"+
		"    of it the HTTPS round trip to the injector:                   p50 %6.2f ms  p99 %6.2f ms\n"+
		"  whole pod create, client side (admission + validation + etcd), %d creates each:\n"+
		"    plain pod (webhook not called):   p50 %6.2f ms  p99 %6.2f ms\n"+
		"    opted-in pod (injected):          p50 %6.2f ms  p99 %6.2f ms\n",
		n, verdict, ms(pct(calls, .5)), ms(pct(calls, .99)), ms(calls[len(calls)-1]), len(calls),
		ms(pct(roundTrips, .5)), ms(pct(roundTrips, .99)),
		n, ms(pct(plain, .5)), ms(pct(plain, .99)), ms(pct(injected, .5)), ms(pct(injected, .99)))
	report += "  where the API server spent its time, mean per create (from its own metrics):\n"
	report += breakdown(m0, m1, "plain") + breakdown(m1, m2, "opted-in")
	report += webhookMetrics(t, e)
	t.Log("\n" + report)
	if root, err := kubetest.RepoRoot(); err == nil {
		_ = os.MkdirAll(filepath.Join(root, "test", "artifacts"), 0o755)
		_ = os.WriteFile(filepath.Join(root, "test", "artifacts", "admission-latency.txt"), []byte(report), 0o644)
	}
	// The target: p99 <= 10 ms for the admission of an opted-in pod, enforced in strict mode.
	// Measured alone: while other test packages run on the same two cores, everything here
	// measures the neighbours.
	if p99 := pct(calls, .99); p99 > 10*time.Millisecond {
		msg := fmt.Sprintf("admission (webhook call) p99 %.2f ms misses the 10 ms target", ms(p99))
		if mode == "strict" {
			t.Error(msg)
		} else {
			t.Log("TARGET MISSED: " + msg)
		}
	}
}

func pct(ds []time.Duration, p float64) time.Duration { return ds[int(float64(len(ds)-1)*p)] }

// webhookCalls returns the durations of the API server's spans around calls of our webhook
// that started in [from, to], sorted, and of the HTTPS round trip within each (to the span's
// "Request completed" event). It fails unless it saw at least 95% of the n calls: an
// exporter that dropped spans would bias the figure.
func webhookCalls(e *env, from, to time.Time, n int) (calls, roundTrips []time.Duration, err error) {
	if e.spans == nil {
		return nil, nil, errors.New("the API server was started without tracing (TestAPIServer enables it when COUNTERSIGN_ADMISSION_LATENCY is set)")
	}
	// The exporter batches: the last spans arrive within its 5 s schedule.
	deadline := time.Now().Add(15 * time.Second)
	for {
		spans, err := e.spans.Spans()
		if err != nil {
			return nil, nil, fmt.Errorf("decoding the API server's spans: %w", err)
		}
		calls, roundTrips = calls[:0], roundTrips[:0]
		for _, s := range spans {
			if s.Attrs["webhook"] != "pods.inject.countersign.dev" || s.Start.Before(from) || s.Start.After(to) {
				continue
			}
			calls = append(calls, s.Duration())
			if done, ok := s.Events["Request completed"]; ok {
				roundTrips = append(roundTrips, done.Sub(s.Start))
			}
		}
		if len(calls) >= n {
			break
		}
		if time.Now().After(deadline) {
			if len(calls) < n*95/100 || len(roundTrips) == 0 {
				return nil, nil, fmt.Errorf("the API server exported %d spans of calls of pods.inject.countersign.dev for %d creates, want at least %d", len(calls), n, n*95/100)
			}
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	slices.Sort(calls)
	slices.Sort(roundTrips)
	return calls, roundTrips, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// certificateRotation restarts the injector with a 24-second certificate, then creates pods
// continuously while the certificate rotates (new CA staged in the caBundle, then served):
// every create must succeed, and the certificate served must change at least twice.
func certificateRotation(t *testing.T, e *env) {
	ctx := context.Background()
	e.proc.Stop()
	if err := e.c.Client.CoreV1().Secrets(csNS).Delete(ctx, secret, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.startInjector("--cert-validity=24s", "--cert-rotate-before=16s", "--cert-overlap=2s", "--cert-sync-interval=250ms")
	served := map[string]bool{}
	maxCAs := 0
	var failures []string
	created := 0
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := e.create("apps", optedInPod(podName("rot"), nil)); err != nil {
			failures = append(failures, err.Error())
		} else {
			created++
		}
		if conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", e.port), &tls.Config{InsecureSkipVerify: true}); err == nil {
			served[conn.ConnectionState().PeerCertificates[0].SerialNumber.String()] = true
			conn.Close()
		}
		if mwc, err := e.c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, webhookCf, metav1.GetOptions{}); err == nil {
			maxCAs = max(maxCAs, strings.Count(string(mwc.Webhooks[0].ClientConfig.CABundle), "BEGIN CERTIFICATE"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	sec, err := e.c.Client.CoreV1().Secrets(csNS).Get(ctx, secret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := certs.ParseCert(sec.Data[certs.KeyCert])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rotation: %d pods created, %d failed, %d serving certificates seen, up to %d CAs in the caBundle; current certificate valid until %s",
		created, len(failures), len(served), maxCAs, leaf.NotAfter.Format(time.RFC3339))
	if len(failures) > 0 {
		t.Errorf("%d admissions failed during rotation, first: %s", len(failures), failures[0])
	}
	if len(served) < 3 {
		t.Errorf("%d serving certificates seen in 30s, want at least 3 (two rotations)", len(served))
	}
	if maxCAs < 2 {
		t.Errorf("caBundle never held the old and new CA together (max %d)", maxCAs)
	}
	if created < 50 {
		t.Errorf("only %d pods created during rotation", created)
	}
	// Leave the injector running with long-lived certificates for what follows.
	e.proc.Stop()
	if err := e.c.Client.CoreV1().Secrets(csNS).Delete(ctx, secret, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.startInjector()
}

// webhookMetrics reads the API server's own measurement of its calls to the webhook
// (apiserver_admission_webhook_admission_duration_seconds) and returns the bucket counts.
// apiserverSums reads the API server's admission and storage histograms: sum and count by
// series, for a before/after breakdown of where a create spends its time.
func apiserverSums(t *testing.T, e *env) map[string][2]float64 {
	raw, err := e.c.Client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		t.Fatalf("API server metrics: %v", err)
	}
	out := map[string][2]float64{}
	for _, line := range strings.Split(string(raw), "\n") {
		name, rest, ok := strings.Cut(line, "{")
		if !ok {
			continue
		}
		base, kind := strings.TrimSuffix(name, "_sum"), 0
		if strings.HasSuffix(name, "_count") {
			base, kind = strings.TrimSuffix(name, "_count"), 1
		} else if base == name {
			continue
		}
		switch {
		case base == "apiserver_admission_controller_admission_duration_seconds",
			base == "apiserver_admission_webhook_admission_duration_seconds",
			base == "apiserver_admission_step_admission_duration_seconds",
			base == "etcd_request_duration_seconds" && strings.Contains(rest, `operation="create"`) && strings.Contains(rest, `type="/registry/pods"`),
			base == "apiserver_request_duration_seconds" && strings.Contains(rest, `verb="POST"`) && strings.Contains(rest, `resource="pods"`) && strings.Contains(rest, `subresource=""`):
		default:
			continue
		}
		i := strings.LastIndex(rest, "} ")
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest[i+2:]), 64)
		if err != nil {
			continue
		}
		key := base + "{" + rest[:i] + "}"
		cur := out[key]
		cur[kind] = v
		out[key] = cur
	}
	return out
}

// breakdown prints the mean per call of each series that moved between two snapshots.
func breakdown(before, after map[string][2]float64, label string) string {
	keys := make([]string, 0, len(after))
	for k := range after {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		dn := after[k][1] - before[k][1]
		if dn <= 0 {
			continue
		}
		mean := (after[k][0] - before[k][0]) / dn
		fmt.Fprintf(&b, "    %-8s %7.3f ms x %4.0f  %s\n", label, mean*1000, dn, k)
	}
	return b.String()
}

func webhookMetrics(t *testing.T, e *env) string {
	raw, err := e.c.Client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		t.Fatalf("API server metrics: %v", err)
	}
	var b strings.Builder
	b.WriteString("  API server's webhook call duration (apiserver_admission_webhook_admission_duration_seconds, pods.inject.countersign.dev):\n")
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "apiserver_admission_webhook_admission_duration_seconds_") && strings.Contains(line, `name="pods.inject.countersign.dev"`) &&
			strings.Contains(line, `operation="CREATE"`) && strings.Contains(line, `rejected="false"`) {
			b.WriteString("    " + line + "\n")
		}
	}
	if resp, err := plainHTTP.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", e.admin)); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		b.WriteString("  injector's own handling time (countersign_injector_admission_duration_seconds, since its last start):\n")
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, "countersign_injector_admission_duration_seconds_") {
				b.WriteString("    " + line + "\n")
			}
		}
	}
	return b.String()
}
