package httpproxy

import (
	"io"
	"net/http"
	"strings"
)

// The proxies own every header whose name normalises to a `Countersign-` name. A name is
// normalised by lower-casing it and mapping every byte other than a-z and 0-9 to '-': WSGI
// and CGI servers map '_' and '-' to the same HTTP_COUNTERSIGN_… variable, and other stacks
// fold other separators, so `Countersign_Verified`, `countersign.verified` and
// `COUNTERSIGN-VERIFIED` are all the same header to some app. Such a header is dropped
// wherever it crosses a proxy, in both directions, in interim (1xx) responses and in trailers,
// and every variant dropped (any spelling other than the exact one this proxy sets) is counted
// (countersign_header_variants_dropped_total).

const ourPrefix = "countersign-"

// isOurs reports whether a header name normalises to a Countersign- name.
func isOurs(name string) bool {
	if len(name) < len(ourPrefix) {
		return false
	}
	for i := 0; i < len(ourPrefix); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			c = '-'
		}
		if c != ourPrefix[i] {
			return false
		}
	}
	return true
}

// isExactlyOurs reports whether name is spelled exactly as one of the headers the proxies set.
func isExactlyOurs(name string) bool {
	for _, k := range ourHeaders {
		if name == k {
			return true
		}
	}
	return false
}

// dropVariants deletes from h every header that normalises to a Countersign- name but is not
// spelled exactly as one of ourHeaders (those are handled by the caller), and returns how many
// names it deleted.
func dropVariants(h http.Header) int {
	n := 0
	for k := range h {
		if isOurs(k) && !isExactlyOurs(k) {
			delete(h, k)
			n++
		}
	}
	return n
}

// dropAllOurs deletes every header that normalises to a Countersign- name (interim responses and
// trailers carry none of ours) and returns how many names it deleted.
func dropAllOurs(h http.Header) int {
	n := 0
	for k := range h {
		if isOurs(k) {
			delete(h, k)
			n++
		}
	}
	return n
}

// variantsDropped counts n header names dropped on listener in direction (request, response,
// interim, trailer).
func (d *Deps) variantsDropped(listener, direction string, n int) {
	if n > 0 {
		d.Metrics.HeaderVariantsDropped(listener, direction, n)
		d.Logger.Warn("dropped headers spelled as a Countersign- header", "listener", listener, "direction", direction, "count", n)
	}
}

// interimFilter is the ResponseWriter handed to a ReverseProxy: interim (1xx) responses it
// forwards (103 Early Hints, say) lose every Countersign- header first.
type interimFilter struct {
	http.ResponseWriter
	d        *Deps
	listener string
}

func (f interimFilter) WriteHeader(code int) {
	if code >= 100 && code < 200 {
		f.d.variantsDropped(f.listener, "interim", dropAllOurs(f.ResponseWriter.Header()))
	}
	f.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController (which the ReverseProxy flushes through) reach the
// server's writer.
func (f interimFilter) Unwrap() http.ResponseWriter { return f.ResponseWriter }

// filterTrailers drops Countersign- trailers: those declared now, and those that arrive with
// the end of body (which is wrapped so that they are dropped before anyone reads them).
// trailer points at the message's Trailer field: net/http replaces a nil map when trailers
// nobody declared arrive, so the filter must look at the field, not at the map it holds now.
func (d *Deps) filterTrailers(trailer *http.Header, body io.ReadCloser, listener string) io.ReadCloser {
	d.variantsDropped(listener, "trailer", dropAllOurs(*trailer))
	if body == nil || body == http.NoBody {
		return body
	}
	return &trailerFilter{ReadCloser: body, trailer: trailer, d: d, listener: listener}
}

type trailerFilter struct {
	io.ReadCloser
	trailer  *http.Header
	d        *Deps
	listener string
	done     bool
}

func (t *trailerFilter) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	if err == io.EOF && !t.done {
		t.done = true
		t.d.variantsDropped(t.listener, "trailer", dropAllOurs(*t.trailer))
	}
	return n, err
}

func (t *trailerFilter) Close() error {
	err := t.ReadCloser.Close()
	if !t.done {
		t.done = true
		t.d.variantsDropped(t.listener, "trailer", dropAllOurs(*t.trailer))
	}
	return err
}

// isH2Preface reports whether r is the HTTP/2 connection preface ("PRI * HTTP/2.0") that Go's
// HTTP/1.1 server hands to handlers.
func isH2Preface(r *http.Request) bool {
	return r.Method == "PRI" || strings.HasPrefix(r.Proto, "HTTP/2")
}
