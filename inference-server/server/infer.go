package server

import (
	"context"
	"net/http"
	"strconv"

	"github.com/countersign/countersign/inference-server/modelrepo"
	"github.com/countersign/countersign/inference-server/oip"
)

// This file is the protocol-neutral core that the REST handlers and the gRPC front end
// (inference-server/oipgrpc) share: model lookup, readiness, and one inference from decode to
// encode, with the same validation, batching, metrics and error reasons for both.

// DecodeFunc turns a request's wire form into an InferRequest, taking large tensor memory from
// bufs and bounded by lim. An error that is a *Failure is returned as it is; any other error is
// a malformed request (400, ReasonDecode).
type DecodeFunc func(bufs *oip.Buffers, lim oip.Limits) (*oip.InferRequest, error)

// EncodeFunc writes a response in its wire form. It runs while the decoded inputs are still
// valid and must not keep resp, or any slice of it, after it returns.
type EncodeFunc func(resp *oip.InferResponse) error

// Ready reports whether the server accepts inference requests (false while draining).
func (s *Server) Ready() bool { return s.ready.Load() }

// ModelNames returns the served models' names, sorted.
func (s *Server) ModelNames() []string { return append([]string(nil), s.names...) }

// Model returns the config of the named model; version "" means the one served. An unknown
// model or version is a 404 Failure.
func (s *Server) Model(name, version string) (*modelrepo.Config, *Failure) {
	m, f := s.model(name, version)
	if f != nil {
		return nil, f
	}
	return &m.cfg, nil
}

func (s *Server) model(name, version string) (*model, *Failure) {
	m, ok := s.models[name]
	if !ok {
		return nil, &Failure{http.StatusNotFound, ReasonUnknown, "model " + strconv.Quote(name) + " not found; this server serves " + quoteList(s.names)}
	}
	if version != "" && version != m.cfg.Version {
		return nil, &Failure{http.StatusNotFound, ReasonUnknown, "model " + strconv.Quote(name) + " has no version " + strconv.Quote(version) + "; it serves version " + strconv.Quote(m.cfg.Version)}
	}
	return m, nil
}

func quoteList(names []string) string {
	b := make([]byte, 0, 64)
	for i, n := range names {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = strconv.AppendQuote(b, n)
	}
	return string(b)
}

// Infer runs one inference request for model name (version "" means the one served): it counts
// the request, checks the model and readiness, decodes with decode, validates the inputs against
// the model's config, runs the model (through the batcher when the model batches), shapes the
// response and hands it to encode. On failure it counts and logs the reason and returns it.
func (s *Server) Infer(ctx context.Context, name, version string, decode DecodeFunc, encode EncodeFunc) *Failure {
	m, known := s.models[name]
	label := name
	if known {
		m.requests.Inc()
	} else {
		label = unknownModelLabel
		s.metrics.requests.WithLabelValues(label).Inc()
	}
	m, f := s.model(name, version)
	if f != nil {
		s.count(label, f)
		return f
	}
	if !s.ready.Load() {
		f := &Failure{http.StatusServiceUnavailable, ReasonNotReady, "server is shutting down"}
		s.count(label, f)
		return f
	}
	bufs := s.decPool.Get().(*oip.Buffers)
	resp, f, inputsFree := s.handleInfer(ctx, m, decode, bufs)
	if f == nil {
		if err := encode(resp); err != nil {
			f = &Failure{http.StatusInternalServerError, ReasonInternal, "encoding the response: " + err.Error()}
		}
	}
	s.releaseInputs(bufs, inputsFree) // the response is encoded: nothing refers to the inputs now
	if f != nil {
		s.count(label, f)
	}
	return f
}

// count records a failure in the metrics and the log.
func (s *Server) count(model string, e *Failure) {
	s.metrics.failures.WithLabelValues(model, e.Reason).Inc()
	if e.Status >= 500 {
		s.log.Warn("inference failed", "model", model, "reason", e.Reason, "error", e.Msg)
	} else {
		s.log.Debug("inference rejected", "model", model, "reason", e.Reason, "error", e.Msg)
	}
}
