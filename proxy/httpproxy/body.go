package httpproxy

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/proxy/chain"
)

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
