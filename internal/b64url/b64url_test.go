package b64url

import (
	"bytes"
	"testing"
)

// TestOnlyCanonical: of the encodings encoding/base64 accepts for one byte string, only the
// canonical one decodes.
func TestOnlyCanonical(t *testing.T) {
	ok := map[string][]byte{"": {}, "AA": {0}, "AAE": {0, 1}, "_-8": {0xff, 0xef}}
	for s, want := range ok {
		if got, err := DecodeString(s); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%q: %x %v", s, got, err)
		}
	}
	for _, s := range []string{"AB", "AAF", "AA==", "AA\n", "A\rA", "AA.", "+/8", "A"} {
		if _, err := DecodeString(s); err == nil {
			t.Errorf("%q decoded", s)
		}
		if _, err := Decode(make([]byte, 8), []byte(s)); err == nil {
			t.Errorf("Decode %q", s)
		}
	}
}
