package inject

// Reason is why a pod was injected, skipped or rejected. The values are the bounded label of the
// injector's metrics, the reason of its Kubernetes Events and the "reason" field of its logs.
type Reason string

// Outcomes.
const (
	// Injected: the proxy sidecar was added (or refreshed, when already present).
	ReasonInjected Reason = "injected"
	// Skips: the pod is admitted unchanged.
	ReasonNotOptedIn         Reason = "not_opted_in"
	ReasonOptedOut           Reason = "opted_out"
	ReasonExcludedNamespace  Reason = "excluded_namespace"
	ReasonNotPod             Reason = "not_a_pod"
	ReasonUnsupportedRequest Reason = "unsupported_operation"
	// Rejections: the pod is refused with a message.
	ReasonInvalidAnnotation Reason = "invalid_annotation"
	ReasonInvalidConfig     Reason = "invalid_proxy_config"
	ReasonPortConflict      Reason = "port_conflict"
	ReasonHostNetwork       Reason = "host_network"
	ReasonBadRequest        Reason = "bad_request"
)

// Reasons lists every reason, so metrics can be initialised with all label values.
var Reasons = []Reason{
	ReasonInjected, ReasonNotOptedIn, ReasonOptedOut, ReasonExcludedNamespace, ReasonNotPod,
	ReasonUnsupportedRequest, ReasonInvalidAnnotation, ReasonInvalidConfig, ReasonPortConflict,
	ReasonHostNetwork, ReasonBadRequest,
}

// Denied reports whether the reason refuses the pod.
func (r Reason) Denied() bool {
	switch r {
	case ReasonInvalidAnnotation, ReasonInvalidConfig, ReasonPortConflict, ReasonHostNetwork, ReasonBadRequest:
		return true
	}
	return false
}

// Error is a rejection: a reason and a sentence for the pod's author. A rejected annotation
// also names the annotation and its value (the sentence says what is allowed).
type Error struct {
	Reason     Reason
	Message    string
	Annotation string // "" when no single annotation is at fault
	Value      string
}

func (e *Error) Error() string { return e.Message }
