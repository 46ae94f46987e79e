// Package httpproxy is the proxy's HTTP data path: httputil.ReverseProxy with Rewrite on both
// sides. Outbound (the app's loopback listener) appends this hop's chain entry and verifies the
// answering hop's countersignature; inbound verifies the peer and the whole chain, hands the
// app a verified summary and countersigns the app's response.
package httpproxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
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

// readBody buffers a small body so that its digest can be signed or checked: bodies of known
// length up to chain.MaxDigestBody, and chunked bodies that end within it (their length
// becomes known). Larger bodies stream, and the digest says "-". It returns the body's
// SHA-256 (nil when streamed).
func readBody(r *http.Request, w http.ResponseWriter, max int64, resolveChunked bool) ([]byte, *attestation.Rejection) {
	if r.ContentLength > max {
		return nil, attestation.Reject(CodeBodyTooLarge, "Content-Length", strconv.FormatInt(r.ContentLength, 10), fmt.Sprintf("at most %d", max))
	}
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		h := sha256.Sum256(nil)
		r.Body, r.ContentLength = http.NoBody, 0
		return h[:], nil
	}
	body := http.MaxBytesReader(w, r.Body, max)
	if r.ContentLength > 0 && r.ContentLength <= chain.MaxDigestBody {
		b, err := io.ReadAll(body)
		if err != nil {
			return nil, attestation.Rejectf(CodeBodyTooLarge, "reading the body: %v", err)
		}
		h := sha256.Sum256(b)
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
		return h[:], nil
	}
	if r.ContentLength < 0 && resolveChunked {
		b, err := io.ReadAll(io.LimitReader(body, chain.MaxDigestBody+1))
		if err != nil {
			return nil, attestation.Rejectf(CodeBodyTooLarge, "reading the body: %v", err)
		}
		if len(b) <= chain.MaxDigestBody {
			h := sha256.Sum256(b)
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
			r.TransferEncoding = nil
			return h[:], nil
		}
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(b), body), body}
		return nil, nil
	}
	r.Body = body
	return nil, nil
}

// HopSummary is one hop in the Countersign-Verified header handed to the app.
type HopSummary struct {
	Identity  string            `json:"identity"`
	MREnclave string            `json:"mrenclave"`
	MRSigner  string            `json:"mrsigner"`
	Debug     bool              `json:"debug"`
	Claimed   map[string]string `json:"claimed,omitempty"`
	TS        int64             `json:"ts"`
}

// Summary is the Countersign-Verified header (JSON, ASCII only).
type Summary struct {
	Peer string       `json:"peer"`
	Hops []HopSummary `json:"hops"`
}

func summarize(peer string, ch *chain.Chain) string {
	s := Summary{Peer: peer}
	for _, h := range ch.Hops {
		c := h.Token.Claims
		hs := HopSummary{Identity: h.Identity, MREnclave: c.SGXMREnclave, MRSigner: c.SGXMRSigner, TS: h.Entry.TS}
		if c.SGXIsDebuggable != nil {
			hs.Debug = *c.SGXIsDebuggable
		}
		if h.Token.Runtime != nil {
			hs.Claimed = h.Token.Runtime.Claimed
		}
		s.Hops = append(s.Hops, hs)
	}
	b, _ := json.Marshal(s)
	return asciiOnly(string(b), 1<<16)
}

// asciiOnly escapes non-ASCII and control bytes as \uXXXX so a value is a safe header value.
func asciiOnly(s string, max int) string {
	var b strings.Builder
	for _, r := range s {
		if r < 0x20 || r > 0x7e {
			fmt.Fprintf(&b, "\\u%04x", r)
		} else {
			b.WriteRune(r)
		}
		if b.Len() >= max {
			break
		}
	}
	return b.String()
}

func selfFromCert(c *identity.Current) chain.Self { return chain.Self{Key: c.Key, Token: c.Token.Raw} }

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// bufferResponse reads a response body of at most max bytes (countersigned responses are
// buffered so that their digest can be signed or checked) and returns it with its SHA-256.
// from names the other side in errors ("the app", "the upstream"); readCode is the reason when
// reading fails.
func bufferResponse(resp *http.Response, max int64, from string, readCode attestation.Code) ([]byte, [32]byte, *attestation.Rejection) {
	if resp.ContentLength > max {
		return nil, [32]byte{}, attestation.Reject(CodeRespTooLarge, "Content-Length", strconv.FormatInt(resp.ContentLength, 10),
			fmt.Sprintf("at most %d (countersigned responses are buffered)", max))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	resp.Body.Close()
	if err != nil {
		return nil, [32]byte{}, attestation.Rejectf(readCode, "reading %s's response: %v", from, err)
	}
	if int64(len(b)) > max {
		return nil, [32]byte{}, attestation.Rejectf(CodeRespTooLarge, "%s's response exceeds %d bytes (countersigned responses are buffered)", from, max)
	}
	return b, sha256.Sum256(b), nil
}

// bufferPool is the ReverseProxies' copy buffers: 32 KiB each, reused across requests and
// listeners instead of one allocated per request (httputil's default).
var bufferPool httputilBufferPool

type httputilBufferPool struct{ p sync.Pool }

func (b *httputilBufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *httputilBufferPool) Put(buf []byte) {
	if cap(buf) != 32<<10 {
		return
	}
	buf = buf[:cap(buf)]
	b.p.Put(&buf)
}

// setBody makes b, already read and checked, the response's body, framed by its length.
func setBody(resp *http.Response, b []byte) {
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
	resp.Header.Del("Transfer-Encoding")
	resp.TransferEncoding = nil
}

// Codes lists every reason code of the HTTP layer (docs/protocol.md section 6).
var Codes = []attestation.Code{CodeUpgrade, CodeSmuggling, CodeBodyTooLarge, CodeRespTooLarge, CodeNoIdentity, CodeUpstream, CodeApp, CodeChainForged, CodeWantReceipt}
