package httpproxy

import (
	"net/http"
	"strings"

	"github.com/countersign/countersign/attestation"
)

// hygiene refuses request shapes the proxy does not carry: protocol upgrades (h2c included),
// Transfer-Encoding with Content-Length, transfer codings other than chunked. Go's server
// has already removed Content-Length when Transfer-Encoding is present and merged identical
// Content-Length fields, so the framing guard (Framed, proxy/httpframe) is what refuses those
// shapes on the listeners; these checks stay for requests that do not come through one.
func hygiene(r *http.Request) *attestation.Rejection {
	if r.ProtoMajor == 2 && r.Method != "PRI" {
		// An HTTP/2 stream, which only an http2 or grpc listener's server produces: Go's
		// HTTP/2 server has refused connection-specific fields (RFC 9113 section 8.2.2) and
		// checks content-length against the DATA frames; there is no upgrade in HTTP/2.
		return nil
	}
	if isH2Preface(r) {
		return attestation.Reject(CodeUpgrade, "request line", asciiOnly(r.Method+" "+r.RequestURI+" "+r.Proto, 64), "HTTP/1.1 (the HTTP/2 preface is refused)")
	}
	if r.Header.Get("Upgrade") != "" || headerHasToken(r.Header, "Connection", "upgrade") {
		up := r.Header.Get("Upgrade")
		if strings.Contains(strings.ToLower(up), "h2c") {
			return attestation.Reject(CodeUpgrade, "Upgrade", up, "no upgrade (h2c is refused)")
		}
		return attestation.Reject(CodeUpgrade, "Upgrade", asciiOnly(up, 64), "no protocol upgrade")
	}
	if len(r.TransferEncoding) > 0 {
		if len(r.Header.Values("Content-Length")) > 0 {
			return attestation.Rejectf(CodeSmuggling, "both Transfer-Encoding and Content-Length")
		}
		if len(r.TransferEncoding) != 1 || r.TransferEncoding[0] != "chunked" {
			return attestation.Reject(CodeSmuggling, "Transfer-Encoding", strings.Join(r.TransferEncoding, ","), "chunked")
		}
	}
	if cl := r.Header.Values("Content-Length"); len(cl) > 1 {
		return attestation.Rejectf(CodeSmuggling, "%d Content-Length headers", len(cl))
	}
	return nil
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
