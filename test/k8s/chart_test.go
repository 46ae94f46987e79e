package k8s_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/countersign/countersign/test/k8s/kubetest"
)

const kubeVersion = "v1.37.2"

func chartDir(t *testing.T) string {
	root, err := kubetest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "charts", "countersign")
}

func helmTemplate(t *testing.T, set ...string) (string, error) {
	t.Helper()
	args := []string{"template", "cs", chartDir(t), "--namespace", "countersign-system", "--kube-version", kubeVersion,
		"--set", "injection.attestationURL=https://attest.example",
		// The sgx build is not made by make images (docs/images.md): the chart pins none.
		"--set", "image.proxy.digest=sha256:" + strings.Repeat("5", 64)}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	out, err := exec.CommandContext(context.Background(), kubetest.Bin(t, "helm"), args...).CombinedOutput()
	return string(out), err
}

// docs splits rendered YAML into objects keyed by kind/name.
func docs(t *testing.T, out string) map[string]map[string]any {
	t.Helper()
	m := map[string]map[string]any{}
	for _, d := range strings.Split(out, "\n---") {
		var o map[string]any
		if err := yaml.Unmarshal([]byte(d), &o); err != nil {
			t.Fatalf("rendered YAML does not parse: %v\n%s", err, d)
		}
		if o == nil {
			continue
		}
		md, _ := o["metadata"].(map[string]any)
		m[o["kind"].(string)+"/"+md["name"].(string)] = o
	}
	return m
}

func TestChartLint(t *testing.T) {
	out, err := exec.Command(kubetest.Bin(t, "helm"), "lint", chartDir(t), "--strict", "--kube-version", kubeVersion,
		"--set", "injection.attestationURL=https://attest.example").CombinedOutput()
	if err != nil {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}
}

func TestChartDefaults(t *testing.T) {
	out, err := helmTemplate(t)
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	objs := docs(t, out)
	for _, want := range []string{
		"Deployment/cs-countersign-injector", "Service/cs-countersign-injector", "ServiceAccount/cs-countersign-injector",
		"ClusterRole/cs-countersign-injector", "Role/cs-countersign-injector", "PodDisruptionBudget/cs-countersign-injector",
		"MutatingWebhookConfiguration/cs-countersign-injector", "NetworkPolicy/cs-countersign-injector",
		"ValidatingAdmissionPolicy/cs-countersign-injector-require-proxy", "ValidatingAdmissionPolicyBinding/cs-countersign-injector-require-proxy",
	} {
		if objs[want] == nil {
			t.Errorf("default render lacks %s", want)
		}
	}
	mwc := objs["MutatingWebhookConfiguration/cs-countersign-injector"]
	for _, w := range mwc["webhooks"].([]any) {
		wh := w.(map[string]any)
		if wh["failurePolicy"] != "Fail" || wh["reinvocationPolicy"] != "IfNeeded" {
			t.Errorf("webhook %s: failurePolicy %v reinvocationPolicy %v", wh["name"], wh["failurePolicy"], wh["reinvocationPolicy"])
		}
		if _, ok := wh["clientConfig"].(map[string]any)["service"]; !ok {
			t.Errorf("webhook %s does not call the Service", wh["name"])
		}
		if !strings.Contains(toJSON(t, wh["namespaceSelector"]), `"countersign-system","kube-system"`) {
			t.Errorf("webhook %s does not exclude its namespace and kube-system: %s", wh["name"], toJSON(t, wh["namespaceSelector"]))
		}
	}
	dep := objs["Deployment/cs-countersign-injector"]
	if r := dep["spec"].(map[string]any)["replicas"]; r != float64(2) {
		t.Errorf("replicas %v, want 2", r)
	}
	if s := toJSON(t, dep); !strings.Contains(s, "@sha256:") || !strings.Contains(s, "--tls-mode=self") {
		t.Errorf("deployment: images not pinned by digest or not self TLS mode")
	}
	if s := toJSON(t, dep); strings.Contains(s, "--http2") {
		t.Errorf("deployment: the webhook speaks HTTP/2 by default")
	}
	if out, err := helmTemplate(t, "webhook.http2=true"); err != nil || !strings.Contains(out, "- --http2") {
		t.Errorf("webhook.http2=true does not pass --http2: %v\n%s", err, out)
	}
	if s := toJSON(t, dep); strings.Contains(s, "--client-ca-file") {
		t.Errorf("deployment: client certificates required by default (the API server presents none unless configured)")
	}
	out, err = helmTemplate(t, "webhook.clientAuth.caConfigMap=apiserver-client-ca", "webhook.clientAuth.names={kube-apiserver,apiserver.example}")
	if err != nil {
		t.Fatalf("helm template with webhook.clientAuth: %v\n%s", err, out)
	}
	dep = docs(t, out)["Deployment/cs-countersign-injector"]
	if s := toJSON(t, dep); !strings.Contains(s, `"--client-ca-file=/etc/countersign/client-ca/ca.crt"`) ||
		!strings.Contains(s, `"--client-names=kube-apiserver,apiserver.example"`) || !strings.Contains(s, `"name":"apiserver-client-ca"`) {
		t.Errorf("webhook.clientAuth not wired into the deployment: %s", s)
	}
	// Least privilege: no wildcard, no secrets list/watch.
	for _, k := range []string{"ClusterRole/cs-countersign-injector", "Role/cs-countersign-injector"} {
		s := toJSON(t, objs[k]["rules"])
		if strings.Contains(s, `"*"`) || strings.Contains(s, "list") || strings.Contains(s, "watch") || strings.Contains(s, "delete") {
			t.Errorf("%s rules too broad: %s", k, s)
		}
	}
}

func TestChartCertManagerAndURL(t *testing.T) {
	out, err := helmTemplate(t, "webhook.certs.mode=cert-manager")
	if err != nil {
		t.Fatalf("cert-manager: %v\n%s", err, out)
	}
	objs := docs(t, out)
	if objs["Certificate/cs-countersign-injector"] == nil || objs["Role/cs-countersign-injector"] != nil {
		t.Error("cert-manager mode: want a Certificate and no Secret-writing Role")
	}
	if !strings.Contains(out, "cert-manager.io/inject-ca-from: countersign-system/cs-countersign-injector") || !strings.Contains(out, "--tls-mode=files") {
		t.Error("cert-manager mode: no CA injection annotation or files TLS mode")
	}
	out, err = helmTemplate(t, "webhook.url=https://127.0.0.1:9443")
	if err != nil {
		t.Fatalf("url: %v\n%s", err, out)
	}
	if !strings.Contains(out, "url: https://127.0.0.1:9443/inject\n") || !strings.Contains(out, "url: https://127.0.0.1:9443/inject-namespace\n") {
		t.Errorf("webhook.url not used:\n%s", out)
	}
}

func TestChartRejectsBadValues(t *testing.T) {
	for _, tc := range []struct {
		set  []string
		want string
	}{
		{[]string{"injection.attestationURL="}, "injection.attestationURL is required"},
		{[]string{"replicaCount=1"}, "replicaCount"},
		{[]string{"webhook.failurePolicy=Ignore", "validatingPolicy.enabled=false"}, "requires validatingPolicy.enabled=true"},
		{[]string{"webhook.url=https://127.0.0.1:1", "webhook.certs.mode=cert-manager"}, "requires webhook.certs.mode=self"},
		{[]string{"image.proxy.digest=latest"}, "does not match pattern"},
		{[]string{"webhook.failurePolicy=Sometimes"}, "failurePolicy"},
		{[]string{"injection.defaultAttester=tdx"}, "defaultAttester"},
		{[]string{"webhook.url=http://127.0.0.1:1"}, "url"},
		{[]string{"adminPort=9443"}, "adminPort and webhook.port must differ"},
		{[]string{"unknownValue=1"}, "unknownValue"},
		{[]string{"webhook.clientAuth.names={kube-apiserver}"}, "needs webhook.clientAuth.caConfigMap"},
		{[]string{"webhook.clientAuth.caConfigMap=Not_A_Name"}, "caConfigMap"},
		{[]string{"image.proxy.digest="}, "injection.defaultAttester=sgx needs image.proxy.digest"},
		{[]string{"global.imageRegistry=bad@registry"}, "imageRegistry"},
	} {
		out, err := helmTemplate(t, tc.set...)
		if err == nil {
			t.Errorf("%v: rendered, want failure", tc.set)
			continue
		}
		if !strings.Contains(out, tc.want) {
			t.Errorf("%v: error does not mention %q:\n%s", tc.set, tc.want, out)
		}
	}
	// Ignore is accepted when the validating policy still refuses unprotected pods.
	if out, err := helmTemplate(t, "webhook.failurePolicy=Ignore"); err != nil {
		t.Errorf("Ignore with the validating policy: %v\n%s", err, out)
	}
}

func toJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(j)
}

// TestChartControlPlane: xds.enabled runs the control plane in the injector (flags, port,
// certificate volume), exposes it on the Service and in the NetworkPolicy, and grants only
// list and watch on Services, EndpointSlices and Pods: cluster-wide, or in the watched
// namespace only. Off by default; invalid combinations fail at render time.
func TestChartControlPlane(t *testing.T) {
	out, err := helmTemplate(t)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "--xds-") {
		t.Error("the default render runs a control plane")
	}
	// The init image is built and pinned (make images): transparent mode is on by default.
	if !strings.Contains(out, "--proxy-init-image=ghcr.io/countersign/proxy-init@sha256:") {
		t.Error("the default render names no init image")
	}
	if out, err := helmTemplate(t, "image.proxyInit.digest="); err != nil || strings.Contains(out, "--proxy-init-image") {
		t.Errorf("an empty init digest still names an init image (or fails: %v)", err)
	}
	out, err = helmTemplate(t, "xds.enabled=true", "xds.tls.existingSecret=cs-xds-tls", "image.proxyInit.digest=sha256:"+strings.Repeat("e", 64))
	if err != nil {
		t.Fatalf("xds: %v\n%s", err, out)
	}
	objs := docs(t, out)
	dep := toJSON(t, objs["Deployment/cs-countersign-injector"])
	for _, want := range []string{"--xds-listen=:15010", "--xds-client-ca-file=/etc/countersign/xds/ca.crt", "--xds-tls-cert-file=/etc/countersign/xds/tls.crt",
		"--xds-address=cs-countersign-injector.countersign-system.svc:15010", "--xds-client-secret=countersign-xds-client",
		`"secretName":"cs-xds-tls"`, `"containerPort":15010`, "--proxy-init-image=ghcr.io/countersign/proxy-init@sha256:eee"} {
		if !strings.Contains(dep, want) {
			t.Errorf("deployment lacks %s", want)
		}
	}
	if s := toJSON(t, objs["Service/cs-countersign-injector"]); !strings.Contains(s, `"name":"xds","port":15010`) {
		t.Errorf("service has no xds port: %s", s)
	}
	if s := toJSON(t, objs["NetworkPolicy/cs-countersign-injector"]); !strings.Contains(s, `"port":15010`) {
		t.Errorf("network policy does not admit the xds port: %s", s)
	}
	rules := toJSON(t, objs["ClusterRole/cs-countersign-injector-xds"]["rules"])
	want := `[{"apiGroups":[""],"resources":["services","pods"],"verbs":["list","watch"]},{"apiGroups":["discovery.k8s.io"],"resources":["endpointslices"],"verbs":["list","watch"]}]`
	if rules != want+"\n" && rules != want {
		t.Errorf("control plane rules %s, want exactly %s", rules, want)
	}
	if objs["ClusterRoleBinding/cs-countersign-injector-xds"] == nil {
		t.Error("no binding for the control plane's role")
	}
	// One watched namespace: a Role there, nothing cluster-wide.
	out, err = helmTemplate(t, "xds.enabled=true", "xds.tls.existingSecret=cs-xds-tls", "xds.watchNamespace=apps")
	if err != nil {
		t.Fatal(err)
	}
	objs = docs(t, out)
	if objs["ClusterRole/cs-countersign-injector-xds"] != nil || objs["Role/cs-countersign-injector-xds"] == nil || objs["RoleBinding/cs-countersign-injector-xds"] == nil {
		t.Error("watchNamespace: want a Role and RoleBinding, no ClusterRole")
	}
	if ns := objs["Role/cs-countersign-injector-xds"]["metadata"].(map[string]any)["namespace"]; ns != "apps" {
		t.Errorf("role in namespace %v, want apps", ns)
	}
	// cert-manager: the chart issues the control plane's certificate.
	out, err = helmTemplate(t, "xds.enabled=true", "webhook.certs.mode=cert-manager")
	if err != nil {
		t.Fatal(err)
	}
	objs = docs(t, out)
	if c := objs["Certificate/cs-countersign-injector-xds"]; c == nil || !strings.Contains(toJSON(t, c), `"dnsNames":["cs-countersign-injector.countersign-system.svc"]`) {
		t.Errorf("cert-manager: control plane certificate %v", c)
	}
	for _, tc := range []struct {
		set  []string
		want string
	}{
		{[]string{"xds.enabled=true"}, "requires xds.tls.existingSecret"},
		{[]string{"xds.enabled=true", "xds.tls.existingSecret=s", "xds.port=9443"}, "xds.port must differ"},
		{[]string{"xds.enabled=true", "xds.tls.existingSecret=s", "xds.watchNamespace=Apps"}, "watchNamespace"},
		{[]string{"image.proxyInit.digest=latest"}, "does not match pattern"},
	} {
		out, err := helmTemplate(t, tc.set...)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("%v: %v, want a failure mentioning %q:\n%s", tc.set, err, tc.want, out)
		}
	}
}

// TestChartImages: the chart pins digests only; with no sgx build it renders for sim alone (no
// --proxy-image, sgx pods refused by the injector); global.imageRegistry moves every image to a
// mirror, keeping each digest; with xDS on, the xDS-capable sim build is injected and admitted.
func TestChartImages(t *testing.T) {
	out, err := helmTemplate(t, "image.proxy.digest=", "injection.defaultAttester=sim")
	if err != nil {
		t.Fatalf("sim without an sgx image: %v\n%s", err, out)
	}
	if strings.Contains(out, "--proxy-image=") {
		t.Errorf("--proxy-image passed with no sgx digest:\n%s", out)
	}
	out, err = helmTemplate(t, "injection.defaultAttester=sim", "global.imageRegistry=127.0.0.1:5000/countersign/")
	if err != nil {
		t.Fatal(err, out)
	}
	d := docs(t, out)
	dep := toJSON(t, d["Deployment/cs-countersign-injector"])
	for _, want := range []string{`"image":"127.0.0.1:5000/countersign/injector@sha256:`, `--proxy-sim-image=127.0.0.1:5000/countersign/proxy-sim@sha256:`, `--proxy-image=127.0.0.1:5000/countersign/proxy@sha256:5555`} {
		if !strings.Contains(dep, want) {
			t.Errorf("deployment lacks %s:\n%s", want, dep)
		}
	}
	if strings.Contains(out, "ghcr.io") {
		t.Errorf("an image still names ghcr.io with global.imageRegistry set")
	}
	out, err = helmTemplate(t, "xds.enabled=true", "xds.tls.existingSecret=cs-xds-tls")
	if err != nil {
		t.Fatal(err, out)
	}
	if !strings.Contains(out, "--proxy-sim-xds-image=ghcr.io/countersign/proxy-sim-xds@sha256:") || !strings.Contains(out, "--proxy-sim-image=ghcr.io/countersign/proxy-sim@sha256:") {
		t.Errorf("xds.enabled does not pass both sim builds (lean for pods without the control plane, xDS-capable for the others)")
	}
}
