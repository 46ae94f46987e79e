package httpproxy

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/proxy/chain"
	"github.com/countersign/countersign/proxy/config"
)

// Streamed exchanges (docs/protocol.md section 11): the answering proxy relays the app's
// response as it comes and countersigns, in a trailer, the stream response digest over the
// status, the body, the trailers and the request body it received; the calling proxy relays
// the response to its app as it comes and checks the countersignature at the end, failing the
// end of the stream (a gRPC status, or a reset) if the check fails.

// bodyHash digests a request body as it is read.
type bodyHash struct {
	rc    io.ReadCloser
	mu    sync.Mutex
	h     hash.Hash
	n     int64
	want  int64 // the declared length, or -1
	ended bool
	endc  chan struct{} // closed when ended
}

func newBodyHash(rc io.ReadCloser, contentLength int64) *bodyHash {
	b := &bodyHash{rc: rc, h: sha256.New(), want: contentLength, endc: make(chan struct{})}
	if rc == nil || rc == http.NoBody || contentLength == 0 {
		b.rc, b.ended = http.NoBody, true
		close(b.endc)
	}
	return b
}

func (b *bodyHash) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.mu.Lock()
	b.h.Write(p[:n])
	b.n += int64(n)
	if !b.ended && (err == io.EOF || (b.want > 0 && b.n == b.want)) {
		b.ended = true
		close(b.endc)
	}
	b.mu.Unlock()
	return n, err
}

func (b *bodyHash) Close() error { return b.rc.Close() }

// endWait bounds how long an answer that has ended waits for the end of its request body: the
// app usually answers after reading the last message, while the goroutine that forwards the
// body has yet to read the end of the stream that came with it.
const endWait = 2 * time.Millisecond

// received is RB as the answering proxy countersigns it: the digest of the body when it ended,
// else "-".
func (b *bodyHash) received() string {
	select {
	case <-b.endc:
	default:
		t := time.NewTimer(endWait)
		select {
		case <-b.endc:
		case <-t.C:
		}
		t.Stop()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.ended {
		return "-"
	}
	return b64(b.h.Sum(nil))
}

// sent is the digest of what the calling proxy has sent so far: if the answerer says it
// received the whole body, it received exactly these bytes (it cannot have seen the end of the
// stream before this proxy read it).
func (b *bodyHash) sent() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b64(b.h.Sum(nil))
}

// bodiless reports whether a response to method with status has no body by definition, so
// that HTTP/1.1 could not carry its trailers: it is countersigned in a header instead.
func bodiless(method string, status int) bool {
	return method == http.MethodHead || status == http.StatusNoContent || status == http.StatusNotModified || status < 200
}

// grpcStatusFields are what a gRPC server puts in a trailers-only response's headers; a
// streamed answer moves them to the trailers, which the countersignature covers.
var grpcStatusFields = []string{"Grpc-Status", "Grpc-Message", "Grpc-Status-Details-Bin"}

func isGRPC(h http.Header) bool {
	return strings.HasPrefix(h.Get("Content-Type"), "application/grpc")
}

// countersignBody is the app's response body on the answering side of a streamed exchange:
// at its end it sets the trailers to the app's (already filtered) plus the countersignature.
// resp.Trailer must be nil when the ReverseProxy announces trailers, so that everything
// set here goes out as trailers (http.TrailerPrefix).
type countersignBody struct {
	io.ReadCloser
	resp  *http.Response
	moved http.Header
	h     hash.Hash
	st    *inState
	d     *Deps
	done  bool
}

func (c *countersignBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.h.Write(p[:n])
	if err == io.EOF && !c.done {
		c.done = true
		if ferr := c.finish(); ferr != nil {
			return n, ferr
		}
	}
	return n, err
}

func (c *countersignBody) finish() error {
	tr := http.Header{}
	for k, v := range c.resp.Trailer {
		if len(v) > 0 {
			tr[k] = v
		}
	}
	for k, v := range c.moved {
		tr[k] = v
	}
	ts := chain.TrailersDigest(tr)
	rd := chain.StreamResponseDigest(c.resp.StatusCode, c.h.Sum(nil), ts[:], c.st.reqBody.received())
	cs, err := chain.Countersign(c.st.self, c.st.entryDigest, rd, c.d.Now())
	if err != nil {
		return err
	}
	tr.Set(chain.HeaderCountersig, cs)
	c.resp.Trailer = tr
	return nil
}

// streamAnswer makes resp, the app's answer to a streamed exchange, stream to the caller with
// its countersignature in the trailers.
func (h *Inbound) streamAnswer(resp *http.Response, st *inState) {
	var moved http.Header
	if isGRPC(resp.Header) && resp.Header.Get("Grpc-Status") != "" {
		moved = http.Header{}
		for _, k := range grpcStatusFields {
			if v, ok := resp.Header[k]; ok {
				moved[k] = v
				delete(resp.Header, k)
			}
		}
	}
	body := resp.Body
	if body == nil {
		body = http.NoBody
	}
	resp.Body = &countersignBody{
		ReadCloser: body,
		resp:       resp,
		moved:      moved,
		h:          sha256.New(),
		st:         st,
		d:          h.d,
	}
	resp.Trailer = nil // see countersignBody
	resp.Header.Del("Content-Length")
	resp.ContentLength = -1
}

// verifyBody is the upstream's response body on the calling side of a streamed exchange: at its
// end it checks the countersignature in the trailers and sets the trailers the app gets, or
// fails the end of the stream.
type verifyBody struct {
	io.ReadCloser
	resp   *http.Response
	h      hash.Hash
	o      *Outbound
	st     *outState
	peerPK *ecdsa.PublicKey
	peerTk string
	peerRw string
	grpc   bool
	done   bool
}

func (v *verifyBody) Read(p []byte) (int, error) {
	n, err := v.ReadCloser.Read(p)
	v.h.Write(p[:n])
	if err == io.EOF && !v.done {
		v.done = true
		if rej := v.finish(); rej != nil {
			v.o.d.Logger.Warn("response refused", "listener", v.o.cfg.Name, "reason", string(rej.Code), "detail", rej.Sentence())
			v.o.d.Metrics.Reject(v.o.cfg.Name, rej.Code)
			if !v.grpc {
				return n, rej // the ReverseProxy resets the stream: the app sees it incomplete
			}
			v.resp.Trailer = grpcRejection(http.StatusForbidden, rej)
		}
	}
	return n, err
}

// Close before the end (the upstream or the app went away) leaves the stream failed: the
// ReverseProxy aborts it.
func (v *verifyBody) finish() *attestation.Rejection {
	received := v.resp.Trailer
	cs := received.Values(chain.HeaderCountersig)
	if len(cs) > 1 {
		return attestation.Rejectf(chain.CodeCountersig, "%d countersignatures", len(cs))
	}
	enc := ""
	if len(cs) == 1 {
		enc = cs[0]
	}
	sum := v.h.Sum(nil)
	ts := chain.TrailersDigest(received)
	key := v.peerPK
	if v.o.channel(v.st) {
		key = nil // the attested connection authenticates it; no receipt was asked for
	}
	_, rb, err := chain.VerifyStreamCountersig(enc, v.st.entryDigest, v.peerTk, key, v.resp.StatusCode, sum, ts[:], v.st.sent.sent())
	if err != nil {
		return asRejection(err, chain.CodeCountersig)
	}
	out := http.Header{}
	for k, vals := range received {
		if len(vals) > 0 {
			out[k] = vals
		}
	}
	v.o.d.variantsDropped(v.o.cfg.Name, "trailer", deleteOurs(out))
	if v.st.wantReceipt {
		v.st.tokens[v.peerTk] = v.peerRw
		rc := chain.Receipt{
			V:                2,
			Chain:            v.st.chainHdr,
			Countersignature: enc,
			Status:           v.resp.StatusCode,
			BodySHA256:       b64(sum),
			TrailersSHA256:   b64(ts[:]),
			RequestBody:      rb,
		}
		for _, t := range v.st.tokens {
			rc.Tokens = append(rc.Tokens, t)
		}
		receipt, err := rc.Encode()
		if err != nil {
			return attestation.Rejectf(chain.CodeCountersig, "encoding the receipt: %v", err)
		}
		out.Set(chain.HeaderReceipt, receipt)
	}
	v.resp.Trailer = out
	return nil
}

// grpcCode maps the HTTP status a rejection would have (docs/protocol.md section 9) to the
// gRPC status code that stands for it (section 11). An upstream that was reached but refused
// (its attestation or identity, at the handshake) is PERMISSION_DENIED, not UNAVAILABLE, which
// clients retry.
func grpcCode(status int, code attestation.Code) int {
	if status == http.StatusBadGateway && code != CodeUpstream && code != CodeApp {
		return 7
	}
	switch status {
	case http.StatusBadRequest:
		return 3 // INVALID_ARGUMENT
	case http.StatusForbidden:
		return 7 // PERMISSION_DENIED
	case http.StatusRequestEntityTooLarge:
		return 8 // RESOURCE_EXHAUSTED
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		return 14 // UNAVAILABLE
	}
	return 13 // INTERNAL
}

// grpcRejection is the trailers (or the trailers-only headers) of a refused gRPC call.
func grpcRejection(status int, rej *attestation.Rejection) http.Header {
	h := http.Header{}
	h.Set("Grpc-Status", strconv.Itoa(grpcCode(status, rej.Code)))
	h.Set("Grpc-Message", grpcPercentEncode("countersign: "+string(rej.Code)+": "+rej.Sentence()))
	h.Set(chain.HeaderReject, string(rej.Code))
	h.Set(chain.HeaderRejectCause, asciiOnly(rej.Sentence(), 512))
	return h
}

// grpcPercentEncode encodes a grpc-message as the gRPC HTTP/2 protocol requires: bytes outside
// printable ASCII, and '%', as %XX.
func grpcPercentEncode(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < 1024; i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// h2Config is the HTTP/2 configuration of a listener's server and of its transports
// (docs/protocol.md section 11, HTTP/2 limits).
func h2Config(l config.Limits) *http.HTTP2Config {
	return &http.HTTP2Config{
		MaxConcurrentStreams:      l.MaxConcurrentStreams,
		MaxReadFrameSize:          l.MaxFrameBytes,
		MaxDecoderHeaderTableSize: 4096,
		MaxEncoderHeaderTableSize: 4096,
	}
}

// H2Config is h2Config for the listeners' servers (proxy/server).
func H2Config(l config.Limits) *http.HTTP2Config { return h2Config(l) }
