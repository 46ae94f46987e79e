// Package metrics holds the proxy's Prometheus metrics on an explicit registry. Labels are
// bounded: listener names come from the configuration, reasons from attestation.Code constants.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/countersign/countersign/attestation"
)

// Metrics are the proxy's metrics.
type Metrics struct {
	Registry    *prometheus.Registry
	Rejections  *prometheus.CounterVec // listener, reason
	Requests    *prometheus.CounterVec // listener, class (2xx..5xx)
	Connections *prometheus.GaugeVec   // listener
	Refreshes   *prometheus.CounterVec // result: ok | error
	Ready       prometheus.Gauge
	// HeaderVariants counts headers dropped because their name normalises to a Countersign-
	// name they are not spelled as (listener; direction: request, response, interim, trailer).
	HeaderVariants *prometheus.CounterVec
}

// New registers the metrics (and the Go and process collectors) on a new registry.
func New() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		Rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "countersign_rejections_total", Help: "Peers, chains and requests refused, by listener and reason code.",
		}, []string{"listener", "reason"}),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "countersign_http_requests_total", Help: "HTTP requests proxied, by listener and status class.",
		}, []string{"listener", "class"}),
		Connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "countersign_open_connections", Help: "Open connections, by listener.",
		}, []string{"listener"}),
		Refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "countersign_identity_refreshes_total", Help: "Attested identity refresh attempts, by result.",
		}, []string{"result"}),
		Ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "countersign_ready", Help: "1 when a valid attested identity is loaded.",
		}),
		HeaderVariants: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "countersign_header_variants_dropped_total", Help: "Headers dropped because their name normalises (case, '_' and other separators as '-') to a Countersign- header, by listener and direction.",
		}, []string{"listener", "direction"}),
	}
	r.MustRegister(m.Rejections, m.Requests, m.Connections, m.Refreshes, m.Ready, m.HeaderVariants,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Reject counts a rejection.
func (m *Metrics) Reject(listener string, code attestation.Code) {
	if m == nil {
		return
	}
	m.Rejections.WithLabelValues(listener, string(code)).Inc()
}

// Request counts one HTTP request answered on listener with status (class 2xx, 4xx, ...; none
// when the connection ended before any status was written).
func (m *Metrics) Request(listener string, status int) {
	if m == nil {
		return
	}
	class := "none"
	if status >= 100 && status < 600 {
		class = string(rune('0'+status/100)) + "xx"
	}
	m.Requests.WithLabelValues(listener, class).Inc()
}

// HeaderVariantsDropped counts n headers dropped for their Countersign- spelling.
func (m *Metrics) HeaderVariantsDropped(listener, direction string, n int) {
	if m == nil {
		return
	}
	m.HeaderVariants.WithLabelValues(listener, direction).Add(float64(n))
}

// Refreshed counts a refresh attempt.
func (m *Metrics) Refreshed(err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.Refreshes.WithLabelValues("error").Inc()
	} else {
		m.Refreshes.WithLabelValues("ok").Inc()
	}
}
