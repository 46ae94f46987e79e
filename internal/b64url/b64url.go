// Package b64url is the one canonical base64url decoder of the protocol: unpadded base64url
// (RFC 4648 §5) whose unused trailing bits are zero, with no padding, line breaks or other
// bytes. encoding/base64 alone accepts non-zero spare bits and skips CR and LF, so one byte
// string would have several encodings; a verifier that keys, stores or compares encoded
// values (replay sets, receipts indexed by hash) would then see different things.
package b64url

import (
	"encoding/base64"
	"errors"
	"strings"
)

var strict = base64.RawURLEncoding.Strict()

// ErrNotCanonical is returned for anything but the canonical encoding.
var ErrNotCanonical = errors.New("not canonical unpadded base64url (RFC 4648 §5, unused bits zero)")

// DecodeString decodes s, refusing every non-canonical encoding.
func DecodeString(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n=") {
		return nil, ErrNotCanonical
	}
	b, err := strict.DecodeString(s)
	if err != nil {
		return nil, ErrNotCanonical
	}
	return b, nil
}

// Decode decodes src into dst (at least base64.RawURLEncoding.DecodedLen(len(src)) bytes),
// refusing every non-canonical encoding.
func Decode(dst, src []byte) (int, error) {
	for _, c := range src {
		if c == '\r' || c == '\n' || c == '=' {
			return 0, ErrNotCanonical
		}
	}
	n, err := strict.Decode(dst, src)
	if err != nil {
		return 0, ErrNotCanonical
	}
	return n, nil
}
