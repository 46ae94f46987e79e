// Package server is the Open Inference Protocol v2 REST front end of the inference server:
// health, server and model metadata, readiness and inference over JSON tensors, with optional
// dynamic batching and Prometheus metrics. Models run behind the Session interface, so this
// package does not depend on ONNX Runtime.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/countersign/countersign/inference-server/modelrepo"
	"github.com/countersign/countersign/inference-server/oip"
	"github.com/countersign/countersign/internal/version"
)

// Session runs one loaded model; it is the trust boundary between the HTTP layer and the model
// runtime. Run receives one tensor per model input, in the config's input order, whose shapes
// the server has already checked against the config, and returns one tensor per model output, in
// the config's output order. Implementations must be safe for concurrent use.
type Session interface {
	Run(ctx context.Context, inputs []oip.Tensor) ([]oip.Tensor, error)
}

// Model is a model to serve: its verified config and digest, and a session.
type Model struct {
	Config  modelrepo.Config // Config.SHA256 is the digest of the bytes the session runs
	Session Session
}

// Options configure a Server.
type Options struct {
	Models       []Model
	Logger       *slog.Logger
	Registry     *prometheus.Registry // metrics are registered here and served at /metrics
	MaxBodyBytes int64
	Limits       oip.Limits
	Batch        BatchConfig
}

// Server serves the protocol. Create it with New; it is an http.Handler.
type Server struct {
	log      *slog.Logger
	models   map[string]*model
	names    []string
	maxBody  int64
	limits   oip.Limits
	metrics  *metrics
	ready    atomic.Bool
	mux      *http.ServeMux
	bufPool  sync.Pool // *[]byte: request bodies, then the response written over them
	decPool  sync.Pool // *oip.Buffers: decoded FP32 tensor data
	batchers []*batcher
}

type model struct {
	cfg       modelrepo.Config
	session   Session
	inputIdx  map[string]int
	outputIdx map[string]int
	batcher   *batcher
	metadata  []byte // JSON, precomputed
	requests  prometheus.Counter
	queueHist prometheus.Observer
	compHist  prometheus.Observer
	batchHist prometheus.Observer
	failures  *prometheus.CounterVec
}

// New builds a server for the given models. It starts the batching workers of models that batch;
// call Close after the HTTP server has shut down.
func New(o Options) (*Server, error) {
	if len(o.Models) == 0 {
		return nil, errors.New("server: no models")
	}
	if o.Logger == nil {
		return nil, errors.New("server: Logger is required")
	}
	if o.Registry == nil {
		return nil, errors.New("server: Registry is required")
	}
	if o.MaxBodyBytes <= 0 {
		return nil, errors.New("server: MaxBodyBytes must be positive")
	}
	if o.Limits == (oip.Limits{}) {
		o.Limits = oip.DefaultLimits
	}
	met, err := newMetrics(o.Registry)
	if err != nil {
		return nil, fmt.Errorf("server: metrics: %w", err)
	}
	s := &Server{
		log:     o.Logger,
		models:  map[string]*model{},
		maxBody: o.MaxBodyBytes,
		limits:  o.Limits,
		metrics: met,
	}
	for _, mm := range o.Models {
		if err := mm.Config.Validate(); err != nil {
			return nil, fmt.Errorf("server: model %q: %w", mm.Config.Name, err)
		}
		if _, dup := s.models[mm.Config.Name]; dup {
			return nil, fmt.Errorf("server: model %q given twice", mm.Config.Name)
		}
		m := &model{
			cfg:       mm.Config,
			session:   mm.Session,
			inputIdx:  map[string]int{},
			outputIdx: map[string]int{},
			requests:  met.requests.WithLabelValues(mm.Config.Name),
			queueHist: met.queue.WithLabelValues(mm.Config.Name),
			compHist:  met.compute.WithLabelValues(mm.Config.Name),
			batchHist: met.batch.WithLabelValues(mm.Config.Name),
			failures:  met.failures,
		}
		for i, t := range m.cfg.Inputs {
			m.inputIdx[t.Name] = i
		}
		for i, t := range m.cfg.Outputs {
			m.outputIdx[t.Name] = i
		}
		m.metadata, err = json.Marshal(metadataOf(&m.cfg))
		if err != nil {
			return nil, err
		}
		if m.cfg.MaxBatchSize > 0 && o.Batch.MaxSize > 1 {
			cfg := o.Batch
			cfg.MaxSize = min(cfg.MaxSize, m.cfg.MaxBatchSize)
			if cfg.QueueSize <= 0 {
				return nil, errors.New("server: Batch.QueueSize must be positive when batching")
			}
			m.batcher = newBatcher(m, cfg)
			s.batchers = append(s.batchers, m.batcher)
		}
		s.models[m.cfg.Name] = m
		s.names = append(s.names, m.cfg.Name)
	}
	slices.Sort(s.names)
	s.bufPool.New = func() any { b := make([]byte, 0, 64<<10); return &b }
	s.decPool.New = func() any { return new(oip.Buffers) }
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("/v2/health/live", s.method(http.MethodGet, s.live))
	s.mux.HandleFunc("/v2/health/ready", s.method(http.MethodGet, s.readyz))
	s.mux.HandleFunc("/v2", s.method(http.MethodGet, s.serverMetadata))
	s.mux.HandleFunc("/v2/models/{name}", s.method(http.MethodGet, s.modelMetadata))
	s.mux.HandleFunc("/v2/models/{name}/versions/{version}", s.method(http.MethodGet, s.modelMetadata))
	s.mux.HandleFunc("/v2/models/{name}/ready", s.method(http.MethodGet, s.modelReady))
	s.mux.HandleFunc("/v2/models/{name}/versions/{version}/ready", s.method(http.MethodGet, s.modelReady))
	s.mux.HandleFunc("/v2/models/{name}/infer", s.infer)
	s.mux.HandleFunc("/v2/models/{name}/versions/{version}/infer", s.infer)
	s.mux.Handle("/metrics", promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{Registry: o.Registry}))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.URL.Path)
	})
	s.ready.Store(true)
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// SetReady sets what /v2/health/ready answers; set it false when draining before shutdown.
func (s *Server) SetReady(ready bool) { s.ready.Store(ready) }

// Close stops the batching workers after they finish queued work. Call it after the HTTP server
// has shut down (no more requests can arrive).
func (s *Server) Close() {
	for _, b := range s.batchers {
		b.close()
	}
}

// ModelDigests returns model name → SHA-256 (lowercase hex) of every served model: the value
// the proxy puts into the enclave's runtime data, so a token names the models it serves.
func (s *Server) ModelDigests() map[string]string {
	out := make(map[string]string, len(s.models))
	for n, m := range s.models {
		out[n] = m.cfg.SHA256
	}
	return out
}

func (s *Server) method(m string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != m && !(m == http.MethodGet && r.Method == http.MethodHead) {
			w.Header().Set("Allow", m)
			writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed; use "+m)
			return
		}
		h(w, r)
	}
}

func (s *Server) live(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]bool{"live": true})
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if !s.ready.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]bool{"ready": false})
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ready": true})
}

// Name is the server name the metadata endpoints give.
const Name = "countersign-inference-server"

// Extensions this server implements, listed in the server metadata.
var Extensions = []string{"classification", "model_sha256"}

func (s *Server) serverMetadata(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"name": Name, "version": version.Version, "extensions": Extensions,
		"models": s.names,
	})
}

type tensorMeta struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

type modelMeta struct {
	Name     string       `json:"name"`
	Versions []string     `json:"versions"`
	Platform string       `json:"platform"`
	Inputs   []tensorMeta `json:"inputs"`
	Outputs  []tensorMeta `json:"outputs"`
	// SHA256 of the model file (extension "model_sha256").
	SHA256 string `json:"sha256"`
	// Labels per output that has them (extension; used by classification).
	Labels map[string][]string `json:"labels,omitempty"`
}

func metadataOf(c *modelrepo.Config) modelMeta {
	m := modelMeta{Name: c.Name, Versions: []string{c.Version}, Platform: c.Platform, SHA256: c.SHA256}
	for _, t := range c.Inputs {
		m.Inputs = append(m.Inputs, tensorMeta{t.Name, t.Datatype, t.Shape})
	}
	for _, t := range c.Outputs {
		m.Outputs = append(m.Outputs, tensorMeta{t.Name, t.Datatype, t.Shape})
		if len(t.Labels) > 0 {
			if m.Labels == nil {
				m.Labels = map[string][]string{}
			}
			m.Labels[t.Name] = t.Labels
		}
	}
	return m
}

// lookup resolves {name} and the optional {version}; it writes the 404 itself.
func (s *Server) lookup(w http.ResponseWriter, r *http.Request) *model {
	m, f := s.model(r.PathValue("name"), r.PathValue("version"))
	if f != nil {
		writeError(w, f.Status, f.Msg)
		return nil
	}
	return m
}

func (s *Server) modelMetadata(w http.ResponseWriter, r *http.Request) {
	m := s.lookup(w, r)
	if m == nil {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(m.metadata)
}

func (s *Server) modelReady(w http.ResponseWriter, r *http.Request) {
	m := s.lookup(w, r)
	if m == nil {
		return
	}
	if !s.ready.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"name": m.cfg.Name, "ready": false})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"name": m.cfg.Name, "ready": true})
}

// Failure is an inference that did not succeed: its HTTP status, its metric reason (one of the
// Reason constants) and a message safe to return to the client. Errors map to status codes here;
// the gRPC front end maps these statuses to gRPC codes.
type Failure struct {
	Status int
	Reason string
	Msg    string
}

func (f *Failure) Error() string { return f.Msg }

func (s *Server) fail(w http.ResponseWriter, model string, e Failure) {
	s.count(model, &e)
	writeError(w, e.Status, e.Msg)
}

func (s *Server) infer(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		name := r.PathValue("name")
		label := name
		if m, known := s.models[name]; known {
			m.requests.Inc()
		} else {
			label = unknownModelLabel
			s.metrics.requests.WithLabelValues(label).Inc()
		}
		w.Header().Set("Allow", http.MethodPost)
		s.fail(w, label, Failure{http.StatusMethodNotAllowed, ReasonMethod, "method " + r.Method + " not allowed; use POST"})
		return
	}
	bp := s.bufPool.Get().(*[]byte)
	defer s.bufPool.Put(bp)
	decode := func(bufs *oip.Buffers, lim oip.Limits) (*oip.InferRequest, error) {
		body, herr := s.readBody(w, r, (*bp)[:0])
		*bp = body[:0]
		if herr != nil {
			return nil, herr
		}
		if v := r.Header.Get(oip.HeaderContentLength); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > len(body) {
				return nil, &Failure{http.StatusBadRequest, ReasonDecode, fmt.Sprintf("%s: %q is not a byte count within the %d-byte body", oip.HeaderContentLength, v, len(body))}
			}
			return bufs.DecodeInferRequestBinary(body, n, lim)
		}
		return bufs.DecodeInferRequest(body, lim)
	}
	var out []byte
	var outJSON int
	encode := func(resp *oip.InferResponse) error {
		out, outJSON = oip.AppendInferResponse((*bp)[:0], resp)
		*bp = out[:0]
		return nil
	}
	if f := s.Infer(r.Context(), r.PathValue("name"), r.PathValue("version"), decode, encode); f != nil {
		writeError(w, f.Status, f.Msg)
		return
	}
	h := w.Header()
	if outJSON != len(out) {
		h.Set("Content-Type", "application/octet-stream")
		h.Set(oip.HeaderContentLength, strconv.Itoa(outJSON))
	} else {
		h.Set("Content-Type", "application/json")
	}
	h.Set("Content-Length", strconv.Itoa(len(out)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}

// readBody reads the request body into buf, enforcing the size limit.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, buf []byte) ([]byte, *Failure) {
	tooLarge := &Failure{http.StatusRequestEntityTooLarge, ReasonTooLarge, fmt.Sprintf("request body larger than %d bytes", s.maxBody)}
	if r.ContentLength > s.maxBody {
		return buf, tooLarge
	}
	if r.ContentLength > 0 && int64(cap(buf)) < r.ContentLength {
		buf = make([]byte, 0, r.ContentLength)
	}
	rd := http.MaxBytesReader(w, r.Body, s.maxBody)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return buf, tooLarge
			}
			return buf, &Failure{http.StatusBadRequest, ReasonReadBody, "reading the request body: " + err.Error()}
		}
	}
}

// releaseInputs returns the memory of a request's decoded tensors to the pool, unless a batching
// worker may still read it (the request left the queue early because its client went away).
func (s *Server) releaseInputs(bufs *oip.Buffers, free bool) {
	if free {
		bufs.Reset()
		s.decPool.Put(bufs)
	}
}

// handleInfer decodes, runs and shapes the answer. Decoded tensor data lives in bufs;
// inputsFree reports whether nothing but the response can still refer to it.
func (s *Server) handleInfer(ctx context.Context, m *model, decode DecodeFunc, bufs *oip.Buffers) (resp *oip.InferResponse, herr *Failure, inputsFree bool) {
	req, err := decode(bufs, s.limits)
	if err != nil {
		var f *Failure
		if errors.As(err, &f) {
			return nil, f, true
		}
		return nil, &Failure{http.StatusBadRequest, ReasonDecode, err.Error()}, true
	}
	inputs, rows, err := m.checkInputs(req.Inputs)
	if err != nil {
		return nil, &Failure{http.StatusBadRequest, ReasonInvalid, err.Error()}, true
	}
	if err := m.checkOutputs(req.Outputs); err != nil {
		return nil, &Failure{http.StatusBadRequest, ReasonInvalid, err.Error()}, true
	}
	var outs []oip.Tensor
	inputsFree = true
	if m.batcher != nil {
		outs, inputsFree, err = m.batcher.submit(ctx, inputs, rows)
	} else {
		outs, err = m.run(ctx, inputs, rows)
	}
	resp, herr = m.respond(req, outs, err)
	return resp, herr, inputsFree
}

// respond maps a run's error to a status, or shapes its outputs into the response.
func (m *model) respond(req *oip.InferRequest, outs []oip.Tensor, err error) (*oip.InferResponse, *Failure) {
	switch {
	case err == nil:
	case errors.Is(err, ErrQueueFull):
		return nil, &Failure{http.StatusServiceUnavailable, ReasonQueueFull, "server busy: the batching queue is full, retry later"}
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return nil, &Failure{http.StatusServiceUnavailable, ReasonCanceled, "request canceled: " + err.Error()}
	default:
		var pe *oip.Error
		if errors.As(err, &pe) {
			return nil, &Failure{http.StatusBadRequest, ReasonInvalid, pe.Msg}
		}
		return nil, &Failure{http.StatusInternalServerError, ReasonInternal, "model run failed: " + err.Error()}
	}
	resp := &oip.InferResponse{ModelName: m.cfg.Name, ModelVersion: m.cfg.Version, ID: req.ID}
	if len(req.Outputs) == 0 {
		resp.Outputs = outs
		if req.BinaryOutput {
			resp.Binary = make([]bool, len(outs))
			for i := range outs {
				resp.Binary[i] = true
				if !oip.CanAppendBinary(&outs[i]) {
					return nil, &Failure{http.StatusBadRequest, ReasonInvalid, fmt.Sprintf("output %q: %s data cannot be sent as binary; ask for JSON", outs[i].Name, outs[i].Datatype)}
				}
			}
		}
		return resp, nil
	}
	resp.Outputs = make([]oip.Tensor, 0, len(req.Outputs))
	for _, ro := range req.Outputs {
		binary := ro.Binary || req.BinaryOutput
		idx := m.outputIdx[ro.Name]
		t := outs[idx]
		if ro.Classification > 0 {
			c, err := classify(t, ro.Classification, m.cfg.Outputs[idx].Labels)
			if err != nil {
				return nil, &Failure{http.StatusBadRequest, ReasonInvalid, err.Error()}
			}
			t = c
		}
		if binary && !oip.CanAppendBinary(&t) {
			return nil, &Failure{http.StatusBadRequest, ReasonInvalid, fmt.Sprintf("output %q: %s data cannot be sent as binary; ask for JSON", t.Name, t.Datatype)}
		}
		resp.Outputs = append(resp.Outputs, t)
		resp.Binary = append(resp.Binary, binary)
	}
	return resp, nil
}

// run calls the session once and checks what it returns.
func (m *model) run(ctx context.Context, inputs []oip.Tensor, rows int) ([]oip.Tensor, error) {
	start := time.Now()
	outs, err := m.session.Run(ctx, inputs)
	m.compHist.Observe(time.Since(start).Seconds())
	m.batchHist.Observe(float64(rows))
	if err != nil {
		return nil, err
	}
	if len(outs) != len(m.cfg.Outputs) {
		return nil, fmt.Errorf("session returned %d outputs, config has %d", len(outs), len(m.cfg.Outputs))
	}
	for i := range outs {
		outs[i].Name = m.cfg.Outputs[i].Name
		if n := outs[i].Len(); n < 0 || int64(n) != elements(outs[i].Shape) {
			return nil, fmt.Errorf("session output %q: %d elements for shape %v", outs[i].Name, n, outs[i].Shape)
		}
	}
	return outs, nil
}

func elements(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

// checkInputs matches request inputs to the model's inputs and returns them in model order, with
// the batch size (rows of dimension 0; 1 for models without batching).
func (m *model) checkInputs(in []oip.Tensor) ([]oip.Tensor, int, error) {
	out := make([]oip.Tensor, len(m.cfg.Inputs))
	seen := make([]bool, len(m.cfg.Inputs))
	rows := -1
	for _, t := range in {
		idx, ok := m.inputIdx[t.Name]
		if !ok {
			return nil, 0, fmt.Errorf("model %q has no input %q", m.cfg.Name, t.Name)
		}
		if seen[idx] {
			return nil, 0, fmt.Errorf("input %q given twice", t.Name)
		}
		seen[idx] = true
		spec := &m.cfg.Inputs[idx]
		if t.Datatype != spec.Datatype {
			return nil, 0, fmt.Errorf("input %q: datatype %s, model expects %s", t.Name, t.Datatype, spec.Datatype)
		}
		if len(t.Shape) != len(spec.Shape) {
			return nil, 0, fmt.Errorf("input %q: shape %v has %d dimensions, model expects %d (%v)", t.Name, t.Shape, len(t.Shape), len(spec.Shape), spec.Shape)
		}
		for i, d := range t.Shape {
			want := spec.Shape[i]
			if want == -1 {
				if d < 1 {
					return nil, 0, fmt.Errorf("input %q: dimension %d is %d, must be at least 1", t.Name, i, d)
				}
				continue
			}
			if d != want {
				return nil, 0, fmt.Errorf("input %q: shape %v does not match the model's %v (dimension %d)", t.Name, t.Shape, spec.Shape, i)
			}
		}
		if m.cfg.MaxBatchSize > 0 {
			b := int(t.Shape[0])
			if b > m.cfg.MaxBatchSize {
				return nil, 0, fmt.Errorf("input %q: batch of %d exceeds the model's max_batch_size %d", t.Name, b, m.cfg.MaxBatchSize)
			}
			if rows >= 0 && rows != b {
				return nil, 0, fmt.Errorf("input %q: batch dimension %d differs from other inputs' %d", t.Name, b, rows)
			}
			rows = b
		}
		if t.NonFinite && !spec.AllowNonFinite {
			return nil, 0, fmt.Errorf("input %q: NaN or infinite values are not allowed", t.Name)
		}
		out[idx] = t
	}
	for i, ok := range seen {
		if !ok {
			return nil, 0, fmt.Errorf("missing input %q", m.cfg.Inputs[i].Name)
		}
	}
	if rows < 0 {
		rows = 1
	}
	return out, rows, nil
}

func (m *model) checkOutputs(req []oip.RequestedOutput) error {
	seen := map[string]bool{}
	for _, o := range req {
		idx, ok := m.outputIdx[o.Name]
		if !ok {
			return fmt.Errorf("model %q has no output %q", m.cfg.Name, o.Name)
		}
		if seen[o.Name] {
			return fmt.Errorf("output %q requested twice", o.Name)
		}
		seen[o.Name] = true
		if o.Classification > 0 && m.cfg.Outputs[idx].Datatype == oip.BYTES {
			return fmt.Errorf("output %q: classification needs a numeric output", o.Name)
		}
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, oip.AppendError(nil, "encoding response: "+err.Error())
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(oip.AppendError(nil, msg))
}
