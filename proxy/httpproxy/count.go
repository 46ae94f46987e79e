package httpproxy

import (
	"net/http"

	"github.com/countersign/countersign/proxy/chain"
)

// countingWriter remembers the final status a request was answered with, for
// countersign_http_requests_total (listener, status class).
type countingWriter struct {
	http.ResponseWriter
	status int
}

func (c *countingWriter) WriteHeader(code int) {
	if c.status == 0 && code >= 200 {
		c.status = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	return c.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController (which the ReverseProxy flushes through) reach the
// server's writer.
func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// counted wraps w; done counts the request on listener once it has been answered.
func (d *Deps) counted(listener string, w http.ResponseWriter) (cw *countingWriter, done func()) {
	cw = &countingWriter{ResponseWriter: w}
	end := chain.Begin()
	return cw, func() { end(); d.Metrics.Request(listener, cw.status) }
}
