// Package httpframe is the HTTP/1.1 request-framing guard of the proxy's HTTP listeners. Go's
// net/http server applies RFC 9112 §6.3 before a handler runs (it drops Content-Length when
// Transfer-Encoding is present, folds obs-fold lines, accepts bare LF in the head, merges
// identical Content-Length fields), so a handler cannot see that a request had a shape on
// which two HTTP implementations may disagree about where it ends. The guard follows the
// framing of the plaintext byte stream itself, as the server reads it (head, then the body by
// Content-Length or chunked framing, then the next pipelined request), and records the first
// request whose framing is a smuggling shape; the handler wrapper refuses that request and
// every later one on the connection (see Conn and docs/proxy-config.md).
package httpframe

import (
	"bytes"
	"encoding/binary"
)

// Reason says which smuggling shape the guard found; OK is none.
type Reason uint8

// Reasons, in no particular order.
const (
	OK Reason = iota
	CLAndTE
	DuplicateCL
	BadCL
	TENotChunked
	TEInHTTP10
	ObsFold
	BareLF
	BareCR
	BadFieldLine
	HeadTooLarge
	BadChunkFraming
	BadChunkSize
	BetweenRequests
	Disagreement
)

var reasonText = [...]string{
	OK:              "no smuggling shape",
	CLAndTE:         "both Content-Length and Transfer-Encoding",
	DuplicateCL:     "more than one Content-Length field",
	BadCL:           "Content-Length is not one decimal number",
	TENotChunked:    "Transfer-Encoding other than exactly one \"chunked\"",
	TEInHTTP10:      "Transfer-Encoding in a request older than HTTP/1.1",
	ObsFold:         "obs-fold (a header line starting with whitespace)",
	BareLF:          "bare LF in the request head",
	BareCR:          "bare CR in the request head",
	BadFieldLine:    "malformed header line (no colon, or whitespace before it)",
	HeadTooLarge:    "request head larger than the header limit",
	BadChunkFraming: "chunked framing without CRLF (bare LF or CR, or chunk data not followed by CRLF)",
	BadChunkSize:    "invalid chunk size",
	BetweenRequests: "bytes other than CRLF between requests",
	Disagreement:    "the server's request boundaries differ from the framing guard's",
}

func (r Reason) String() string {
	if int(r) < len(reasonText) {
		return reasonText[r]
	}
	return "unknown framing reason"
}

type state uint8

const (
	sIdle         state = iota // between requests: CRLF or a request line
	sIdleLF                    // CR between requests
	sLine                      // request line
	sLineLF                    // CR at the end of the request line
	sFieldStart                // first byte of a header line (or the CR of the empty line)
	sName                      // field name
	sCL                        // Content-Length value
	sTE                        // Transfer-Encoding value
	sValue                     // any other field value
	sFieldLF                   // CR at the end of a field line
	sHeadLF                    // CR of the empty line that ends the head
	sBody                      // Content-Length body
	sChunkSize                 // chunk-size
	sChunkExt                  // whitespace and chunk extensions after the size
	sChunkLF                   // CR at the end of the chunk-size line
	sChunkData                 // chunk data
	sChunkDataCR               // CR after chunk data
	sChunkDataLF               // LF after chunk data
	sTrailerStart              // first byte of a trailer line
	sTrailer                   // trailer line
	sTrailerLF                 // CR at the end of a trailer line
	sTrailerEndLF              // CR of the empty line that ends the trailer section
	sPoisoned                  // a shape was found: nothing more is parsed
)

const (
	nameCL = "content-length"
	nameTE = "transfer-encoding"
	// maxChunkLine is Go's limit on a chunk-size line (net/http/internal.maxLineLength).
	maxChunkLine = 4096
	// maxChunkDigits is Go's limit on the digits of a chunk size; maxChunk bounds its value.
	maxChunkDigits = 16
	maxChunk       = 1 << 62
	// maxCLDigits: Content-Length below 10^18.
	maxCLDigits = 18
	// http11 is "HTTP/1.1" as the last 8 bytes of a request line, big-endian.
	http11 = uint64('H')<<56 | uint64('T')<<48 | uint64('T')<<40 | uint64('P')<<32 | uint64('/')<<24 | uint64('1')<<16 | uint64('.')<<8 | uint64('1')
)

// lineRing is how many recent request-line lengths the guard remembers (for the handler's
// cross-check of request boundaries). The server's read-ahead is one bufio buffer (4 KiB), so
// more than 16 requests ahead is possible only with requests of under 256 bytes; those are then
// not cross-checked, only counted.
const lineRing = 16

// guard is the framing state machine. feed is called with the bytes of the stream in order,
// by one goroutine at a time; the verdict fields are read by others through atomics (Conn).
type guard struct {
	st    state
	max   int   // head (and trailer section) limit, bytes
	req   int64 // index of the request being parsed; -1 before the first
	head  int   // bytes of the current head or trailer section
	off   int64 // bytes fed before the current call
	line  int   // length of the request line (without CRLF)
	tail  uint64
	ninth byte // the byte before the last 8 of the request line

	http11         bool
	haveCL, haveTE bool
	cl             uint64
	digits         int
	phase          uint8 // value parsing: 0 leading OWS, 1 token, 2 trailing OWS
	match          int
	nameLen        int
	maybeCL        bool
	maybeTE        bool
	size           uint64 // body bytes left (Content-Length) or chunk bytes left
	ext            int    // length of the chunk-size line

	// verdict, written once by fail.
	bad     Reason
	badReq  int64
	badBody bool // found inside a body (chunked framing), not in a head

	// lines, if set, receives (request index, request-line length) of each request.
	lines func(req int64, n int)
	// ends, if set, receives the stream offset just past each complete request (tests).
	ends func(req int64, off int64)
}

func (g *guard) init(maxHead int) {
	g.st, g.max, g.req = sIdle, maxHead, -1
}

func (g *guard) fail(r Reason, req int64, body bool) {
	g.st = sPoisoned
	g.bad, g.badReq, g.badBody = r, req, body
}

func (g *guard) done(off int64) {
	if g.ends != nil {
		g.ends(g.req, off)
	}
	g.st = sIdle
}

func isHex(b byte) (uint64, bool) {
	switch {
	case b >= '0' && b <= '9':
		return uint64(b - '0'), true
	case b >= 'a' && b <= 'f':
		return uint64(b-'a') + 10, true
	case b >= 'A' && b <= 'F':
		return uint64(b-'A') + 10, true
	}
	return 0, false
}

// skipLine consumes the bytes of p before the line's CR. It returns how many, and whether it
// found the CR; a LF before it is a bare LF (returned as its index with bad set).
func skipLine(p []byte) (n int, cr bool, bad bool) {
	c := bytes.IndexByte(p, '\r')
	seg := p
	if c >= 0 {
		seg = p[:c]
	}
	if l := bytes.IndexByte(seg, '\n'); l >= 0 {
		return l, false, true
	}
	if c < 0 {
		return len(p), false, false
	}
	return c, true, false
}

// headLine consumes the rest of a field value or trailer line up to its CR, counting it against
// the head limit; at the CR it moves to next. A bare LF fails the request with bareLF. It returns
// where parsing goes on, and true if the guard failed (parsing stops there).
func (g *guard) headLine(p []byte, i int, bareLF Reason, inBody bool, next state) (int, bool) {
	n, cr, bad := skipLine(p[i:])
	if bad {
		g.fail(bareLF, g.req, inBody)
		return i + n, true
	}
	g.head += n
	i += n
	if g.head > g.max {
		g.fail(HeadTooLarge, g.req, inBody)
		return i, true
	}
	if cr {
		g.st = next
		g.head++
		i++
	}
	return i, false
}

// feed parses p, the next bytes of the stream. It returns len(p), or the index of the byte at
// which it found a smuggling shape (g.bad is then set, and the guard parses nothing more).
//
// Each phase of a request (between requests, request line, header field start, name and
// values, end of head, Content-Length body, chunk sizes and extensions, chunk data, trailer
// section) is a method over the same state enum: it consumes p from i, the byte-at-a-time
// phases in a loop of their own while the state stays theirs, and returns where parsing goes
// on, and stop when the guard failed (feed then returns that index).
func (g *guard) feed(p []byte) int {
	defer func() { g.off += int64(len(p)) }()
	for i := 0; i < len(p); {
		var stop bool
		switch g.st {
		case sPoisoned:
			return len(p)
		case sIdle, sIdleLF:
			i, stop = g.between(p, i)
		case sLine, sLineLF:
			i, stop = g.requestLine(p, i)
		case sFieldStart:
			i, stop = g.fieldStart(p, i)
		case sName:
			i, stop = g.fieldName(p, i)
		case sCL:
			i, stop = g.contentLength(p, i)
		case sTE:
			i, stop = g.transferEncoding(p, i)
		case sValue:
			i, stop = g.headLine(p, i, BareLF, false, sFieldLF)
		case sFieldLF:
			i, stop = g.fieldEnd(p, i)
		case sHeadLF:
			i, stop = g.endHead(p, i)
		case sBody:
			i = g.body(p, i)
		case sChunkSize:
			i, stop = g.chunkSize(p, i)
		case sChunkExt:
			i, stop = g.chunkExt(p, i)
		case sChunkLF, sChunkData, sChunkDataCR, sChunkDataLF:
			i, stop = g.chunk(p, i)
		case sTrailerStart, sTrailer, sTrailerLF, sTrailerEndLF:
			i, stop = g.trailer(p, i)
		}
		if stop {
			return i
		}
	}
	return len(p)
}

// between is the phase between requests: CRLF pairs, then the first byte of a request line
// (not consumed), which starts the next request.
func (g *guard) between(p []byte, i int) (int, bool) {
	b := p[i]
	if g.st == sIdleLF {
		if b != '\n' {
			g.fail(BetweenRequests, g.req+1, false)
			return i, true
		}
		g.st = sIdle
		return i + 1, false
	}
	switch b {
	case '\r':
		g.st = sIdleLF
		return i + 1, false
	case '\n':
		g.fail(BetweenRequests, g.req+1, false)
		return i, true
	}
	g.req++
	g.st, g.head, g.line, g.tail, g.ninth = sLine, 0, 0, 0, 0
	g.haveCL, g.haveTE, g.cl, g.http11 = false, false, 0, false
	return i, false
}

// requestLine is the request line and its CRLF; it remembers the line's last 9 bytes to tell
// HTTP/1.1 from older versions.
func (g *guard) requestLine(p []byte, i int) (int, bool) {
	if g.st == sLineLF {
		if p[i] != '\n' {
			g.fail(BareCR, g.req, false)
			return i, true
		}
		g.http11 = g.line > 9 && g.tail == http11 && g.ninth == ' '
		if g.lines != nil {
			g.lines(g.req, g.line)
		}
		g.st = sFieldStart
		g.head++
		return i + 1, false
	}
	n, cr, bad := skipLine(p[i:])
	if bad {
		g.fail(BareLF, g.req, false)
		return i + n, true
	}
	if seg := p[i : i+n]; len(seg) >= 9 {
		g.ninth, g.tail = seg[len(seg)-9], binary.BigEndian.Uint64(seg[len(seg)-8:])
	} else {
		for _, c := range seg {
			g.ninth = byte(g.tail >> 56)
			g.tail = g.tail<<8 | uint64(c)
		}
	}
	g.line += n
	g.head += n
	i += n
	if g.head > g.max {
		g.fail(HeadTooLarge, g.req, false)
		return i, true
	}
	if cr {
		g.st = sLineLF
		i++
		g.head++
	}
	return i, false
}

// fieldEnd is the LF ending a header field line.
func (g *guard) fieldEnd(p []byte, i int) (int, bool) {
	if p[i] != '\n' {
		g.fail(BareCR, g.req, false)
		return i, true
	}
	g.st = sFieldStart
	g.head++
	return i + 1, false
}

// fieldStart is the first byte of a header line, or the CR of the empty line ending the head.
func (g *guard) fieldStart(p []byte, i int) (int, bool) {
	switch p[i] {
	case '\r':
		g.st = sHeadLF
	case '\n':
		g.fail(BareLF, g.req, false)
		return i, true
	case ' ', '\t':
		g.fail(ObsFold, g.req, false)
		return i, true
	case ':':
		g.fail(BadFieldLine, g.req, false)
		return i, true
	default:
		g.st, g.nameLen, g.maybeCL, g.maybeTE = sName, 0, true, true
		return i, false // the byte is the name's first
	}
	g.head++
	return i + 1, false
}

// fieldName is a field name up to its colon, which picks how the value is parsed.
func (g *guard) fieldName(p []byte, i int) (int, bool) {
	for ; i < len(p); i++ {
		b := p[i]
		g.head++
		switch b {
		case ':':
			switch {
			case g.maybeCL && g.nameLen == len(nameCL):
				if g.haveCL {
					g.fail(DuplicateCL, g.req, false)
					return i, true
				}
				g.haveCL, g.st, g.phase, g.digits = true, sCL, 0, 0
			case g.maybeTE && g.nameLen == len(nameTE):
				if g.haveTE {
					g.fail(TENotChunked, g.req, false)
					return i, true
				}
				g.haveTE, g.st, g.phase, g.match = true, sTE, 0, 0
			default:
				g.st = sValue
			}
			if g.head > g.max {
				g.fail(HeadTooLarge, g.req, false)
				return i + 1, true
			}
			return i + 1, false
		case ' ', '\t', '\r', '\n':
			g.fail(BadFieldLine, g.req, false)
			return i, true
		}
		lb := b | 0x20 // lower case for letters; '-' and digits unchanged
		if g.maybeCL && (g.nameLen >= len(nameCL) || nameCL[g.nameLen] != lb) {
			g.maybeCL = false
		}
		if g.maybeTE && (g.nameLen >= len(nameTE) || nameTE[g.nameLen] != lb) {
			g.maybeTE = false
		}
		g.nameLen++
		if g.head > g.max {
			g.fail(HeadTooLarge, g.req, false)
			return i + 1, true
		}
	}
	return i, false
}

// contentLength is a Content-Length value up to its CR: one decimal number, optional
// whitespace around it.
func (g *guard) contentLength(p []byte, i int) (int, bool) {
	for ; i < len(p); i++ {
		b := p[i]
		g.head++
		switch {
		case b == ' ' || b == '\t':
			if g.phase == 1 {
				g.phase = 2
			}
			if g.head > g.max {
				g.fail(HeadTooLarge, g.req, false)
				return i, true
			}
		case b >= '0' && b <= '9':
			if g.phase == 2 || g.digits == maxCLDigits {
				g.fail(BadCL, g.req, false)
				return i, true
			}
			g.phase = 1
			g.digits++
			g.cl = g.cl*10 + uint64(b-'0')
		case b == '\r' && g.digits > 0:
			g.st = sFieldLF
			return i + 1, false
		case b == '\n':
			g.fail(BareLF, g.req, false)
			return i, true
		default:
			g.fail(BadCL, g.req, false)
			return i, true
		}
	}
	return i, false
}

// transferEncoding is a Transfer-Encoding value up to its CR: exactly "chunked" (any case),
// optional whitespace around it.
func (g *guard) transferEncoding(p []byte, i int) (int, bool) {
	for ; i < len(p); i++ {
		b := p[i]
		g.head++
		switch {
		case b == ' ' || b == '\t':
			if g.phase == 1 {
				if g.match != len("chunked") {
					g.fail(TENotChunked, g.req, false)
					return i, true
				}
				g.phase = 2
			}
			if g.head > g.max {
				g.fail(HeadTooLarge, g.req, false)
				return i, true
			}
		case b == '\r' && g.match == len("chunked"):
			g.st = sFieldLF
			return i + 1, false
		case b == '\n':
			g.fail(BareLF, g.req, false)
			return i, true
		case g.phase < 2 && g.match < len("chunked") && b|0x20 == "chunked"[g.match]:
			g.phase = 1
			g.match++
		default:
			g.fail(TENotChunked, g.req, false)
			return i, true
		}
	}
	return i, false
}

// endHead is the LF of the empty line ending the head: the framing fields are judged together
// and pick the body's framing.
func (g *guard) endHead(p []byte, i int) (int, bool) {
	if p[i] != '\n' {
		g.fail(BareCR, g.req, false)
		return i, true
	}
	switch {
	case g.haveCL && g.haveTE:
		g.fail(CLAndTE, g.req, false)
		return i, true
	case g.haveTE && !g.http11:
		g.fail(TEInHTTP10, g.req, false)
		return i, true
	case g.haveTE:
		g.st, g.size, g.digits, g.ext = sChunkSize, 0, 0, 0
	case g.cl > 0:
		g.st, g.size = sBody, g.cl
	default:
		g.done(g.off + int64(i+1))
	}
	return i + 1, false
}

// body skips a Content-Length body.
func (g *guard) body(p []byte, i int) int {
	n := uint64(len(p) - i)
	if n >= g.size {
		i += int(g.size)
		g.size = 0
		g.done(g.off + int64(i))
		return i
	}
	g.size -= n
	return len(p)
}

// chunk is the rest of the chunked body: the LF ending a chunk-size line, chunk data and its
// CRLF; after the last (zero-size) chunk the trailer section starts.
func (g *guard) chunk(p []byte, i int) (int, bool) {
	b := p[i]
	switch g.st {
	case sChunkLF:
		if b != '\n' {
			g.fail(BadChunkFraming, g.req, true)
			return i, true
		}
		if g.size == 0 {
			g.st, g.head = sTrailerStart, 0
		} else {
			g.st = sChunkData
		}
		return i + 1, false
	case sChunkData:
		n := uint64(len(p) - i)
		if n >= g.size {
			i += int(g.size)
			g.size = 0
			g.st = sChunkDataCR
			return i, false
		}
		g.size -= n
		return len(p), false
	case sChunkDataCR:
		if b != '\r' {
			g.fail(BadChunkFraming, g.req, true)
			return i, true
		}
		g.st = sChunkDataLF
		return i + 1, false
	}
	// sChunkDataLF
	if b != '\n' {
		g.fail(BadChunkFraming, g.req, true)
		return i, true
	}
	g.st, g.size, g.digits, g.ext = sChunkSize, 0, 0, 0
	return i + 1, false
}

// chunkSize is a chunk size (hex digits, bounded) up to the byte ending it.
func (g *guard) chunkSize(p []byte, i int) (int, bool) {
	for ; i < len(p); i++ {
		b := p[i]
		g.ext++
		if v, ok := isHex(b); ok {
			if g.digits == maxChunkDigits || g.size > maxChunk>>4 {
				g.fail(BadChunkSize, g.req, true)
				return i, true
			}
			g.digits++
			g.size = g.size<<4 | v
			continue
		}
		if g.digits == 0 {
			g.fail(BadChunkSize, g.req, true)
			return i, true
		}
		switch b {
		case ' ', '\t', ';':
			g.st = sChunkExt
		case '\r':
			g.st = sChunkLF
		case '\n':
			g.fail(BadChunkFraming, g.req, true)
			return i, true
		default:
			g.fail(BadChunkSize, g.req, true)
			return i, true
		}
		return i + 1, false
	}
	return i, false
}

// chunkExt is the whitespace and chunk extensions after a chunk size, up to the CR; the whole
// chunk-size line is bounded as Go bounds it.
func (g *guard) chunkExt(p []byte, i int) (int, bool) {
	for ; i < len(p); i++ {
		g.ext++
		if g.ext > maxChunkLine {
			g.fail(BadChunkSize, g.req, true)
			return i, true
		}
		switch p[i] {
		case '\r':
			g.st = sChunkLF
			return i + 1, false
		case '\n':
			g.fail(BadChunkFraming, g.req, true)
			return i, true
		}
	}
	return i, false
}

// trailer is the trailer section after the last chunk: field lines (skipped, bounded like a
// head) and the empty line that ends the request.
func (g *guard) trailer(p []byte, i int) (int, bool) {
	b := p[i]
	switch g.st {
	case sTrailerStart:
		g.head++
		switch b {
		case '\r':
			g.st = sTrailerEndLF
		case '\n':
			g.fail(BadChunkFraming, g.req, true)
			return i, true
		case ' ', '\t':
			g.fail(ObsFold, g.req, true)
			return i, true
		default:
			g.st = sTrailer
		}
		return i + 1, false
	case sTrailer:
		return g.headLine(p, i, BadChunkFraming, true, sTrailerLF)
	}
	// sTrailerLF, sTrailerEndLF
	if b != '\n' {
		g.fail(BadChunkFraming, g.req, true)
		return i, true
	}
	if g.st == sTrailerLF {
		g.st = sTrailerStart
	} else {
		g.done(g.off + int64(i+1))
	}
	return i + 1, false
}
