package webhook

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/countersign/countersign/injector/inject"
	"github.com/countersign/countersign/injector/metrics"
	"github.com/countersign/countersign/internal/fuzzcorpus"
)

func testConfig() *inject.Config {
	return &inject.Config{
		ProxyImage:           "proxy@sha256:" + strings.Repeat("a", 64),
		ProxySimImage:        "proxy-sim@sha256:" + strings.Repeat("b", 64),
		DefaultAttester:      "sim",
		AttestationURL:       "https://attest.example",
		PolicyConfigMap:      "countersign-policy",
		SimPlatformKeySecret: "countersign-sim-platform-key",
		CPU:                  resource.MustParse("100m"),
		Memory:               resource.MustParse("128Mi"),
		EPC:                  resource.MustParse("64Mi"),
		ExcludedNamespaces:   []string{"kube-system"},
	}
}

func podJSON(labels, ann map[string]string) []byte {
	p := corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{GenerateName: "records-", Namespace: "health", Labels: labels, Annotations: ann},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "records:1"}}},
	}
	b, _ := json.Marshal(p)
	return b
}

func review(op admissionv1.Operation, pod []byte) []byte {
	r := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       "0b6d1c8e-1",
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: "health",
			Operation: op,
			Object:    runtime.RawExtension{Raw: pod},
		},
	}
	b, _ := json.Marshal(r)
	return b
}

var goodAnn = map[string]string{
	inject.AnnotationIdentity:      "records-api",
	inject.InboundPrefix + "api":   "port=8443 forward=8080 protocol=http allow=portal",
	inject.OutboundPrefix + "data": "port=6380 upstream=redis.data.svc:8443 identity=redis protocol=tcp",
}
var optIn = map[string]string{inject.LabelInject: inject.ValueEnabled}

func TestReviewInjects(t *testing.T) {
	raw := podJSON(optIn, goodAnn)
	out, res := Review(testConfig(), review(admissionv1.Create, raw), false)
	if out == nil || !out.Response.Allowed || res.Reason != inject.ReasonInjected {
		t.Fatalf("review %+v, %+v", out, res)
	}
	if out.Response.UID != "0b6d1c8e-1" || out.Response.PatchType == nil || *out.Response.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("response %+v", out.Response)
	}
	var ops []map[string]any
	if err := json.Unmarshal(out.Response.Patch, &ops); err != nil {
		t.Fatal(err)
	}
	paths := map[string]bool{}
	for _, op := range ops {
		paths[op["op"].(string)+" "+op["path"].(string)] = true
	}
	for _, want := range []string{"add /spec/initContainers", "add /spec/volumes",
		"add /metadata/annotations/countersign.dev~1proxy-config", "add /metadata/annotations/countersign.dev~1status"} {
		if !paths[want] {
			t.Errorf("patch lacks %q: %v", want, paths)
		}
	}
	for p := range paths {
		if strings.Contains(p, "/spec/containers") || strings.Contains(p, "/status") && !strings.Contains(p, "countersign.dev~1status") {
			t.Errorf("patch touches %q", p)
		}
	}
}

func TestReviewSkipsAndDenies(t *testing.T) {
	bad := map[string]string{}
	for k, v := range goodAnn {
		bad[k] = v
	}
	bad[inject.OutboundPrefix+"data"] = "port=6380 upstream=redis identity=redis protocol=tcp"
	for _, tc := range []struct {
		name    string
		body    []byte
		nsOptIn bool
		allowed bool
		reason  inject.Reason
		msg     string
	}{
		{"not opted in", review(admissionv1.Create, podJSON(nil, goodAnn)), false, true, inject.ReasonNotOptedIn, ""},
		{"opted out in opted-in namespace", review(admissionv1.Create, podJSON(map[string]string{inject.LabelInject: "disabled"}, goodAnn)), true, true, inject.ReasonOptedOut, ""},
		{"namespace opt-in", review(admissionv1.Create, podJSON(nil, goodAnn)), true, true, inject.ReasonInjected, ""},
		{"update ignored", review(admissionv1.Update, podJSON(optIn, goodAnn)), false, true, inject.ReasonUnsupportedRequest, ""},
		{"bad annotation", review(admissionv1.Create, podJSON(optIn, bad)), false, false, inject.ReasonInvalidAnnotation, "annotation outbound.countersign.dev/data="},
		{"huge exponent quantity", review(admissionv1.Create, []byte(`{"metadata":{"labels":{"countersign.dev/inject":"enabled"}},"spec":{"containers":[{"name":"a","resources":{"limits":{"cpu":"1e-999999999"}}}]}}`)), false, false, inject.ReasonBadRequest, "exponent"},
		{"huge exponent number", review(admissionv1.Create, []byte(`{"metadata":{"labels":{"countersign.dev/inject":"enabled"}},"spec":{"containers":[{"name":"a","resources":{"limits":{"cpu": 1e-999999999}}}]}}`)), false, false, inject.ReasonBadRequest, "exponent"},
		{"huge exponent, field name in another case", review(admissionv1.Create, []byte(`{"metadata":{"labels":{"countersign.dev/inject":"enabled"}},"spec":{"containers":[{"name":"a","resources":{"LIMITS":{"cpu":"1e-999999999"}}}]}}`)), false, false, inject.ReasonBadRequest, "exponent"},
		// UIDs and hashes that start like an exponent are not quantities (they made a
		// StatefulSet's pods fail admission when its UID began with "e" and four digits).
		{"exponent-like UIDs", review(admissionv1.Create, podJSON(map[string]string{inject.LabelInject: "enabled", "hash": "e52301ab", "h2": "1e12345-ab"}, goodAnnWith("uid-like", "E99999999"))), false, true, inject.ReasonInjected, ""},
		{"object not a pod", review(admissionv1.Create, []byte(`{"spec":{"containers":"x"}}`)), false, false, inject.ReasonBadRequest, "not a Pod"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, res := Review(testConfig(), tc.body, tc.nsOptIn)
			if out == nil {
				t.Fatalf("nil review: %+v", res)
			}
			if out.Response.Allowed != tc.allowed || res.Reason != tc.reason {
				t.Errorf("allowed %v reason %s, want %v %s", out.Response.Allowed, res.Reason, tc.allowed, tc.reason)
			}
			if tc.allowed && tc.reason != inject.ReasonInjected && out.Response.Patch != nil {
				t.Errorf("skip carries a patch")
			}
			if !tc.allowed && !strings.Contains(out.Response.Result.Message, tc.msg) {
				t.Errorf("message %q lacks %q", out.Response.Result.Message, tc.msg)
			}
		})
	}
}

func TestReviewNotAReview(t *testing.T) {
	for _, b := range [][]byte{nil, []byte(`{}`), []byte(`{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}`),
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`), []byte(`[`)} {
		if out, res := Review(testConfig(), b, false); out != nil || res.Reason != inject.ReasonBadRequest {
			t.Errorf("Review(%q) = %v, %s; want nil, bad_request", b, out, res.Reason)
		}
	}
}

type fakeRecorder struct {
	mu      sync.Mutex
	reasons []inject.Reason
}

func (f *fakeRecorder) Event(_ *corev1.Pod, _ string, r inject.Reason, _ string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reasons = append(f.reasons, r)
}

func TestHandlerMetricsAndEvents(t *testing.T) {
	m := metrics.New()
	rec := &fakeRecorder{}
	h := &Handler{Config: testConfig(), Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: m, Events: rec}
	mux := http.NewServeMux()
	h.Mux(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	post := func(path string, body []byte) int {
		resp, err := http.Post(srv.URL+path, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	bad := map[string]string{inject.AnnotationIdentity: "x"}
	if c := post(PathInject, review(admissionv1.Create, podJSON(optIn, goodAnn))); c != 200 {
		t.Errorf("status %d", c)
	}
	if c := post(PathInjectNamespace, review(admissionv1.Create, podJSON(nil, bad))); c != 200 {
		t.Errorf("status %d", c)
	}
	if c := post(PathInject, []byte("garbage")); c != 400 {
		t.Errorf("garbage: status %d, want 400", c)
	}
	if c := post(PathInject, bytes.Repeat([]byte(" "), MaxBodyBytes+1)); c != 400 {
		t.Errorf("oversized: status %d, want 400", c)
	}
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() == "countersign_injector_admissions_total" {
			for _, mm := range mf.GetMetric() {
				got[mm.GetLabel()[0].GetValue()] = mm.GetCounter().GetValue()
			}
		}
	}
	if got["injected"] != 1 || got["invalid_annotation"] != 1 || got["bad_request"] != 2 {
		t.Errorf("admissions %v", got)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	// Events for rejections and opt-outs, not for each injection.
	if len(rec.reasons) != 1 || rec.reasons[0] != inject.ReasonInvalidAnnotation {
		t.Errorf("events %v, want [%s]", rec.reasons, inject.ReasonInvalidAnnotation)
	}
}

// FuzzReview feeds arbitrary bytes as an AdmissionReview body and as a pod's annotations: it
// must never panic, must answer every decodable review with its uid, and every denial must name
// a rejection reason.
func FuzzReview(f *testing.F) {
	seeds := [][]any{
		{review(admissionv1.Create, podJSON(optIn, goodAnn)), "port=8443 forward=8080 protocol=http allow=portal"},
		{review(admissionv1.Create, podJSON(nil, goodAnn)), "port=1 forward=65535 protocol=tcp allow=a,b,c"},
		{review(admissionv1.Update, podJSON(optIn, goodAnn)), "port=0 forward=x"},
		{review(admissionv1.Create, []byte(`{"metadata":{"annotations":{"a":1}}}`)), "protocol=http protocol=http"},
		{[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"kind":"Pod","version":"v1"},"resource":{"resource":"pods"},"operation":"CREATE","object":null}}`), "="},
		{[]byte(`{`), ""},
		// Found by fuzzing: an exponent quantity made resource.ParseQuantity spin for minutes.
		{[]byte(`{}`), "1e-999999999"},
		{review(admissionv1.Create, []byte(`{"spec":{"containers":[{"name":"a","resources":{"limits":{"cpu":"1e-999999999"}}}]}}`)), "x"},
	}
	if *fuzzcorpus.Update {
		if err := fuzzcorpus.Write("FuzzReview", seeds...); err != nil {
			f.Fatal(err)
		}
	}
	for _, s := range seeds {
		f.Add(s[0].([]byte), s[1].(string))
	}
	cfg := testConfig()
	f.Fuzz(func(t *testing.T, body []byte, listener string) {
		for _, b := range [][]byte{body, review(admissionv1.Create, podJSON(optIn, map[string]string{
			inject.AnnotationIdentity: "a", inject.InboundPrefix + "x": listener, inject.AnnotationCPU: listener,
		}))} {
			out, res := Review(cfg, b, false)
			if out == nil {
				if res.Reason != inject.ReasonBadRequest || res.Message == "" {
					t.Fatalf("undecodable review without reason: %+v", res)
				}
				continue
			}
			if out.Response == nil || out.Response.UID == "" {
				t.Fatal("response without uid")
			}
			if !out.Response.Allowed && (!res.Reason.Denied() || out.Response.Result == nil || out.Response.Result.Message == "") {
				t.Fatalf("denial without reason or message: %+v", res)
			}
			if out.Response.Allowed && res.Reason.Denied() {
				t.Fatalf("allowed with a rejection reason %s", res.Reason)
			}
		}
	})
}

// goodAnnWith is goodAnn plus one annotation.
func goodAnnWith(k, v string) map[string]string {
	m := map[string]string{k: v}
	for a, b := range goodAnn {
		m[a] = b
	}
	return m
}

// hugeExponentRE is what hasHugeExponent looks for, as a regular expression (its oracle).
var hugeExponentRE = regexp.MustCompile(`[0-9.][eE][-+]?0*[1-9][0-9]{3,}`)

func FuzzHasHugeExponent(f *testing.F) {
	for _, s := range []string{"1e1000", "1.E-0001234", ".e+999", "e1000", "x1e1000", "1e0999", "1e00001000", "uid e5230c4a-", "9e9999e", "1ee1000", `"2E+12345"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := hasHugeExponent(b), hugeExponentRE.Match(b); got != want {
			t.Errorf("hasHugeExponent(%q) = %v, the expression says %v", b, got, want)
		}
	})
}
