// Package api is the records API's HTTP layer: patients, records and scan uploads as JSON
// over plain HTTP, the portal's static files, and error mapping in one place.
package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/sample-apps/records/inference"
	"github.com/countersign/countersign/sample-apps/records/scan"
	"github.com/countersign/countersign/sample-apps/records/store"
)

// Limits.
const (
	MaxJSONBody = 64 << 10
	MaxScanBody = 8 << 20
	MaxKeyLen   = 128
)

// Options configure the handler.
type Options struct {
	Store     store.Store
	Inference inference.Client
	Logger    *slog.Logger
	Registry  *prometheus.Registry
	// PortalDir is served at / when set; PortalConfig (a file) is served at /config.json.
	PortalDir    string
	PortalConfig string
	Now          func() time.Time
}

// API is the handler.
type API struct {
	o       Options
	mux     *http.ServeMux
	reqs    *prometheus.CounterVec
	dur     *prometheus.HistogramVec
	infer   *prometheus.CounterVec
	replays *prometheus.CounterVec
}

// New returns the handler.
func New(o Options) *API {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	a := &API{o: o, mux: http.NewServeMux()}
	a.reqs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "records_http_requests_total", Help: "HTTP requests by route and status code."}, []string{"route", "code"})
	a.dur = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "records_http_request_duration_seconds", Help: "HTTP request latency by route.", Buckets: prometheus.DefBuckets}, []string{"route"})
	a.infer = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "records_inference_calls_total", Help: "Inference calls by outcome (ok, error, no_receipt)."}, []string{"outcome"})
	a.replays = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "records_idempotent_replays_total", Help: "Creates answered from an earlier request with the same Idempotency-Key."}, []string{"kind"})
	o.Registry.MustRegister(a.reqs, a.dur, a.infer, a.replays)

	a.route("POST /api/patients", a.createPatient)
	a.route("GET /api/patients", a.listPatients)
	a.route("GET /api/patients/{id}", a.getPatient)
	a.route("PUT /api/patients/{id}", a.updatePatient)
	a.route("POST /api/patients/{id}/records", a.createNote)
	a.route("GET /api/patients/{id}/records", a.listRecords)
	a.route("POST /api/patients/{id}/scans", a.uploadScan)
	a.route("GET /api/records/{id}", a.getRecord)
	a.route("PUT /api/records/{id}", a.updateRecord)
	a.mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path, nil)
	})
	if o.PortalConfig != "" {
		a.mux.HandleFunc("GET /config.json", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "no-store")
			http.ServeFile(w, r, o.PortalConfig)
		})
	}
	if o.PortalDir != "" {
		fs := http.FileServer(http.Dir(o.PortalDir))
		a.mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				w.Header().Set("Allow", "GET, HEAD")
				writeErr(w, http.StatusMethodNotAllowed, "the portal's files are read-only: "+r.Method+" "+r.URL.Path, nil)
				return
			}
			h := w.Header()
			h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data: blob:; connect-src 'self' http: https:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("Referrer-Policy", "no-referrer")
			fs.ServeHTTP(w, r)
		}))
	}
	return a
}

func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(c int) {
	if s.code == 0 {
		s.code = c
	}
	s.ResponseWriter.WriteHeader(c)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (a *API) route(pattern string, h http.HandlerFunc) {
	a.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h(sw, r)
		a.reqs.WithLabelValues(pattern, strconv.Itoa(sw.code)).Inc()
		a.dur.WithLabelValues(pattern).Observe(time.Since(start).Seconds())
		lvl := slog.LevelDebug
		if sw.code >= 500 {
			lvl = slog.LevelWarn
		}
		a.o.Logger.Log(r.Context(), lvl, "request", "route", pattern, "path", r.URL.Path, "status", sw.code, "duration", time.Since(start))
	})
}

// errorBody is every error response.
type errorBody struct {
	Error  string            `json:"error"`
	Fields map[string]string `json:"fields,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, status int, msg string, fields map[string]string) {
	writeJSON(w, status, errorBody{Error: msg, Fields: fields})
}

// fail maps an error to a status code: the one place that does.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ve validationError
	var ie *inference.Error
	switch {
	case errors.As(err, &ve):
		writeErr(w, http.StatusUnprocessableEntity, "validation failed", ve)
	case errors.Is(err, errBadRequest):
		writeErr(w, http.StatusBadRequest, strings.TrimPrefix(err.Error(), errBadRequest.Error()+": "), nil)
	case errors.Is(err, errTooLarge):
		writeErr(w, http.StatusRequestEntityTooLarge, err.Error(), nil)
	case errors.Is(err, errUnsupported):
		writeErr(w, http.StatusUnsupportedMediaType, err.Error(), nil)
	case errors.Is(err, scan.ErrInvalid):
		writeErr(w, http.StatusUnprocessableEntity, err.Error(), nil)
	case errors.Is(err, store.ErrPatientNotFound):
		writeErr(w, http.StatusNotFound, "patient "+r.PathValue("id")+" not found", nil)
	case errors.Is(err, store.ErrNotFound):
		writeErr(w, http.StatusNotFound, "not found: "+r.URL.Path, nil)
	case errors.Is(err, store.ErrVersionConflict):
		writeErr(w, http.StatusConflict, err.Error()+"; read it again and reapply your change", nil)
	case errors.Is(err, store.ErrIdempotencyConflict):
		writeErr(w, http.StatusUnprocessableEntity, "Idempotency-Key was already used for a different request; use a new key for a new request", nil)
	case errors.As(err, &ie):
		writeErr(w, http.StatusBadGateway, "diagnosis failed: "+ie.Error(), nil)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		writeErr(w, http.StatusServiceUnavailable, "timed out: "+err.Error(), nil)
	default:
		a.o.Logger.Error("request failed", "path", r.URL.Path, "err", err)
		writeErr(w, http.StatusServiceUnavailable, "storage unavailable, retry with the same Idempotency-Key: "+err.Error(), nil)
	}
}

var (
	errBadRequest  = errors.New("bad request")
	errTooLarge    = errors.New("request body too large")
	errUnsupported = errors.New("unsupported media type")
)

// validationError maps field names to what is wrong with them.
type validationError map[string]string

func (v validationError) Error() string {
	var b strings.Builder
	for k, m := range v {
		fmt.Fprintf(&b, "%s: %s; ", k, m)
	}
	return strings.TrimSuffix(b.String(), "; ")
}

// readBody reads at most max bytes.
func readBody(w http.ResponseWriter, r *http.Request, max int64) ([]byte, error) {
	if r.ContentLength > max {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", errTooLarge, r.ContentLength, max)
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, fmt.Errorf("%w: at most %d bytes", errTooLarge, max)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: reading the body: %v", errBadRequest, err)
	}
	return b, nil
}

func decodeJSON(w http.ResponseWriter, r *http.Request, v any) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return nil, fmt.Errorf("%w: Content-Type %q, expected application/json", errUnsupported, ct)
		}
	}
	b, err := readBody(w, r, MaxJSONBody)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return nil, fmt.Errorf("%w: body is not the expected JSON object: %v", errBadRequest, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", errBadRequest)
	}
	return b, nil
}

var keyRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// idempotency derives the store's idempotency from the request: the client's key (or a fresh
// one) and a hash of scope and content.
func idempotency(r *http.Request, scope string, content []byte) (store.Idempotency, error) {
	h := sha256.New()
	h.Write([]byte(scope + "\n" + r.URL.Path + "\n"))
	h.Write(content)
	hash := hex.EncodeToString(h.Sum(nil))
	key := r.Header.Get("Idempotency-Key")
	if key == "" {
		return store.Idempotency{Key: "auto-" + newID(""), RequestHash: hash}, nil
	}
	if !keyRE.MatchString(key) {
		return store.Idempotency{}, fmt.Errorf("%w: Idempotency-Key must be 1 to %d characters of letters, digits, '.', '_', ':' or '-'", errBadRequest, MaxKeyLen)
	}
	return store.Idempotency{Key: key, RequestHash: hash}, nil
}

func newID(prefix string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

var idRE = regexp.MustCompile(`^[pr]_[0-9a-f]{16}$`)

func pathID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if !idRE.MatchString(id) {
		return "", fmt.Errorf("%w: %q is not an ID (p_ or r_ and 16 hex digits)", store.ErrNotFound, id)
	}
	return id, nil
}

// text validates a free-text field.
func text(errs validationError, field, v string, required bool, max int) string {
	v = strings.TrimSpace(v)
	switch {
	case v == "" && required:
		errs[field] = "required"
	case !utf8.ValidString(v):
		errs[field] = "must be valid UTF-8"
	case utf8.RuneCountInString(v) > max:
		errs[field] = fmt.Sprintf("at most %d characters", max)
	default:
		for _, c := range v {
			if unicode.IsControl(c) && c != '\n' && c != '\t' {
				errs[field] = "must not contain control characters"
				break
			}
		}
	}
	return v
}
