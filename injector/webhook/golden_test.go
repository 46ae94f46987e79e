package webhook

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/countersign/countersign/injector/inject"
)

var update = flag.Bool("update", false, "rewrite the golden NAME.patch.json files (and already-injected.pod.json) under testdata")

// goldenCase is how the API server would call the webhook for testdata/NAME.pod.json.
type goldenCase struct {
	// nsOptIn: the call came through the namespace-selector webhook (/inject-namespace).
	nsOptIn bool
	// mesh: the injector runs with --proxy-init-image and a control plane.
	mesh bool
}

// goldenCases are the annotation combinations users meet; every testdata/*.pod.json has one.
var goldenCases = map[string]goldenCase{
	"opt-in-label":       {},
	"opt-in-namespace":   {nsOptIn: true},
	"opted-out":          {nsOptIn: true},
	"not-opted-in":       {},
	"excluded-namespace": {nsOptIn: true},
	"transparent":        {mesh: true},
	"xds":                {mesh: true},
	"xds-disabled":       {mesh: true},
	"custom-ports":       {},
	"public-listener":    {},
	"already-injected":   {},
	"bad-annotation":     {},
	"missing-identity":   {},
}

// goldenAnswer is what a NAME.patch.json holds: the answer as kubectl's user meets it.
type goldenAnswer struct {
	Allowed bool          `json:"allowed"`
	Reason  inject.Reason `json:"reason"`
	Denial  string        `json:"denial,omitempty"`
	// ProxyConfig is the countersign.dev/proxy-config value of the patch, decoded, so that a
	// change to the proxy's configuration reads as one in review.
	ProxyConfig json.RawMessage   `json:"proxyConfig,omitempty"`
	Patch       []json.RawMessage `json:"patch"`
}

func meshTestConfig() *inject.Config {
	c := testConfig()
	c.ProxyInitImage = "proxy-init@sha256:" + strings.Repeat("d", 64)
	c.ProxySimXDSImage = "proxy-sim-xds@sha256:" + strings.Repeat("e", 64)
	c.XDS = &inject.XDS{
		Address:      "cs-injector.countersign-system.svc:15010",
		ServerName:   "cs-injector.countersign-system.svc",
		ClientSecret: "countersign-xds-client",
	}
	return c
}

// podReview wraps a pod's JSON in the AdmissionReview the API server sends for its creation.
func podReview(t *testing.T, raw []byte) []byte {
	t.Helper()
	var meta struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
	}
	if err := json.Unmarshal(raw, &meta); err != nil {
		t.Fatal(err)
	}
	r := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       "golden-1",
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: meta.Metadata.Namespace,
			Name:      meta.Metadata.Name,
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: raw},
		},
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeAlreadyInjected derives already-injected.pod.json from opt-in-label.pod.json: the pod as
// the API server stores it after the webhook's patch.
func writeAlreadyInjected(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "opt-in-label.pod.json"))
	if err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := json.Unmarshal(raw, &pod); err != nil {
		t.Fatal(err)
	}
	if err := testConfig().Inject(&pod); err != nil {
		t.Fatal(err)
	}
	b, err := json.MarshalIndent(&pod, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("testdata", "already-injected.pod.json"), append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestGolden reviews every testdata/NAME.pod.json and compares the answer with
// testdata/NAME.patch.json, so a change to a patch or a denial shows in review. Run with
// -update to rewrite the golden files.
func TestGolden(t *testing.T) {
	if *update {
		writeAlreadyInjected(t)
	}
	pods, err := filepath.Glob(filepath.Join("testdata", "*.pod.json"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pods {
		names = append(names, strings.TrimSuffix(filepath.Base(p), ".pod.json"))
	}
	for name := range goldenCases {
		if !slices.Contains(names, name) {
			t.Errorf("golden case %s has no testdata/%s.pod.json", name, name)
		}
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			tc, ok := goldenCases[name]
			if !ok {
				t.Fatalf("testdata/%s.pod.json has no entry in goldenCases", name)
			}
			raw, err := os.ReadFile(filepath.Join("testdata", name+".pod.json"))
			if err != nil {
				t.Fatal(err)
			}
			cfg := testConfig()
			if tc.mesh {
				cfg = meshTestConfig()
			}
			out, res := Review(cfg, podReview(t, raw), tc.nsOptIn)
			if out == nil {
				t.Fatalf("no review: %+v", res)
			}
			got := goldenAnswer{
				Allowed: out.Response.Allowed,
				Reason:  res.Reason,
				Patch:   []json.RawMessage{},
			}
			if st := out.Response.Result; st != nil {
				got.Denial = st.Message
			}
			if len(out.Response.Patch) > 0 {
				if err := json.Unmarshal(out.Response.Patch, &got.Patch); err != nil {
					t.Fatal(err)
				}
			}
			for _, op := range got.Patch {
				var o struct {
					Path  string `json:"path"`
					Value any    `json:"value"`
				}
				if err := json.Unmarshal(op, &o); err != nil {
					t.Fatal(err)
				}
				if v, ok := o.Value.(string); ok && o.Path == "/metadata/annotations/countersign.dev~1proxy-config" {
					got.ProxyConfig = json.RawMessage(v)
				}
			}
			if name == "already-injected" && len(got.Patch) != 0 {
				t.Errorf("re-injecting an injected pod patches it: %s", out.Response.Patch)
			}
			b, err := json.MarshalIndent(got, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			b = append(b, '\n')
			golden := filepath.Join("testdata", name+".patch.json")
			if *update {
				if err := os.WriteFile(golden, b, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestGolden -update ./injector/webhook)", err)
			}
			if !bytes.Equal(b, want) {
				t.Errorf("answer for %s differs from %s (run with -update if the change is intended):\n%s", name, golden, b)
			}
		})
	}
}
