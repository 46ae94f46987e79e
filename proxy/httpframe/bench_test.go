package httpframe

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/benchratio"
)

var benchReq = []byte("POST /v2/models/diag/infer?x=1 HTTP/1.1\r\nHost: inference.internal:8080\r\n" +
	"User-Agent: Go-http-client/1.1\r\nAccept: application/json\r\nContent-Type: application/json\r\n" +
	"Countersign-Chain: " + strings.Repeat("A", 300) + "\r\nX-Request-Id: 0123456789abcdef\r\n" +
	"Content-Length: 1024\r\n\r\n" + strings.Repeat("x", 1024) +
	"POST /stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
	"200\r\n" + strings.Repeat("y", 512) + "\r\n200\r\n" + strings.Repeat("y", 512) + "\r\n0\r\n\r\n")

// BenchmarkFeed is the guard's own cost: two requests (a 1 KiB Content-Length body with a
// 500-byte head, and a chunked 1 KiB body) per operation, fed in 4 KiB reads like the
// server's. It must not allocate.
func BenchmarkFeed(b *testing.B) {
	var g guard
	g.init(1 << 20)
	b.SetBytes(int64(len(benchReq)))
	b.ReportAllocs()
	for b.Loop() {
		for p := benchReq; len(p) > 0; {
			n := min(4096, len(p))
			g.feed(p[:n])
			p = p[n:]
		}
	}
	if g.bad != OK || g.st != sIdle {
		b.Fatalf("verdict %v, state %d", g.bad, g.st)
	}
}

// BenchmarkGuardedServer compares a net/http server whose connections are guarded (listener,
// ConnContext, Begin per request) with the same server unguarded, in the same run: 8
// keep-alive connections each sending the two requests of BenchmarkFeed and reading the
// answers, interleaved in 4 rounds. It reports each side's wall and CPU time per request and
// guarded/plain (1.00 = no cost).
func BenchmarkGuardedServer(b *testing.B) {
	handler := func(guarded bool) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if guarded {
				if why := FromContext(r.Context()).Begin(r); why != OK {
					http.Error(w, why.String(), http.StatusBadRequest)
					return
				}
			}
			_, _ = io.Copy(io.Discard, r.Body)
			_, _ = io.WriteString(w, "ok")
		})
	}
	start := func(guarded bool) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := &http.Server{Handler: handler(guarded), ReadHeaderTimeout: 10 * time.Second}
		var l net.Listener = ln
		if guarded {
			srv.ConnContext = WithConn
			l = NewListener(ln, Options{})
		}
		go func() { _ = srv.Serve(l) }()
		b.Cleanup(func() { srv.Close() })
		return ln.Addr().String()
	}
	const workers = 8
	clients := func(addr string) func(w int) error {
		cs := benchratio.DialConns(b, addr, workers)
		return func(w int) error {
			c := cs[w]
			if _, err := c.Write(benchReq); err != nil {
				return err
			}
			for range 2 {
				resp, err := http.ReadResponse(c.R, nil)
				if err != nil {
					return err
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
			return nil
		}
	}
	run := func(n int, op func(int) error) (wall, cpu time.Duration) {
		l, err := benchratio.RunLoad(workers, n, op)
		if err != nil {
			b.Error(err)
		}
		return l.Wall, l.CPU
	}
	plain, guarded := clients(start(false)), clients(start(true))
	run(20*workers, plain)
	run(20*workers, guarded)
	var pw, pc, gw, gc time.Duration
	b.ResetTimer()
	for r := range 4 {
		n := b.N / 4
		if r == 0 {
			n += b.N % 4
		}
		w, c := run(n, plain)
		pw, pc = pw+w, pc+c
		w, c = run(n, guarded)
		gw, gc = gw+w, gc+c
	}
	b.StopTimer()
	per := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / float64(2*b.N) }
	b.ReportMetric(per(pw), "plain-µs/req")
	b.ReportMetric(per(gw), "guarded-µs/req")
	b.ReportMetric(per(pc), "plain-cpu-µs/req")
	b.ReportMetric(per(gc), "guarded-cpu-µs/req")
	b.ReportMetric(float64(gc)/float64(pc), "guarded/plain-cpu")
	b.ReportMetric(float64(gw)/float64(pw), "guarded/plain-wall")
}
