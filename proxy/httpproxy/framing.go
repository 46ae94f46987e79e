package httpproxy

import (
	"io"
	"net/http"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/proxy/httpframe"
)

// Framed wraps the handler of an HTTP listener whose connections come from
// httpframe.NewListener (and whose server's ConnContext calls httpframe.WithConn). It numbers
// each request of a connection and refuses, before h sees it, one that the framing guard found
// a request smuggling shape in or before (400, CodeSmuggling, connection closed): Go's server
// has already applied RFC 9112 §6.3 to the request, so hygiene cannot see those shapes.
// A shape found later, in the body of the request being served, fails the body read, and
// rejectHTTP then reports it instead of the read error.
func (d *Deps) Framed(listener string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && r.Method != "PRI" {
			// HTTP/2 frames are length-delimited and parsed by Go's HTTP/2 server: the guard,
			// an HTTP/1.1 framing guard, is not on those connections.
			h.ServeHTTP(w, r)
			return
		}
		c := httpframe.FromContext(r.Context())
		if c == nil { // wiring error: fail closed
			d.Reject(w, r, listener, http.StatusInternalServerError, attestation.Rejectf(CodeSmuggling, "this listener has no framing guard"))
			return
		}
		if why := c.Begin(r); why != httpframe.OK {
			d.Reject(w, r, listener, http.StatusBadRequest, framingRejection(why))
			return
		}
		if r.Method == http.MethodOptions && r.RequestURI == "*" {
			// What net/http's general OPTIONS handler answers; the server passes "OPTIONS *"
			// here (DisableGeneralOptionsHandler) so that every request is numbered.
			w.Header().Set("Content-Length", "0")
			if r.ContentLength != 0 {
				_, _ = io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, 4<<10))
			}
			return
		}
		h.ServeHTTP(w, r)
	})
}

func framingRejection(why httpframe.Reason) *attestation.Rejection {
	return attestation.Rejectf(CodeSmuggling, "%s", why)
}

// framingVerdict is the guard's verdict on the request being served, if its listener has one.
func framingVerdict(r *http.Request) httpframe.Reason {
	if c := httpframe.FromContext(r.Context()); c != nil {
		return c.Current()
	}
	return httpframe.OK
}
