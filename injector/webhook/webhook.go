// Package webhook is the thin HTTP adapter around package inject: it decodes an AdmissionReview
// v1, hands the typed Pod to inject, and answers with a JSON patch computed by diffing the
// pod's JSON before and after (package jsonpatch), or with a rejection naming what is wrong.
// Every answer carries an inject.Reason, used as the log field, the Event reason and the metric
// label.
package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/countersign/countersign/injector/inject"
	"github.com/countersign/countersign/injector/jsonpatch"
	"github.com/countersign/countersign/injector/metrics"
)

// Paths the webhook configurations call.
const (
	// PathInject is called for pods labelled countersign.dev/inject=enabled.
	PathInject = "/inject"
	// PathInjectNamespace is called for pods in namespaces labelled countersign.dev/inject=enabled.
	PathInjectNamespace = "/inject-namespace"
)

// foldIn reports whether s equals one of names under Unicode case folding.
func foldIn(s string, names ...string) bool {
	for _, n := range names {
		if strings.EqualFold(s, n) {
			return true
		}
	}
	return false
}

// hasHugeExponent is a cheap first look for a number with a decimal exponent of 1000 or more
// anywhere in the object (what the regular expression [0-9.][eE][-+]?0*[1-9][0-9]{3,}
// matches); hugeQuantity then checks whether one is where a quantity is.
func hasHugeExponent(b []byte) bool {
	for i := 1; i < len(b); i++ {
		j := bytes.IndexAny(b[i:], "eE")
		if j < 0 {
			return false
		}
		i += j
		if c := b[i-1]; !(c >= '0' && c <= '9' || c == '.') {
			continue
		}
		k := i + 1
		if k < len(b) && (b[k] == '+' || b[k] == '-') {
			k++
		}
		for k < len(b) && b[k] == '0' {
			k++
		}
		n := 0
		for k < len(b) && b[k] >= '0' && b[k] <= '9' {
			k, n = k+1, n+1
		}
		if n >= 4 {
			return true
		}
	}
	return false
}

// quantityExponentRE is a quantity value (string or number) starting with such a number,
// which makes resource.ParseQuantity spin.
var quantityExponentRE = regexp.MustCompile(`^\s*[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?0*[1-9][0-9]{3,}`)

// hugeQuantity walks the object's JSON and returns the path of a quantity with a huge
// exponent: a value under sizeLimit or divisor, or a value of a limits, requests or overhead
// map (and allocatedResources in the status). Other values (UIDs, hashes, annotations) are never decoded as quantities and may look
// like anything. Malformed JSON returns false: decoding it fails before any quantity is parsed.
func hugeQuantity(raw []byte) (string, bool) {
	type frame struct {
		obj     bool
		key     string
		wantKey bool
	}
	var stack []*frame
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	path := func() string {
		var b strings.Builder
		for _, f := range stack {
			if f.obj {
				b.WriteString("." + f.key)
			} else {
				b.WriteString("[]")
			}
		}
		return b.String()
	}
	for {
		tok, err := d.Token()
		if err != nil {
			return "", false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{', '[':
				stack = append(stack, &frame{obj: v == '{', wantKey: v == '{'})
				continue
			}
			stack = stack[:len(stack)-1]
			if len(stack) == 0 {
				return "", false
			}
			if p := stack[len(stack)-1]; p.obj {
				p.wantKey = true
			}
			continue
		case string:
			if top != nil && top.obj && top.wantKey {
				top.key, top.wantKey = v, false
				continue
			}
		}
		if top == nil {
			return "", false
		}
		var val string
		switch v := tok.(type) {
		case string:
			val = v
		case json.Number:
			val = v.String()
		}
		parent := ""
		if len(stack) > 1 && stack[len(stack)-2].obj {
			parent = stack[len(stack)-2].key
		}
		// encoding/json matches field names case-insensitively (Unicode folding), so must we.
		isQuantity := top.obj && (foldIn(top.key, "sizeLimit", "divisor") || foldIn(parent, "limits", "requests", "overhead", "allocatedResources"))
		if isQuantity && quantityExponentRE.MatchString(val) {
			return path(), true
		}
		if top.obj {
			top.wantKey = true
		}
	}
}

// MaxBodyBytes bounds an AdmissionReview (the API server caps objects at about 3 MiB).
const MaxBodyBytes = 6 << 20

// Recorder records a Kubernetes Event about a pod. It must not block.
type Recorder interface {
	Event(pod *corev1.Pod, namespace string, reason inject.Reason, message string)
}

// Handler serves admission reviews.
type Handler struct {
	Config  *inject.Config
	Log     *slog.Logger
	Metrics *metrics.Metrics
	Events  Recorder // may be nil
}

// Mux returns the handler mounted on both paths.
func (h *Handler) Mux(mux *http.ServeMux) {
	mux.HandleFunc("POST "+PathInject, func(w http.ResponseWriter, r *http.Request) { h.serve(w, r, false) })
	mux.HandleFunc("POST "+PathInjectNamespace, func(w http.ResponseWriter, r *http.Request) { h.serve(w, r, true) })
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, nsOptIn bool) {
	start := time.Now()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		h.Log.Warn("admission review unreadable", "reason", inject.ReasonBadRequest, "err", err)
		h.Metrics.Admissions.WithLabelValues(string(inject.ReasonBadRequest)).Inc()
		http.Error(w, "cannot read the request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	out, res := Review(h.Config, body, nsOptIn)
	if out == nil {
		h.Log.Warn("admission review rejected", "reason", res.Reason, "err", res.Message)
		h.Metrics.Admissions.WithLabelValues(string(res.Reason)).Inc()
		http.Error(w, res.Message, http.StatusBadRequest)
		return
	}
	b, err := json.Marshal(out)
	if err != nil {
		http.Error(w, "cannot encode the response", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
	h.Metrics.Duration.Observe(time.Since(start).Seconds())
	h.Metrics.Admissions.WithLabelValues(string(res.Reason)).Inc()
	attrs := []any{"reason", res.Reason, "namespace", res.Namespace, "pod", res.PodName, "uid", out.Response.UID}
	switch {
	case res.Reason.Denied():
		h.Log.Warn("pod rejected", append(attrs, "message", res.Message)...)
	case res.Reason == inject.ReasonInjected:
		h.Log.Info("pod injected", append(attrs, "patch_ops", res.PatchOps)...)
	default:
		h.Log.Debug("pod skipped", attrs...)
	}
	// Events for rejections and opt-outs only: an Event per injected pod would double the API
	// server's writes for every pod created (the pod itself shows the sidecar; the log line and
	// the metric count injections).
	if h.Events != nil && res.Pod != nil && !res.DryRun && (res.Reason.Denied() || res.Reason == inject.ReasonOptedOut) {
		msg := res.Message
		if msg == "" {
			msg = eventMessage(res.Reason)
		}
		h.Events.Event(res.Pod, res.Namespace, res.Reason, msg)
	}
}

func eventMessage(r inject.Reason) string {
	switch r {
	case inject.ReasonOptedOut:
		return "Countersign injection skipped: the pod opted out with " + inject.LabelInject + "=" + inject.ValueDisabled
	}
	return string(r)
}

// Result describes one review for logs, events and metrics.
type Result struct {
	Reason    inject.Reason
	Message   string
	Namespace string
	PodName   string
	Pod       *corev1.Pod // the pod as reviewed (nil if it could not be decoded)
	PatchOps  int
	DryRun    bool // no Events for dry runs (the webhook declares sideEffects NoneOnDryRun)
}

// Review answers one AdmissionReview. It returns a nil review when the body is not an
// AdmissionReview v1 at all (the caller answers 400); otherwise a review whose response
// allows (with or without a patch) or denies the pod. It does no I/O.
func Review(cfg *inject.Config, body []byte, nsOptIn bool) (*admissionv1.AdmissionReview, Result) {
	var in admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, Result{Reason: inject.ReasonBadRequest, Message: "not an AdmissionReview: " + err.Error()}
	}
	if in.APIVersion != "admission.k8s.io/v1" || in.Kind != "AdmissionReview" {
		return nil, Result{Reason: inject.ReasonBadRequest, Message: fmt.Sprintf(
			"expected apiVersion admission.k8s.io/v1 and kind AdmissionReview, got %q %q", in.APIVersion, in.Kind)}
	}
	req := in.Request
	if req == nil || req.UID == "" {
		return nil, Result{Reason: inject.ReasonBadRequest, Message: "AdmissionReview without a request or request.uid"}
	}
	out := &admissionv1.AdmissionReview{TypeMeta: in.TypeMeta, Response: &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}}
	res := Result{Namespace: req.Namespace, PodName: req.Name, DryRun: req.DryRun != nil && *req.DryRun}
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" || req.Resource.Resource != "pods" || req.SubResource != "" {
		res.Reason = inject.ReasonNotPod
		return out, res
	}
	if req.Operation != admissionv1.Create {
		res.Reason = inject.ReasonUnsupportedRequest
		return out, res
	}
	// A quantity with a huge exponent ("1e-999999999") makes resource.ParseQuantity, and so the
	// decoding of the Pod, spin for minutes. The API server never sends one (it canonicalises
	// quantities), but anyone who can reach the webhook port could (found by FuzzReview).
	if hasHugeExponent(req.Object.Raw) {
		if where, ok := hugeQuantity(req.Object.Raw); ok {
			return deny(out, res, &inject.Error{Reason: inject.ReasonBadRequest,
				Message: "request.object" + where + " is a quantity with an exponent beyond ±999, which no quantity needs"})
		}
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return deny(out, res, &inject.Error{Reason: inject.ReasonBadRequest, Message: "request.object is not a Pod: " + err.Error()})
	}
	res.Pod = &pod
	if res.PodName == "" {
		res.PodName = pod.Name
		if res.PodName == "" {
			res.PodName = pod.GenerateName
		}
	}
	if res.Namespace == "" {
		res.Namespace = pod.Namespace
	}
	ok, reason := cfg.Decide(&pod, inject.Request{Namespace: res.Namespace, NamespaceOptedIn: nsOptIn})
	res.Reason = reason
	if !ok {
		return out, res
	}
	mutated := pod.DeepCopy()
	if err := cfg.Inject(mutated); err != nil {
		return deny(out, res, err)
	}
	// Diff the typed pod's JSON before and after, so fields the pod omitted are not touched by
	// the re-encoding: both sides went through the same encoder. Only the fields that differ
	// are encoded (unchanged ones are zero on both sides and so produce no operation), which
	// keeps a review at a fraction of encoding and decoding the whole pod twice.
	before, after := changedFields(&pod, mutated)
	original, err := json.Marshal(before)
	if err != nil {
		return deny(out, res, &inject.Error{Reason: inject.ReasonBadRequest, Message: "cannot encode the pod: " + err.Error()})
	}
	modified, err := json.Marshal(after)
	if err != nil {
		return deny(out, res, &inject.Error{Reason: inject.ReasonBadRequest, Message: "cannot encode the injected pod: " + err.Error()})
	}
	ops, err := jsonpatch.Diff(original, modified)
	if err != nil {
		return deny(out, res, &inject.Error{Reason: inject.ReasonBadRequest, Message: "cannot diff the pod: " + err.Error()})
	}
	res.PatchOps = len(ops)
	if len(ops) > 0 {
		pt := admissionv1.PatchTypeJSONPatch
		out.Response.Patch, out.Response.PatchType = jsonpatch.Encode(ops), &pt
	}
	return out, res
}

// changedFields returns two pods holding only the fields where a and b differ, taken from a
// and b respectively; metadata and spec are compared field by field, the rest as a whole.
func changedFields(a, b *corev1.Pod) (*corev1.Pod, *corev1.Pod) {
	pa, pb := new(corev1.Pod), new(corev1.Pod)
	copyChanged(reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem(), reflect.ValueOf(pa).Elem(), reflect.ValueOf(pb).Elem(), 2)
	return pa, pb
}

// copyChanged copies the fields of structs a and b that differ into da and db, descending
// depth levels of nested structs.
func copyChanged(a, b, da, db reflect.Value, depth int) {
	for i := range a.NumField() {
		fa, fb := a.Field(i), b.Field(i)
		if reflect.DeepEqual(fa.Interface(), fb.Interface()) {
			continue
		}
		if depth > 1 && fa.Kind() == reflect.Struct {
			copyChanged(fa, fb, da.Field(i), db.Field(i), depth-1)
			continue
		}
		da.Field(i).Set(fa)
		db.Field(i).Set(fb)
	}
}

func deny(out *admissionv1.AdmissionReview, res Result, err error) (*admissionv1.AdmissionReview, Result) {
	e, ok := err.(*inject.Error)
	if !ok {
		e = &inject.Error{Reason: inject.ReasonBadRequest, Message: err.Error()}
	}
	res.Reason, res.Message = e.Reason, e.Message
	out.Response.Allowed = false
	out.Response.Result = &metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusBadRequest,
		Reason:  metav1.StatusReasonBadRequest,
		Message: "countersign (" + string(e.Reason) + "): " + e.Message,
	}
	return out, res
}
