package maapolicy

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Pos is a position in the policy text: 1-based line and column (columns count Unicode code
// points, not bytes).
type Pos struct {
	Line int
	Col  int
}

func (p Pos) String() string { return fmt.Sprintf("%d:%d", p.Line, p.Col) }

// ParseError is a syntax or limit error at a position in the policy text.
type ParseError struct {
	Pos Pos
	Msg string
}

func (e *ParseError) Error() string { return e.Pos.String() + ": " + e.Msg }

type tokKind int

const (
	tEOF tokKind = iota
	tIdent
	tString
	tNumber
	tPunct
)

type token struct {
	kind tokKind
	text string // identifier, number or punctuation as written; the decoded value of a string
	pos  Pos
}

// describe names a token the way an error message should show it.
func (t token) describe() string {
	switch t.kind {
	case tEOF:
		return "end of policy"
	case tString:
		s := t.text
		if utf8.RuneCountInString(s) > 40 {
			s = string([]rune(s)[:40]) + "..."
		}
		return fmt.Sprintf("string %q", s)
	case tNumber:
		return "number " + t.text
	case tIdent:
		return fmt.Sprintf("%q", t.text)
	}
	return fmt.Sprintf("%q", t.text)
}

// twoCharPunct are the operators of two characters; everything else is one character.
var twoCharPunct = []string{"==", "!=", "&&", "=>"}

const oneCharPunct = "=;{}[](),:."

type lexer struct {
	src  string
	off  int
	line int
	col  int
}

func (l *lexer) pos() Pos { return Pos{Line: l.line, Col: l.col} }

// advance moves past n bytes, keeping line and column.
func (l *lexer) advance(n int) {
	for i := 0; i < n; i++ {
		c := l.src[l.off]
		l.off++
		switch {
		case c == '\n':
			l.line++
			l.col = 1
		case c&0xC0 != 0x80: // not a UTF-8 continuation byte: a new code point
			l.col++
		}
	}
}

func (l *lexer) errf(p Pos, format string, args ...any) error {
	return &ParseError{Pos: p, Msg: fmt.Sprintf(format, args...)}
}

// lex splits src into tokens. It never reads past the end of src and stops at the first error.
func lex(src string) ([]token, error) {
	if !utf8.ValidString(src) {
		// Find the first invalid byte to report its position.
		l := &lexer{src: src, line: 1, col: 1}
		for l.off < len(src) {
			r, size := utf8.DecodeRuneInString(src[l.off:])
			if r == utf8.RuneError && size == 1 {
				return nil, l.errf(l.pos(), "invalid UTF-8: a policy must be UTF-8 text")
			}
			l.advance(size)
		}
	}
	l := &lexer{src: strings.TrimPrefix(src, "\uFEFF"), line: 1, col: 1}
	var toks []token
	for {
		// Skip whitespace and // comments.
		for l.off < len(l.src) {
			c := l.src[l.off]
			if c == ' ' || c == '\t' || c == '\n' || c == '\r' {
				l.advance(1)
				continue
			}
			if strings.HasPrefix(l.src[l.off:], "//") {
				end := strings.IndexByte(l.src[l.off:], '\n')
				if end < 0 {
					end = len(l.src) - l.off
				}
				l.advance(end)
				continue
			}
			break
		}
		p := l.pos()
		if l.off >= len(l.src) {
			return append(toks, token{kind: tEOF, pos: p}), nil
		}
		rest := l.src[l.off:]
		c := rest[0]
		switch {
		case isIdentStart(c):
			n := 1
			for n < len(rest) && isIdentPart(rest[n]) {
				n++
			}
			toks = append(toks, token{kind: tIdent, text: rest[:n], pos: p})
			l.advance(n)
		case isDigit(c) || (c == '-' && len(rest) > 1 && isDigit(rest[1])):
			n := 1
			for n < len(rest) && (isDigit(rest[n]) || rest[n] == '.') {
				n++
			}
			if n < len(rest) && isIdentStart(rest[n]) {
				return nil, l.errf(p, "malformed number %q: expected digits only", rest[:n+1])
			}
			toks = append(toks, token{kind: tNumber, text: rest[:n], pos: p})
			l.advance(n)
		case c == '"':
			s, n, err := l.lexString(rest, p)
			if err != nil {
				return nil, err
			}
			toks = append(toks, token{kind: tString, text: s, pos: p})
			l.advance(n)
		default:
			matched := false
			for _, op := range twoCharPunct {
				if strings.HasPrefix(rest, op) {
					toks = append(toks, token{kind: tPunct, text: op, pos: p})
					l.advance(2)
					matched = true
					break
				}
			}
			if matched {
				continue
			}
			if strings.IndexByte(oneCharPunct, c) >= 0 {
				toks = append(toks, token{kind: tPunct, text: rest[:1], pos: p})
				l.advance(1)
				continue
			}
			r, _ := utf8.DecodeRuneInString(rest)
			switch r {
			case '/':
				return nil, l.errf(p, "unexpected \"/\": comments start with \"//\"")
			case '&':
				return nil, l.errf(p, "unexpected \"&\": conditions are joined with \"&&\"")
			case '|':
				return nil, l.errf(p, "unexpected \"|\": only \"&&\" is supported between conditions")
			case '!':
				return nil, l.errf(p, "unexpected \"!\": expected \"!=\" in a value comparison")
			}
			return nil, l.errf(p, "unexpected character %q", r)
		}
	}
}

// lexString reads a double-quoted string at the start of s. Escapes: \" and \\ only. Strings
// end on the same line.
func (l *lexer) lexString(s string, p Pos) (string, int, error) {
	var b strings.Builder
	col := p.Col + 1
	for i := 1; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '"':
			return b.String(), i + 1, nil
		case r == '\\':
			if i+1 >= len(s) {
				return "", 0, l.errf(Pos{p.Line, col}, "unterminated string: expected a closing \"")
			}
			switch s[i+1] {
			case '"', '\\':
				b.WriteByte(s[i+1])
				i += 2
				col += 2
				continue
			}
			e, _ := utf8.DecodeRuneInString(s[i+1:])
			return "", 0, l.errf(Pos{p.Line, col}, "unknown escape \\%c in string: only \\\" and \\\\ are supported", e)
		case r == '\n' || r == '\r':
			return "", 0, l.errf(Pos{p.Line, col}, "unterminated string: expected a closing \" before the end of the line")
		case r < 0x20 || r == 0x7f:
			return "", 0, l.errf(Pos{p.Line, col}, "control character %U in string", r)
		}
		b.WriteRune(r)
		i += size
		col++
	}
	return "", 0, l.errf(p, "unterminated string: expected a closing \"")
}

func isIdentStart(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdentPart(c byte) bool { return isIdentStart(c) || isDigit(c) }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
