//go:build cluster

// Package node_test runs Countersign where users run it: on a one-node cluster with a kubelet
// (`make cluster-up`), pulling the images `make images` built from the registry on 127.0.0.1
// by digest. `make test-cluster` brings the cluster up, runs these tests and takes it down.
//
// TestNode installs charts/countersign and charts/healthcare-demo with helm --wait, then, in
// order: checks the injected pods, runs the demo flow through the cluster (and the portal in
// headless Chromium), transparent interception, bypasses and faults, and measures.
package node_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/countersign/countersign/injector/certs"
	"github.com/countersign/countersign/test/platform"
)

const (
	csNS     = "countersign-system"
	csRel    = "countersign"
	csFull   = "countersign-injector" // the chart's fullname: Deployment and Service countersign-injector.countersign-system.svc
	demoNS   = "demo"
	hdRel    = "hd"
	probesNS = "probes" // not opted in
	issuer   = "https://hd-attestation.demo.svc:8443"
)

// figures collects the measurements of the run, written to test/artifacts/cluster-figures.txt.
type figures struct{ lines []string }

func (f *figures) add(t *testing.T, format string, a ...any) {
	s := fmt.Sprintf(format, a...)
	t.Log("figure: " + s)
	f.lines = append(f.lines, s)
}

func TestNode(t *testing.T) {
	n := connect(t)
	figs := &figures{}
	t.Cleanup(func() {
		load, _ := os.ReadFile("/proc/loadavg")
		body := fmt.Sprintf("# make test-cluster, %s, load average %s\n%s\n", time.Now().UTC().Format(time.RFC3339),
			strings.Join(strings.Fields(string(load))[:3], " "), strings.Join(figs.lines, "\n"))
		_ = os.WriteFile(filepath.Join(n.artifacts, "cluster-figures.txt"), []byte(body), 0o644)
	})
	n.reset(t)

	ok := t.Run("Install", func(t *testing.T) { n.install(t, figs) })
	if !ok {
		n.dumpPods(t)
		t.FailNow()
	}
	// The portal, its sidecar's admin port and the attestation service on 127.0.0.1 for the
	// whole run (the demo flow, the browser and the fault tests use them).
	n.portForward(t, demoNS, "svc/"+hdRel+"-records", 9443, n.portal.portal)
	n.portForward(t, demoNS, "svc/"+hdRel+"-records", 15020, n.portal.admin)
	n.portForward(t, demoNS, "svc/"+hdRel+"-attestation", 8443, n.portal.certs)
	for _, s := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"InjectedAndAttested", n.injectedAndAttested},
		{"DemoFlow", n.demoFlow},
		{"PortalInBrowser", n.portalInBrowser},
		{"NotOptedInRefused", n.notOptedInRefused},
		{"Transparent", n.transparent},
		{"SidecarPatchRefused", n.sidecarPatchRefused},
		{"ProxyKilledFailsClosedAndRecovers", n.proxyKilled},
		{"XDSScaleReachesCallers", n.xdsScale},
		{"AttestedVsPlainCall", func(t *testing.T) { n.attestedVsPlain(t, figs) }},
		{"InjectorDownRefuses", n.injectorDown},
	} {
		if !t.Run(s.name, s.fn) {
			n.dumpPods(t)
		}
	}
}

// reset removes what an earlier run left (releases, namespaces), so a run on a reused
// cluster starts clean.
func (n *node) reset(t *testing.T) {
	ctx := context.Background()
	for _, r := range [][2]string{{demoNS, hdRel}, {csNS, csRel}} {
		_, _ = n.helmCmd(ctx, "uninstall", r[1], "--namespace", r[0], "--wait", "--timeout", "2m")
	}
	for _, ns := range []string{demoNS, csNS, probesNS} {
		err := n.client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
	waitFor(t, "namespaces of an earlier run to be deleted", 3*time.Minute, func() (bool, string) {
		for _, ns := range []string{demoNS, csNS, probesNS} {
			if _, err := n.client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err == nil {
				return false, ns + " still exists"
			}
		}
		return true, ""
	})
}

// install follows docs/healthcare-demo.md on the node: the injector chart (with the control
// plane), then the demo chart with --wait.
func (n *node) install(t *testing.T, figs *figures) {
	ctx := context.Background()
	for _, ns := range []string{csNS, demoNS, probesNS} {
		if _, err := n.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The control plane's serving certificate and the proxies' client certificate, from one CA
	// (docs/xds.md: the operator issues both).
	now := time.Now()
	ca, err := certs.NewCA("countersign-node-test-xds-ca", now, now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	serving, err := certs.NewLeaf(ca, []string{csFull + "." + csNS + ".svc", csFull + "." + csNS + ".svc.cluster.local"}, now, now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	client, err := certs.NewClientLeaf(ca, "countersign-proxy", nil, now, now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		ns, name string
		pair     certs.Pair
	}{{csNS, "countersign-xds-tls", serving}, {demoNS, "countersign-xds-client", client}} {
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: s.name}, Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{"tls.crt": s.pair.CertPEM, "tls.key": s.pair.KeyPEM, "ca.crt": ca.CertPEM}}
		if _, err := n.client.CoreV1().Secrets(s.ns).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The simulated platform key, made as the docs say.
	key := filepath.Join(n.dir, "platform.pem")
	if out, err := exec.Command(filepath.Join(n.root, "bin", "proxy"), "sim-platform-key", "--out", key).CombinedOutput(); err != nil {
		t.Fatalf("proxy sim-platform-key: %v\n%s (make build first)", err, out)
	}
	n.portal = portalPorts{portal: freePort(t), admin: freePort(t), certs: freePort(t)}

	start := time.Now()
	helm := func(args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(ctx, 12*time.Minute)
		defer cancel()
		t0 := time.Now()
		out, err := n.helmCmd(ctx, args...)
		if err != nil {
			t.Fatalf("helm %s: %v\n%s", strings.Join(args[:2], " "), err, out)
		}
		t.Logf("helm %s %s: %.1fs", args[0], args[1], time.Since(t0).Seconds())
	}
	helm(append([]string{"install", csRel, filepath.Join(n.root, "charts", "countersign"), "--namespace", csNS,
		"--set", "injection.defaultAttester=sim",
		"--set", "injection.attestationURL=" + issuer,
		"--set", "xds.enabled=true", "--set", "xds.tls.existingSecret=countersign-xds-tls",
		"--wait", "--timeout", "10m"}, n.registryValues("countersign")...)...)
	helm(append([]string{"install", hdRel, filepath.Join(n.root, "charts", "healthcare-demo"), "--namespace", demoNS,
		"--set-file", "simPlatformKey.privateKey=" + key, "--set-file", "simPlatformKey.publicKey=" + key + ".pub",
		"--set", fmt.Sprintf("portal.attestationURL=http://localhost:%d/.well-known/attestation", n.portal.admin),
		"--set", fmt.Sprintf("portal.certsURL=https://localhost:%d/certs", n.portal.certs),
		"--wait", "--timeout", "10m"}, n.registryValues("healthcare-demo")...)...)
	took := time.Since(start)
	// --wait returned: every pod of both releases must be Ready now, not eventually.
	for _, ns := range []string{csNS, demoNS} {
		for _, p := range n.pods(t, ns, "") {
			if !podReady(&p) {
				t.Errorf("%s/%s not Ready after helm --wait: %s", ns, p.Name, p.Status.Phase)
			}
		}
	}
	figs.add(t, "helm install of both charts (--wait) to every pod Ready: %.1f s", took.Seconds())
}

type portalPorts struct{ portal, admin, certs int }

// registryValues point a chart at the cluster's registry; the digests stay the chart's own.
func (n *node) registryValues(chart string) []string {
	return []string{"--set", "global.imageRegistry=" + n.registry + "/countersign"}
}

// workloads are the demo's opted-in pods: name label -> the app container and its
// sim MRENCLAVE.
var workloads = map[string]struct {
	container string
	mr        string
}{
	"records":   {"records", platform.MRRecords},
	"inference": {"inference-server", platform.MRInference},
	"redis":     {"redis", platform.MRRedis},
}

// injectedAndAttested: every opted-in pod carries the native sidecar, its token comes from the
// in-cluster attestation service and claims the workload's measurement, and the app container
// started only after the sidecar was ready.
func (n *node) injectedAndAttested(t *testing.T) {
	for name, w := range workloads {
		pods := n.pods(t, demoNS, "app.kubernetes.io/name="+name)
		if len(pods) == 0 {
			t.Errorf("no %s pod", name)
			continue
		}
		for _, p := range pods {
			if len(p.Spec.InitContainers) == 0 || p.Spec.InitContainers[0].Name != "countersign-proxy" {
				t.Errorf("%s: first init container is not countersign-proxy: %v", p.Name, p.Spec.InitContainers)
				continue
			}
			sc := p.Spec.InitContainers[0]
			if sc.RestartPolicy == nil || *sc.RestartPolicy != corev1.ContainerRestartPolicyAlways {
				t.Errorf("%s: the proxy is not a native sidecar (restartPolicy %v)", p.Name, sc.RestartPolicy)
			}
			if !strings.HasPrefix(sc.Image, n.registry+"/countersign/proxy-sim") || !strings.Contains(sc.Image, "@sha256:") {
				t.Errorf("%s: proxy image %s, want one of ours from %s, by digest", p.Name, sc.Image, n.registry)
			}
			st := p.Status.InitContainerStatuses
			if len(st) == 0 || !st[0].Ready || st[0].State.Running == nil {
				t.Errorf("%s: sidecar not running and ready: %+v", p.Name, st)
			}
			if !strings.Contains(st[0].ImageID, "@sha256:") {
				t.Errorf("%s: sidecar image ID %q is not a digest", p.Name, st[0].ImageID)
			}
			// The token the sidecar serves: issued by the in-cluster service, for this workload.
			admin := n.portForward(t, demoNS, "pod/"+p.Name, 15020, 0)
			claims := tokenClaims(t, fmt.Sprintf("http://127.0.0.1:%d/.well-known/attestation", admin))
			if claims["iss"] != issuer || claims["x-ms-sgx-mrenclave"] != w.mr {
				t.Errorf("%s: token iss %v mrenclave %v, want %s and %s", p.Name, claims["iss"], claims["x-ms-sgx-mrenclave"], issuer, w.mr)
			}
			// Order: the app's first log line comes after the sidecar loaded its attested identity,
			// which its /readyz (the kubelet's startup probe) requires.
			ready := firstMatch(n.logLines(t, demoNS, p.Name, "countersign-proxy", false), "attested identity loaded")
			app := n.logLines(t, demoNS, p.Name, w.container, false)
			if ready == nil || len(app) == 0 {
				t.Errorf("%s: no readiness line in the sidecar's log (%v) or no app log (%d lines)", p.Name, ready, len(app))
				continue
			}
			if app[0].at.Before(ready.at) {
				t.Errorf("%s: app logged at %s, before its sidecar was ready at %s", p.Name, app[0].at, ready.at)
			}
			t.Logf("%s: sidecar ready %s, app's first line %s later", p.Name, ready.at.Format(time.StampMicro), app[0].at.Sub(ready.at))
		}
	}
}

func firstMatch(lines []timedLine, text string) *timedLine {
	for i := range lines {
		if strings.Contains(lines[i].text, text) {
			return &lines[i]
		}
	}
	return nil
}

// tokenClaims fetches a proxy's /.well-known/attestation and decodes its token's claims (the
// signature is checked by proxy verify elsewhere; here only who issued it and for what).
func tokenClaims(t *testing.T, url string) map[string]any {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Token string `json:"token"`
	}
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &doc); err != nil || doc.Token == "" {
		t.Fatalf("%s: %v: %.300s", url, err, b)
	}
	parts := strings.Split(doc.Token, ".")
	if len(parts) != 3 {
		t.Fatalf("%s: not a compact JWS", url)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

// portalClient trusts the portal's certificate (the chart's self-signed one, for localhost).
func (n *node) portalClient(t *testing.T) *http.Client {
	t.Helper()
	sec, err := n.client.CoreV1().Secrets(demoNS).Get(context.Background(), hdRel+"-portal-tls", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(sec.Data["tls.crt"]) {
		t.Fatal("portal Secret holds no certificate")
	}
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
}

// demoFlow is `make demo-smoke` through the cluster: create a patient, upload a scan, get the
// diagnosis and verify its receipt offline with proxy verify --receipt.
func (n *node) demoFlow(t *testing.T) {
	c := n.portalClient(t)
	base := fmt.Sprintf("https://localhost:%d", n.portal.portal)
	do := func(method, path, ctype string, body io.Reader, key string) []byte {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, body)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 300 {
			t.Fatalf("%s %s: %s\n%s", method, path, resp.Status, b)
		}
		return b
	}
	var pt struct{ ID string }
	if err := json.Unmarshal(do("POST", "/api/patients", "application/json", strings.NewReader(`{"name":"Node Test","dateOfBirth":"1970-01-01"}`), "node-patient"), &pt); err != nil || pt.ID == "" {
		t.Fatalf("create patient: %v %+v", err, pt)
	}
	scan, err := os.Open(filepath.Join(n.root, "inference-server/models/chest-scan-classifier/samples/nodule-1.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer scan.Close()
	do("POST", "/api/patients/"+pt.ID+"/scans", "image/png", scan, "node-scan")
	recs := string(do("GET", "/api/patients/"+pt.ID+"/records", "", nil, ""))
	label := regexp.MustCompile(`"label":"([^"]*)"`).FindStringSubmatch(recs)
	receipt := regexp.MustCompile(`"receipt":"([^"]*)"`).FindStringSubmatch(recs)
	if label == nil || receipt == nil {
		t.Fatalf("records of the patient have no diagnosis with a receipt: %.500s", recs)
	}
	t.Logf("diagnosis through the cluster: %s", label[1])
	if label[1] != "nodule" {
		t.Errorf("diagnosis %q, want nodule (the sample's label)", label[1])
	}
	// Offline verification with the policy the sidecars pin and the issuer's keys as served.
	cm, err := n.client.CoreV1().ConfigMaps(demoNS).Get(context.Background(), hdRel+"-policy", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(n.dir, "verify")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for k, v := range cm.Data {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(cm.Data["attestation-ca.pem"]))
	kc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "hd-attestation.demo.svc"}}}
	resp, err := kc.Get(fmt.Sprintf("https://127.0.0.1:%d/certs", n.portal.certs))
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for f, b := range map[string][]byte{"certs.json": keys, "receipt.txt": []byte(receipt[1])} {
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	verify := func(receiptFile string) (string, error) {
		cmd := exec.Command(filepath.Join(n.root, "bin", "proxy"), "verify", "--policy", "policy.yaml", "--receipt", receiptFile,
			"--identity", "records-api", "--answerer", "inference", "--issuer-keys", issuer+"=certs.json")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := verify("receipt.txt"); err != nil {
		t.Fatalf("proxy verify --receipt: %v\n%s", err, out)
	} else {
		t.Logf("proxy verify --receipt: %s", strings.TrimSpace(out))
	}
	// The same receipt with one byte changed must not verify (the check can fail).
	bad := []byte(receipt[1])
	bad[len(bad)/2] ^= 1
	if bad[len(bad)/2] == '=' || bad[len(bad)/2] == '.' {
		bad[len(bad)/2] ^= 3
	}
	if err := os.WriteFile(filepath.Join(dir, "tampered.txt"), bad, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := verify("tampered.txt"); err == nil {
		t.Errorf("a tampered receipt verified:\n%s", out)
	}
}

// portalInBrowser: the portal served from the cluster, in headless Chromium: the records API's
// token verifies in the page, a scan is diagnosed and its receipt verifies there; a screenshot
// is kept as test/artifacts/cluster-portal.png.
func (n *node) portalInBrowser(t *testing.T) {
	platform.ChromiumPath(t)
	portal := fmt.Sprintf("localhost:%d", n.portal.portal)
	b := platform.StartBrowser(t, []string{platform.SPKIHash(t, portal), platform.SPKIHash(t, fmt.Sprintf("localhost:%d", n.portal.certs))})
	b.Navigate("https://" + portal + "/")
	b.WaitFor("the portal to load", `document.body && document.body.dataset.ready === "true"`, 30*time.Second)
	b.WaitFor("the attestation to be checked", `document.getElementById("att-status").dataset.state !== "pending"`, 30*time.Second)
	var att struct {
		State, Reason string
		MR            string
	}
	b.Eval(`({State: document.getElementById("att-status").dataset.state, Reason: document.getElementById("att-reason").textContent,
		MR: (document.querySelector("[data-testid=mrenclave]") || {}).textContent})`, &att)
	if att.State != "verified" || att.MR != platform.MRRecords {
		t.Fatalf("attestation panel: %+v (want verified, MRENCLAVE %s)", att, platform.MRRecords)
	}
	b.Eval(`(() => { const v = (id, x) => { const e = document.getElementById(id); e.value = x; e.dispatchEvent(new Event("input", {bubbles: true})); };
		v("p-name", "Cluster Browser Patient"); v("p-dob", "1980-05-01"); v("p-sex", "female"); v("p-mrn", "MRN-5151");
		document.querySelector("#patient-form button[type=submit]").click(); })()`, nil)
	b.WaitFor("the patient to be selected", `!document.getElementById("patient").hidden && document.getElementById("pt-title").textContent.includes("Cluster Browser Patient")`, 30*time.Second)
	b.SetFile("#s-file", filepath.Join(n.root, "inference-server/models/chest-scan-classifier/samples/nodule-1.png"))
	b.Eval(`document.querySelector("#scan-form button[type=submit]").click()`, nil)
	b.WaitFor("the receipt to be checked", `(() => { const s = document.querySelector("[data-testid=receipt-status]"); return s && s.dataset.state !== "pending"; })()`, 60*time.Second)
	var rec struct{ State, Diagnosis, Hops string }
	b.Eval(`(() => { const s = document.querySelector("[data-testid=receipt-status]"); const li = s.closest("li");
		return {State: s.dataset.state, Diagnosis: li.querySelector("[data-testid=diagnosis]").textContent, Hops: (li.querySelector(".hops") || {}).innerText || ""}; })()`, &rec)
	if rec.State != "verified" || rec.Diagnosis != "nodule" || !strings.Contains(rec.Hops, "records-api") || !strings.Contains(rec.Hops, "inference") {
		t.Fatalf("diagnosis receipt in the page: %+v", rec)
	}
	shot := filepath.Join(n.artifacts, "cluster-portal.png")
	b.Screenshot(shot)
	t.Logf("screenshot: %s", shot)
}

// probePod starts a pod running the probe image (no Countersign code in it), with the
// given labels and annotations, and waits until it is Ready.
func (n *node) probePod(t *testing.T, ns, name string, labels, ann map[string]string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	_ = n.client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	waitFor(t, "an earlier "+name+" to go", time.Minute, func() (bool, string) {
		_, err := n.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	uid := int64(1000)
	yes := true
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: ann},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken:  new(bool),
			TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{
				Name: "probe", Image: n.image(t, "probe"), Args: []string{"sleep"},
				SecurityContext: &corev1.SecurityContext{
					RunAsUser:                &uid,
					RunAsNonRoot:             &yes,
					ReadOnlyRootFilesystem:   &yes,
					AllowPrivilegeEscalation: new(bool),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
	if _, err := n.client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s/%s: %v", ns, name, err)
	}
	var got *corev1.Pod
	waitFor(t, "pod "+ns+"/"+name+" to be Ready", 3*time.Minute, func() (bool, string) {
		var err error
		got, err = n.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return podReady(got), fmt.Sprintf("%s %+v", got.Status.Phase, got.Status.ContainerStatuses)
	})
	return got
}

// sidecarAnnotations are the demo's records-api pod annotations (as the chart renders them),
// so a probe pod can prove that identity, with extra annotations on top.
func (n *node) sidecarAnnotations(t *testing.T, extra map[string]string) map[string]string {
	t.Helper()
	pods := n.pods(t, demoNS, "app.kubernetes.io/name=records")
	if len(pods) == 0 {
		t.Fatal("no records pod")
	}
	ann := map[string]string{}
	for k, v := range pods[0].Annotations {
		if strings.HasPrefix(k, "countersign.dev/") && k != "countersign.dev/injected" && !strings.Contains(k, "status") {
			ann[k] = v
		}
	}
	for k, v := range extra {
		ann[k] = v
	}
	return ann
}

// notOptedInRefused: a pod without a sidecar reaches neither attested listener: plain HTTP or
// TLS without an attested certificate to the inference sidecar, raw TCP to Redis's.
func (n *node) notOptedInRefused(t *testing.T) {
	n.probePod(t, probesNS, "plain", nil, nil)
	url := "hd-inference." + demoNS + ".svc:8443/v2/models/chest-scan-classifier"
	if r := n.probe(t, probesNS, "plain", time.Minute, "http", "-insecure", "https://"+url); r.OK || !strings.Contains(r.Error, "certificate") {
		t.Errorf("TLS without an attested certificate to the inference sidecar: %+v, want a handshake refusal", r)
	} else {
		t.Logf("TLS without a certificate: %s", r.Error)
	}
	if r := n.probe(t, probesNS, "plain", time.Minute, "http", "http://"+url); r.OK {
		t.Errorf("plain HTTP to the inference sidecar: %+v, want refused", r)
	}
	if r := n.probe(t, probesNS, "plain", time.Minute, "tcp", "hd-redis."+demoNS+".svc:6443", `PING\r\n`); strings.Contains(r.Reply, "PONG") {
		t.Errorf("plain TCP to Redis's attested listener answered PONG: %+v", r)
	}
}

// transparent: an unmodified client in a transparent pod dials the inference Service's plain
// address and reaches it attested; the init container's rules are in the pod's netns; a
// destination outside the mesh is refused and counted (docs/transparent.md).
func (n *node) transparent(t *testing.T) {
	ctx := context.Background()
	// A Service whose port is named http, so the control plane translates it as HTTP (docs/xds.md).
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "inference-mesh"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app.kubernetes.io/instance": hdRel, "app.kubernetes.io/name": "inference"},
		Ports:    []corev1.ServicePort{{Name: "http", Port: 8443}},
	}}
	if _, err := n.client.CoreV1().Services(demoNS).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	ann := n.sidecarAnnotations(t, map[string]string{
		"countersign.dev/transparent":             "enabled",
		"countersign.dev/xds-upstream-identities": "inference",
	})
	for k := range ann {
		if strings.HasPrefix(k, "inbound.") || strings.HasPrefix(k, "outbound.") {
			delete(ann, k)
		}
	}
	p := n.probePod(t, demoNS, "transparent", map[string]string{"countersign.dev/inject": "enabled"}, ann)
	if len(p.Spec.InitContainers) < 2 || p.Spec.InitContainers[0].Name != "countersign-iptables" {
		t.Fatalf("transparent pod's init containers: %v", p.Spec.InitContainers)
	}
	if st := p.Status.InitContainerStatuses[0]; st.State.Terminated == nil || st.State.Terminated.ExitCode != 0 {
		t.Errorf("iptables init container: %+v, want exited 0", st.State)
	}
	// The rules, read in the pod's own network namespace.
	pid := n.containerPID(t, p.Status.ContainerStatuses[0].ContainerID)
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-n", "iptables-save", "-t", "nat").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables-save in the pod's netns: %v\n%s", err, out)
	}
	for _, want := range []string{"-A OUTPUT -p tcp -j CS_OUTBOUND", "--uid-owner 1337 -j RETURN", "--to-ports 15001", "-A PREROUTING -p tcp -j CS_INBOUND"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("pod's nat table lacks %q:\n%s", want, out)
		}
	}
	// Through the mesh, plain HTTP from the app's point of view.
	var r probeResult
	waitFor(t, "the transparent pod's proxy to learn the inference Service over xDS", 60*time.Second, func() (bool, string) {
		r = n.probe(t, demoNS, "transparent", time.Minute, "http", "http://inference-mesh."+demoNS+".svc:8443/v2/models/chest-scan-classifier")
		return r.OK && strings.Contains(r.Body, "chest-scan-classifier"), fmt.Sprintf("%+v", r)
	})
	// Outside the mesh (the attestation service is not behind a sidecar): refused, counted.
	admin := n.portForward(t, demoNS, "pod/transparent", 15020, 0)
	before := metric(t, admin, `countersign_rejections_total{listener="transparent-outbound",reason="no_route"}`)
	if r := n.probe(t, demoNS, "transparent", time.Minute, "tcp", "hd-attestation."+demoNS+".svc:8443", `GET / HTTP/1.0\r\n\r\n`); r.OK {
		t.Errorf("transparent pod reached a destination outside the mesh: %+v", r)
	}
	waitFor(t, "the refusal to be counted", 10*time.Second, func() (bool, string) {
		after := metric(t, admin, `countersign_rejections_total{listener="transparent-outbound",reason="no_route"}`)
		return after > before, fmt.Sprintf("no_route %v -> %v", before, after)
	})
}

// metric reads one sample from a proxy's /metrics (0 when absent).
func metric(t *testing.T, port int, series string) float64 {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, series+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(l, series)), 64)
			if err != nil {
				t.Fatalf("%s: %v", l, err)
			}
			return v
		}
	}
	return 0
}

// metricSum adds every sample of a metric whose labels contain all the given pairs.
func metricSum(t *testing.T, port int, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	sum := 0.0
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, name+"{") {
			continue
		}
		if !slices.ContainsFunc(labels, func(s string) bool { return !strings.Contains(l, s) }) {
			f := strings.Fields(l)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

// sidecarPatchRefused: an update that alters an injected sidecar is refused by the admission
// policy; one that removes it is refused too.
func (n *node) sidecarPatchRefused(t *testing.T) {
	ctx := context.Background()
	p := n.pods(t, demoNS, "app.kubernetes.io/name=inference")[0]
	alter := fmt.Sprintf(`[{"op":"replace","path":"/spec/initContainers/0/image","value":%q}]`, n.image(t, "probe"))
	_, err := n.client.CoreV1().Pods(demoNS).Patch(ctx, p.Name, types.JSONPatchType, []byte(alter), metav1.PatchOptions{})
	if err == nil || !strings.Contains(err.Error(), "ValidatingAdmissionPolicy") {
		t.Errorf("patch replacing the sidecar's image: %v, want refused by the ValidatingAdmissionPolicy", err)
	} else {
		t.Logf("altered sidecar refused: %v", err)
	}
	remove := `[{"op":"remove","path":"/spec/initContainers/0"}]`
	if _, err := n.client.CoreV1().Pods(demoNS).Patch(ctx, p.Name, types.JSONPatchType, []byte(remove), metav1.PatchOptions{}); err == nil {
		t.Error("patch removing the sidecar was accepted")
	} else {
		t.Logf("removed sidecar refused: %v", err)
	}
	// A pod created with a look-alike sidecar (another image) is refused too.
	always := corev1.ContainerRestartPolicyAlways
	fake := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "lookalike", Labels: map[string]string{"countersign.dev/inject": "enabled"},
		Annotations: n.sidecarAnnotations(t, nil)},
		Spec: corev1.PodSpec{InitContainers: []corev1.Container{{Name: "countersign-proxy", Image: n.image(t, "probe"), RestartPolicy: &always, Args: []string{"sleep"}}},
			Containers: []corev1.Container{{Name: "probe", Image: n.image(t, "probe"), Args: []string{"sleep"}}}}}
	if _, err := n.client.CoreV1().Pods(demoNS).Create(ctx, fake, metav1.CreateOptions{}); err == nil {
		_ = n.client.CoreV1().Pods(demoNS).Delete(ctx, fake.Name, metav1.DeleteOptions{})
		t.Error("pod with a look-alike sidecar admitted")
	}
	// The running pod is untouched.
	got, err := n.client.CoreV1().Pods(demoNS).Get(ctx, p.Name, metav1.GetOptions{})
	if err != nil || got.Spec.InitContainers[0].Image != p.Spec.InitContainers[0].Image {
		t.Errorf("the sidecar changed: %v", err)
	}
}

// proxyKilled: Redis's sidecar is frozen, then killed (SIGSTOP, SIGKILL from the host) while the
// records API writes through it; the writes fail closed meanwhile, the kubelet restarts the
// sidecar, traffic recovers, and every write the API acknowledged is still there.
func (n *node) proxyKilled(t *testing.T) {
	redisPod := n.pods(t, demoNS, "app.kubernetes.io/name=redis")[0]
	restarts := redisPod.Status.InitContainerStatuses[0].RestartCount
	type loop struct {
		r   probeResult
		err error
	}
	done := make(chan loop, 1)
	records := "https://hd-records." + demoNS + ".svc:9443"
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, err := n.kubectlCmd(ctx, "-n", probesNS, "exec", "plain", "-c", "probe", "--", "/probe", "writeloop", "-url", records, "-for", "40s")
		var r probeResult
		if jerr := json.Unmarshal([]byte(lastLine(out)), &r); jerr != nil {
			err = fmt.Errorf("%v: %v: %s", err, jerr, out)
		}
		done <- loop{r, err}
	}()
	time.Sleep(8 * time.Second)
	pid := n.containerPID(t, redisPod.Status.InitContainerStatuses[0].ContainerID)
	// A killed sidecar is back within a second (the kubelet restarts it at once and it
	// attests in milliseconds), which the app's Redis client retries hide. So the sidecar is
	// first frozen (SIGSTOP) for 8 s, an outage long enough for the app's writes to fail,
	// which shows nothing goes around it; then killed, as a crash would.
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("stop the redis sidecar (pid %d): %v", pid, err)
	}
	time.Sleep(8 * time.Second)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the redis sidecar (pid %d): %v", pid, err)
	}
	killed := time.Now()
	waitFor(t, "the kubelet to restart the sidecar and the pod to be Ready", 2*time.Minute, func() (bool, string) {
		p, err := n.client.CoreV1().Pods(demoNS).Get(context.Background(), redisPod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		st := p.Status.InitContainerStatuses[0]
		return st.RestartCount > restarts && st.Ready && podReady(p), fmt.Sprintf("restarts %d ready %v", st.RestartCount, st.Ready)
	})
	t.Logf("sidecar restarted and Ready %.1fs after the kill", time.Since(killed).Seconds())
	l := <-done
	if l.err != nil {
		t.Fatalf("write loop: %v", l.err)
	}
	t.Logf("write loop: %d attempts, %d acknowledged, %d failed (e.g. %v)", l.r.Attempts, len(l.r.Acked), l.r.Failed, first(l.r.Errors))
	if l.r.Failed == 0 {
		t.Error("no write failed while Redis's sidecar was down: the app's calls did not fail closed (or went around it)")
	}
	if len(l.r.Acked) == 0 {
		t.Fatal("no write acknowledged")
	}
	// Recovered: a second loop loses nothing.
	after := n.probe(t, probesNS, "plain", time.Minute, "writeloop", "-url", records, "-for", "5s")
	if after.Failed != 0 || len(after.Acked) == 0 {
		t.Errorf("after the restart: %d acknowledged, %d failed (%v)", len(after.Acked), after.Failed, after.Errors)
	}
	// Every acknowledged write is readable.
	stored := n.patientIDs(t)
	for _, id := range append(l.r.Acked, after.Acked...) {
		if !stored[id] {
			t.Errorf("acknowledged patient %s is not stored", id)
		}
	}
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// patientIDs lists every stored patient through the records API.
func (n *node) patientIDs(t *testing.T) map[string]bool {
	t.Helper()
	c := n.portalClient(t)
	ids := map[string]bool{}
	for off := 0; ; off += 1000 {
		resp, err := c.Get(fmt.Sprintf("https://localhost:%d/api/patients?limit=1000&offset=%d", n.portal.portal, off))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var page struct {
			Patients []struct{ ID string } `json:"patients"`
			Total    int                   `json:"total"`
		}
		if err := json.Unmarshal(b, &page); err != nil {
			t.Fatalf("list patients: %v: %.300s", err, b)
		}
		for _, p := range page.Patients {
			ids[p.ID] = true
		}
		if len(page.Patients) == 0 || off+1000 >= page.Total {
			return ids
		}
	}
}

// xdsScale: scaling the inference Deployment reaches the callers' proxies over xDS: the
// transparent client's requests are answered by both inference pods' sidecars.
func (n *node) xdsScale(t *testing.T) {
	n.mustKubectl(t, "-n", demoNS, "scale", "deployment/"+hdRel+"-inference", "--replicas=2")
	t.Cleanup(func() { n.mustKubectl(t, "-n", demoNS, "scale", "deployment/"+hdRel+"-inference", "--replicas=1") })
	var pods []corev1.Pod
	waitFor(t, "two inference pods Ready", 3*time.Minute, func() (bool, string) {
		pods = n.pods(t, demoNS, "app.kubernetes.io/name=inference")
		ready := 0
		for i := range pods {
			if podReady(&pods[i]) && pods[i].DeletionTimestamp == nil {
				ready++
			}
		}
		return ready == 2 && len(pods) == 2, fmt.Sprintf("%d of %d ready", ready, len(pods))
	})
	ports := map[string]int{}
	before := map[string]float64{}
	for _, p := range pods {
		ports[p.Name] = n.portForward(t, demoNS, "pod/"+p.Name, 15020, 0)
		before[p.Name] = metricSum(t, ports[p.Name], "countersign_http_requests_total")
	}
	waitFor(t, "both inference sidecars to answer the transparent client", 60*time.Second, func() (bool, string) {
		r := n.probe(t, demoNS, "transparent", time.Minute, "http", "-n", "20", "http://inference-mesh."+demoNS+".svc:8443/v2/models/chest-scan-classifier")
		if !r.OK {
			return false, fmt.Sprintf("%+v", r)
		}
		msg := ""
		all := true
		for _, p := range pods {
			d := metricSum(t, ports[p.Name], "countersign_http_requests_total") - before[p.Name]
			msg += fmt.Sprintf("%s +%v ", p.Name, d)
			all = all && d > 0
		}
		return all, msg
	})
}

// attestedVsPlain measures one call pod to pod to the same app: plain (a pod without a sidecar
// to an inference server without one) against attested (through an opted-in client's
// outbound listener, attested mTLS, the inference sidecar).
func (n *node) attestedVsPlain(t *testing.T, figs *figures) {
	ctx := context.Background()
	// A plain inference server, the same image, listening on its pod IP.
	plain := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "inference-plain"}, Spec: corev1.PodSpec{
		AutomountServiceAccountToken: new(bool),
		Containers: []corev1.Container{{Name: "inference-server", Image: n.inferenceImage(t),
			Args: []string{"--listen=0.0.0.0:8000", "--model-repository=/models"}}}}}
	_ = n.client.CoreV1().Pods(probesNS).Delete(ctx, plain.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	time.Sleep(time.Second)
	if _, err := n.client.CoreV1().Pods(probesNS).Create(ctx, plain, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var ip string
	waitFor(t, "the plain inference server", 3*time.Minute, func() (bool, string) {
		p, err := n.client.CoreV1().Pods(probesNS).Get(ctx, plain.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		ip = p.Status.PodIP
		return podReady(p) && ip != "", string(p.Status.Phase)
	})
	ann := n.sidecarAnnotations(t, nil)
	for k := range ann {
		if strings.HasPrefix(k, "inbound.") || strings.HasPrefix(k, "outbound.") {
			delete(ann, k)
		}
	}
	ann["outbound.countersign.dev/inference"] = "port=7001 upstream=" + hdRel + "-inference:8443 identity=inference protocol=http"
	n.probePod(t, demoNS, "client", map[string]string{"countersign.dev/inject": "enabled"}, ann)
	const path = "/v2/models/chest-scan-classifier"
	waitFor(t, "the plain server to answer", time.Minute, func() (bool, string) {
		r := n.probe(t, probesNS, "plain", time.Minute, "http", "http://"+ip+":8000"+path)
		return r.OK, fmt.Sprintf("%+v", r)
	})
	var plainP50, attP50, plainP99, attP99 []int64
	for round := 0; round < 3; round++ { // interleaved rounds
		p := n.probe(t, probesNS, "plain", 3*time.Minute, "http", "-n", "300", "http://"+ip+":8000"+path)
		a := n.probe(t, demoNS, "client", 3*time.Minute, "http", "-n", "300", "http://127.0.0.1:7001"+path)
		if !p.OK || !a.OK {
			t.Fatalf("round %d: plain %+v attested %+v", round, p, a)
		}
		plainP50, plainP99 = append(plainP50, p.P50us), append(plainP99, p.P99us)
		attP50, attP99 = append(attP50, a.P50us), append(attP99, a.P99us)
	}
	med := func(v []int64) int64 { s := slices.Clone(v); slices.Sort(s); return s[len(s)/2] }
	figs.add(t, "pod-to-pod GET %s, 300 sequential keep-alive requests, median of 3 interleaved rounds: plain p50 %d µs p99 %d µs; attested (outbound listener -> attested mTLS -> inference sidecar) p50 %d µs p99 %d µs; ratio p50 %.2fx p99 %.2fx",
		path, med(plainP50), med(plainP99), med(attP50), med(attP99), float64(med(attP50))/float64(med(plainP50)), float64(med(attP99))/float64(med(plainP99)))
}

// inferenceImage is the image the demo's inference Deployment runs.
func (n *node) inferenceImage(t *testing.T) string {
	t.Helper()
	p := n.pods(t, demoNS, "app.kubernetes.io/name=inference")[0]
	for _, c := range p.Spec.Containers {
		if c.Name == "inference-server" {
			return c.Image
		}
	}
	t.Fatal("no inference-server container")
	return ""
}

// injectorDown: with every injector replica gone, an opted-in pod is not admitted
// (failurePolicy Fail, and the admission policy behind it); plain pods still are.
func (n *node) injectorDown(t *testing.T) {
	ctx := context.Background()
	n.mustKubectl(t, "-n", csNS, "scale", "deployment/"+csFull, "--replicas=0")
	t.Cleanup(func() {
		n.mustKubectl(t, "-n", csNS, "scale", "deployment/"+csFull, "--replicas=2")
		n.mustKubectl(t, "-n", csNS, "rollout", "status", "deployment/"+csFull, "--timeout=3m")
	})
	waitFor(t, "the injector's pods to be gone", 2*time.Minute, func() (bool, string) {
		ps := n.pods(t, csNS, "")
		return len(ps) == 0, fmt.Sprintf("%d pods", len(ps))
	})
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "while-down", Labels: map[string]string{"countersign.dev/inject": "enabled"},
		Annotations: n.sidecarAnnotations(t, nil)},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "probe", Image: n.image(t, "probe"), Args: []string{"sleep"}}}}}
	_, err := n.client.CoreV1().Pods(demoNS).Create(ctx, pod, metav1.CreateOptions{})
	if err == nil {
		_ = n.client.CoreV1().Pods(demoNS).Delete(ctx, pod.Name, metav1.DeleteOptions{})
		t.Fatal("opted-in pod admitted while the injector is down")
	}
	t.Logf("refused while the injector is down: %v", err)
	plain := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "plain-while-down"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "probe", Image: n.image(t, "probe"), Args: []string{"sleep"}}}}}
	if _, err := n.client.CoreV1().Pods(probesNS).Create(ctx, plain, metav1.CreateOptions{}); err != nil {
		t.Errorf("plain pod refused while the injector is down: %v", err)
	}
}

// dumpPods logs every pod's status and the last lines of its containers' logs, for a failure.
func (n *node) dumpPods(t *testing.T) {
	for _, ns := range []string{csNS, demoNS, probesNS} {
		out, _ := n.kubectlCmd(context.Background(), "-n", ns, "get", "pods,events", "-o", "wide")
		t.Logf("--- %s ---\n%s", ns, out)
		for _, p := range n.pods(t, ns, "") {
			for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
				out, _ := n.kubectlCmd(context.Background(), "-n", ns, "logs", p.Name, "-c", c.Name, "--tail", "15")
				t.Logf("--- %s/%s %s ---\n%s", ns, p.Name, c.Name, out)
			}
		}
	}
}
