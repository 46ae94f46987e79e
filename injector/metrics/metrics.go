// Package metrics holds the injector's Prometheus metrics on an explicit registry. The only
// free-form label is the reason, and its values are the inject.Reason constants.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/countersign/countersign/injector/inject"
)

// Metrics are the injector's metrics.
type Metrics struct {
	Registry      *prometheus.Registry
	Admissions    *prometheus.CounterVec // reason
	Duration      prometheus.Histogram
	CertNotAfter  prometheus.Gauge
	Rotations     *prometheus.CounterVec // step: staged | promoted | reissued | error
	CABundle      prometheus.Counter
	EventsDropped prometheus.Counter
	XDSNacks      *prometheus.CounterVec // type: XDSTypes
	XDSSnapshots  prometheus.Counter
}

// XDSTypes are the values of the type label of XDSNacks (resource types; "other" for any
// other type URL a proxy names).
var XDSTypes = []string{"Cluster", "ClusterLoadAssignment", "Listener", "RouteConfiguration", "other"}

// New registers the metrics (and the Go and process collectors) on a new registry.
func New() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		Admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "countersign_injector_admissions_total", Help: "Pod admission reviews answered, by reason (injected, a skip or a rejection).",
		}, []string{"reason"}),
		Duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "countersign_injector_admission_duration_seconds", Help: "Time to answer one admission review, from body read to response written.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1},
		}),
		CertNotAfter: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "countersign_injector_serving_cert_not_after_seconds", Help: "Expiry of the webhook serving certificate in use (Unix time).",
		}),
		Rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "countersign_injector_cert_rotations_total", Help: "Webhook certificate rotation steps, by step (staged, promoted, reissued, error).",
		}, []string{"step"}),
		CABundle: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "countersign_injector_cabundle_updates_total", Help: "Updates of the MutatingWebhookConfiguration caBundle.",
		}),
		EventsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "countersign_injector_events_dropped_total", Help: "Kubernetes Events not written because the queue was full.",
		}),
		XDSNacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "countersign_injector_xds_nacks_total", Help: "Control plane responses rejected by proxies (NACK), by resource type.",
		}, []string{"type"}),
		XDSSnapshots: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "countersign_injector_xds_snapshots_total", Help: "Control plane snapshots cut (a changed translation of the cluster state).",
		}),
	}
	r.MustRegister(m.Admissions, m.Duration, m.CertNotAfter, m.Rotations, m.CABundle, m.EventsDropped, m.XDSNacks, m.XDSSnapshots,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, reason := range inject.Reasons {
		m.Admissions.WithLabelValues(string(reason))
	}
	for _, t := range XDSTypes {
		m.XDSNacks.WithLabelValues(t)
	}
	for _, s := range []string{"staged", "promoted", "reissued", "error"} {
		m.Rotations.WithLabelValues(s)
	}
	return m
}
