// Package admin serves the proxy's admin endpoints: /healthz, /readyz, /metrics and
// /.well-known/attestation (the current token, the certificate's key as a JWK and the
// certificate, for browsers that cannot check attested TLS themselves).
package admin

import (
	"encoding/json"
	"encoding/pem"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/countersign/countersign/attestation/maa"
	"github.com/countersign/countersign/proxy/identity"
)

// WellKnownPath is where the attestation document is served.
const WellKnownPath = "/.well-known/attestation"

// Identity is what the admin listener needs of the identity source.
type Identity interface {
	Current() *identity.Current
	Ready() bool
}

// Document is the JSON at WellKnownPath.
type Document struct {
	Identity    string  `json:"identity"`
	Token       string  `json:"token"`
	Key         maa.JWK `json:"key"`
	Certificate string  `json:"certificate"` // PEM
	Expires     string  `json:"expires"`     // RFC 3339
}

// Handler returns the admin mux.
func Handler(id Identity, name string, reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !id.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: no valid attestation token loaded\n"))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET "+WellKnownPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Cache-Control", "no-store")
		c := id.Current()
		if c == nil {
			http.Error(w, "no valid attestation token loaded", http.StatusServiceUnavailable)
			return
		}
		doc := Document{
			Identity:    name,
			Token:       c.Token.Raw,
			Key:         c.JWK,
			Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Certificate[0]})),
			Expires:     c.Expiry.UTC().Format(time.RFC3339),
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(doc)
	})
	return mux
}
