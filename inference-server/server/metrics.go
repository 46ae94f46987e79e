package server

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Failure reasons: the bounded values of the "reason" label, also used in logs.
const (
	ReasonMethod      = "method_not_allowed"
	ReasonTooLarge    = "body_too_large"
	ReasonReadBody    = "read_body"
	ReasonDecode      = "bad_request"
	ReasonInvalid     = "invalid_input"
	ReasonUnknown     = "unknown_model"
	ReasonQueueFull   = "queue_full"
	ReasonCanceled    = "canceled"
	ReasonNotReady    = "not_ready"
	ReasonInternal    = "internal"
	unknownModelLabel = "_unknown"
)

type metrics struct {
	requests *prometheus.CounterVec
	failures *prometheus.CounterVec
	queue    *prometheus.HistogramVec
	compute  *prometheus.HistogramVec
	batch    *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "countersign", Subsystem: "inference", Name: "requests_total",
			Help: "Inference requests received, by model (\"_unknown\" for names not in the repository).",
		}, []string{"model"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "countersign", Subsystem: "inference", Name: "failures_total",
			Help: "Inference requests that failed, by model and reason.",
		}, []string{"model", "reason"}),
		queue: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "countersign",
			Subsystem: "inference",
			Name:      "queue_seconds",
			Help:      "Time a request waited in the dynamic batching queue.",
			Buckets:   prometheus.ExponentialBuckets(10e-6, 2, 16),
		}, []string{"model"}),
		compute: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "countersign",
			Subsystem: "inference",
			Name:      "compute_seconds",
			Help:      "Time spent in the model session per run (one run may serve a batch of requests).",
			Buckets:   prometheus.ExponentialBuckets(10e-6, 2, 18),
		}, []string{"model"}),
		batch: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "countersign",
			Subsystem: "inference",
			Name:      "batch_size",
			Help:      "Items (rows of the batch dimension) per session run.",
			Buckets:   prometheus.ExponentialBuckets(1, 2, 10),
		}, []string{"model"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.failures, m.queue, m.compute, m.batch} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
