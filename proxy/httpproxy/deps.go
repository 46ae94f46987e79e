// Package httpproxy is the proxy's HTTP data path: httputil.ReverseProxy with Rewrite on both
// sides. Outbound (the app's loopback listener) appends this hop's chain entry and verifies the
// answering hop's countersignature; inbound verifies the peer and the whole chain, hands the
// app a verified summary and countersigns the app's response.
package httpproxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/proxy/attestedtls"
	"github.com/countersign/countersign/proxy/chain"
	"github.com/countersign/countersign/proxy/config"
	"github.com/countersign/countersign/proxy/httpframe"
	"github.com/countersign/countersign/proxy/identity"
	"github.com/countersign/countersign/proxy/metrics"
)

// Reason codes of the HTTP layer.
const (
	CodeUpgrade      attestation.Code = "upgrade_refused"
	CodeSmuggling    attestation.Code = "request_smuggling_shape"
	CodeBodyTooLarge attestation.Code = "body_too_large"
	CodeRespTooLarge attestation.Code = "response_too_large"
	CodeNoIdentity   attestation.Code = "identity_unavailable"
	CodeUpstream     attestation.Code = "upstream_unavailable"
	CodeApp          attestation.Code = "app_unavailable"
	CodeChainForged  attestation.Code = "chain_from_app_unknown"
	CodeWantReceipt  attestation.Code = "receipt_request_invalid"
)

// Identity is what the data path needs of identity.Source.
type Identity interface {
	Current() *identity.Current
}

// Deps are shared by every HTTP listener of a proxy.
type Deps struct {
	Checker  attestedtls.Checker
	Identity Identity
	Live     *chain.Live
	// Forwarded remembers chains the inbound side verified and handed to the app, by tail
	// digest, so that the outbound side continues only those.
	Forwarded *chain.TTLSet[string, *chain.Chain]
	Metrics   *metrics.Metrics
	Logger    *slog.Logger
	Limits    config.Limits
	Chain     config.Chain
	Now       func() time.Time
}

// ourHeaders are set only by proxies: never accepted from an app, and replaced on the way.
var ourHeaders = []string{chain.HeaderChain, chain.HeaderTokens, chain.HeaderVerified, chain.HeaderCountersig, chain.HeaderReceipt, chain.HeaderWantReceipt, chain.HeaderReject, chain.HeaderRejectCause}

// deleteOurs deletes ourHeaders (but keep) and every other header spelled as a Countersign-
// header (see isOurs); it returns how many of the latter it deleted.
func deleteOurs(h http.Header, keep ...string) int {
	for _, k := range ourHeaders {
		skip := false
		for _, kk := range keep {
			if k == kk {
				skip = true
			}
		}
		if !skip {
			h.Del(k)
		}
	}
	return dropVariants(h)
}

// Reject writes a rejection: status, reason code header, log line, metric. All HTTP
// rejections go through here. When the framing guard has found a smuggling shape in the
// request (its body read then fails), that is the reason reported.
func (d *Deps) Reject(w http.ResponseWriter, r *http.Request, listener string, status int, rej *attestation.Rejection) {
	if why := framingVerdict(r); why != httpframe.OK && rej.Code != CodeSmuggling {
		status, rej = http.StatusBadRequest, framingRejection(why)
	}
	d.Logger.Warn("request refused", "listener", listener, "reason", string(rej.Code), "detail", rej.Sentence(),
		"method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
	d.Metrics.Reject(listener, rej.Code)
	h := w.Header()
	for k := range h {
		delete(h, k)
	}
	if r.ProtoMajor == 2 && isGRPC(r.Header) {
		// A gRPC client reads an HTTP error as UNKNOWN: answer with a gRPC status, trailers-only
		// (docs/protocol.md section 11).
		for k, v := range grpcRejection(status, rej) {
			h[k] = v
		}
		h.Set("Content-Type", "application/grpc")
		w.WriteHeader(http.StatusOK)
		return
	}
	h.Set(chain.HeaderReject, string(rej.Code))
	h.Set(chain.HeaderRejectCause, asciiOnly(rej.Sentence(), 512))
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Connection", "close")
	w.WriteHeader(status)
	fmt.Fprintf(w, "countersign: %s: %s\n", rej.Code, rej.Sentence())
}

func asRejection(err error, fallback attestation.Code) *attestation.Rejection {
	var rej *attestation.Rejection
	if errors.As(err, &rej) {
		return rej
	}
	return attestation.Rejectf(fallback, "%v", err)
}

// Codes lists every reason code of the HTTP layer (docs/protocol.md section 6).
var Codes = []attestation.Code{CodeUpgrade, CodeSmuggling, CodeBodyTooLarge, CodeRespTooLarge, CodeNoIdentity, CodeUpstream, CodeApp, CodeChainForged, CodeWantReceipt}
