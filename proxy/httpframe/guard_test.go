package httpframe

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

// run feeds s to a fresh guard in pieces of at most split bytes (0: all at once) and returns
// the end offset of each complete request and the verdict.
func run(s []byte, split int) (ends []int64, bad Reason, badReq int64, badBody bool) {
	var g guard
	g.init(64 << 10)
	g.ends = func(_ int64, off int64) { ends = append(ends, off) }
	if split <= 0 {
		split = len(s) + 1
	}
	for len(s) > 0 {
		n := min(split, len(s))
		g.feed(s[:n])
		s = s[n:]
	}
	return ends, g.bad, g.badReq, g.badBody
}

func TestGuard(t *testing.T) {
	const get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	cases := []struct {
		name, in string
		ends     int // complete requests before the verdict
		bad      Reason
		badReq   int64
	}{
		{"one GET", get, 1, OK, 0},
		{"pipelined", get + get + get, 3, OK, 0},
		{"CRLF between", get + "\r\n\r\n" + get, 2, OK, 0},
		{"CL body", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nabcde" + get, 2, OK, 0},
		{"CL OWS", "POST / HTTP/1.1\r\nContent-Length:  \t5 \r\n\r\nabcde", 1, OK, 0},
		{"chunked", "POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n5;a=b\r\nabcde\r\nA \r\n0123456789\r\n0\r\nX-T: y\r\n\r\n" + get, 2, OK, 0},
		{"CL and TE", get + "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 1, CLAndTE, 1},
		{"TE and CL", "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 3\r\n\r\n", 0, CLAndTE, 0},
		{"duplicate CL", "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 0, DuplicateCL, 0},
		{"CL list", "POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc", 0, BadCL, 0},
		{"CL sign", "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc", 0, BadCL, 0},
		{"CL empty", "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n", 0, BadCL, 0},
		{"TE list", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 0, TENotChunked, 0},
		{"TE gzip", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 0, TENotChunked, 0},
		{"TE twice", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 0, TENotChunked, 0},
		{"TE prefix", "POST / HTTP/1.1\r\nTransfer-Encoding: chunk\r\n\r\n", 0, TENotChunked, 0},
		{"TE HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 0, TEInHTTP10, 0},
		{"Transfer-Encodings is another field", "POST / HTTP/1.1\r\nTransfer-Encodings: x\r\nContent-Lengths: 9\r\n\r\n", 1, OK, 0},
		{"obs-fold", "GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n", 0, ObsFold, 0},
		{"bare LF request line", "GET / HTTP/1.1\nHost: x\r\n\r\n", 0, BareLF, 0},
		{"bare LF field", "GET / HTTP/1.1\r\nHost: x\n\r\n", 0, BareLF, 0},
		{"bare CR field", "GET / HTTP/1.1\r\nHost: x\ry\r\n\r\n", 0, BareCR, 0},
		{"space before colon", "GET / HTTP/1.1\r\nContent-Length : 3\r\n\r\n", 0, BadFieldLine, 0},
		{"no colon", "GET / HTTP/1.1\r\nHost\r\n\r\n", 0, BadFieldLine, 0},
		{"junk between", get + "\n" + get, 1, BetweenRequests, 1},
		{"chunk bare LF", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", 0, BadChunkFraming, 0},
		{"chunk data without CRLF", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n", 0, BadChunkFraming, 0},
		{"chunk size 0x", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n", 0, BadChunkSize, 0},
		{"chunk size empty", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n;x\r\n", 0, BadChunkSize, 0},
		{"chunk size huge", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFF\r\n", 0, BadChunkSize, 0},
		{"trailer bare LF", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\n\r\n", 0, BadChunkFraming, 0},
		{"head too large", "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 70<<10) + "\r\n\r\n", 0, HeadTooLarge, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, split := range []int{0, 1, 2, 3, 7} {
				ends, bad, badReq, _ := run([]byte(tc.in), split)
				if len(ends) != tc.ends || bad != tc.bad || (bad != OK && badReq != tc.badReq) {
					t.Fatalf("split %d: %d requests, verdict %v on request %d; want %d, %v on %d", split, len(ends), bad, badReq, tc.ends, tc.bad, tc.badReq)
				}
			}
		})
	}
}

// goEnds parses s with net/http's ReadRequest, reading each body to its end, and returns
// the end offset of each request it parses cleanly, in order, until the first error.
func goEnds(s []byte) []int64 {
	var ends []int64
	r := bytes.NewReader(s)
	br := bufio.NewReader(r)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return ends
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return ends
		}
		ends = append(ends, int64(len(s))-int64(r.Len()+br.Buffered()))
	}
}

// shapeIn reports whether raw (one request as net/http delimited it) visibly has a shape Go
// tolerates and the guard refuses (the guard's verdict on a request Go parsed cleanly must be
// one of these).
func shapeIn(raw []byte, why Reason) bool {
	low := bytes.ToLower(raw)
	head := low
	if i := bytes.Index(low, []byte("\r\n\r\n")); i >= 0 {
		head = low[:i+2]
	}
	bareLF := bytes.IndexByte(low, '\n') == 0 || bytes.Contains(bytes.ReplaceAll(low, []byte("\r\n"), nil), []byte("\n"))
	switch why {
	case BareLF, BadChunkFraming:
		return bareLF || why == BadChunkFraming && bytes.Contains(low, []byte("\r\n\r\n"))
	case BareCR:
		return bytes.Contains(bytes.ReplaceAll(low, []byte("\r\n"), nil), []byte("\r"))
	case ObsFold:
		return bytes.Contains(low, []byte("\n ")) || bytes.Contains(low, []byte("\n\t"))
	case CLAndTE:
		return bytes.Contains(head, []byte("\ncontent-length")) && bytes.Contains(head, []byte("\ntransfer-encoding"))
	case DuplicateCL:
		return bytes.Count(head, []byte("\ncontent-length")) >= 2
	case TENotChunked:
		// net/http ignores Transfer-Encoding before HTTP/1.1 (and refuses it otherwise).
		return bytes.Contains(head, []byte("\ntransfer-encoding"))
	case TEInHTTP10:
		line, _, _ := bytes.Cut(head, []byte("\r\n"))
		return bytes.Contains(head, []byte("\ntransfer-encoding")) && !bytes.HasSuffix(line, []byte(" http/1.1"))
	case BadChunkSize:
		return true // sizes over 2^62: Go would wait for them
	case BadFieldLine:
		// ReadRequest keeps such a name; the server refuses it (httpguts.ValidHeaderFieldName).
		for _, l := range bytes.Split(head, []byte("\n"))[1:] {
			name, _, ok := bytes.Cut(l, []byte(":"))
			if len(bytes.TrimRight(l, "\r")) > 0 && (!ok || len(name) == 0 || bytes.ContainsAny(name, " \t\r")) {
				return true
			}
		}
	}
	return false
}

// FuzzGuard checks that the guard never panics, that its verdict and request boundaries do
// not depend on how the stream is split into reads, and that it agrees with net/http's
// ReadRequest: every request both accept ends at the same byte, and a request Go parses
// cleanly that the guard refuses visibly has a smuggling shape (bare LF or CR, obs-fold,
// Content-Length with Transfer-Encoding, Content-Length twice, Transfer-Encoding before
// HTTP/1.1).
func FuzzGuard(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nabcdeGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nabcde\r\n0\r\nX-T: 1\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
		"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\nabcd",
		"GET / HTTP/1.1\nHost: x\n\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\nabcd\n0\n\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x4\r\nabcd\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		f.Add(uint8(0), []byte(s))
		f.Add(uint8(3), []byte(s))
	}
	f.Fuzz(func(t *testing.T, split uint8, s []byte) {
		ends, bad, badReq, badBody := run(s, 0)
		e2, b2, r2, bb2 := run(s, int(split%32)+1)
		if len(ends) != len(e2) || bad != b2 || r2 != badReq || bb2 != badBody {
			t.Fatalf("split %d changes the result: %v %v %d / %v %v %d", split%32+1, ends, bad, badReq, e2, b2, r2)
		}
		for i := range ends {
			if ends[i] != e2[i] {
				t.Fatalf("split %d changes the boundaries: %v / %v", split%32+1, ends, e2)
			}
		}
		gos := goEnds(s)
		start := int64(0)
		for k, goEnd := range gos {
			if k < len(ends) {
				if ends[k] != goEnd {
					t.Fatalf("request %d: the guard ends it at %d, net/http at %d (guard %v, net/http %v)", k, ends[k], goEnd, ends, gos)
				}
				start = goEnd
				continue
			}
			// net/http parsed request k cleanly; the guard did not accept it.
			if bad == OK {
				t.Fatalf("request %d: net/http parsed it (ends %v), the guard neither accepted nor refused it (ends %v)", k, gos, ends)
			}
			if badReq == int64(k) && !shapeIn(s[start:goEnd], bad) {
				t.Fatalf("request %d (%q): refused as %q, which net/http parsed cleanly", k, s[start:goEnd], bad)
			}
			break
		}
	})
}
