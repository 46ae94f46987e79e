package chain

import (
	"crypto/sha256"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestDigestAndTokenDigest(t *testing.T) {
	for _, s := range []string{"", "a", strings.Repeat("x", 5000), strings.Repeat("y", 70<<10)} {
		h := sha256.Sum256([]byte(s))
		want := b64.EncodeToString(h[:])
		if got := Digest(s); got != want {
			t.Fatalf("Digest(%d bytes) = %s, want %s", len(s), got, want)
		}
		for range 2 { // computed, then remembered
			if got := TokenDigest(s); got != want {
				t.Fatalf("TokenDigest(%d bytes) = %s, want %s", len(s), got, want)
			}
		}
	}
	// The cache stays bounded and stays right across being emptied.
	for i := range 3 * tokenDigestMax {
		s := "tok" + strconv.Itoa(i)
		if got := TokenDigest(s); got != Digest(s) {
			t.Fatalf("TokenDigest(%q) wrong", s)
		}
		tokenDigests.mu.RLock()
		n := len(tokenDigests.m)
		tokenDigests.mu.RUnlock()
		if n > tokenDigestMax {
			t.Fatalf("%d cached token digests, at most %d", n, tokenDigestMax)
		}
	}
}

// Encode writes what base64url(json.Marshal(r)) is, and ParseReceipt reads it back.
func TestReceiptEncode(t *testing.T) {
	r := &Receipt{
		V:                1,
		Chain:            "a.b,c.d",
		Tokens:           []string{strings.Repeat("t", 9000), "u.v.w", "<&>"},
		Countersignature: "x.y",
		Status:           200,
		BodySHA256:       Digest("body"),
	}
	for range 3 {
		got, err := r.Encode()
		if err != nil {
			t.Fatal(err)
		}
		js, _ := json.Marshal(r)
		if want := b64.EncodeToString(js); got != want {
			t.Fatalf("Encode differs from base64url(json.Marshal)")
		}
		back, err := ParseReceipt([]byte(got))
		if err != nil || !reflect.DeepEqual(back, r) {
			t.Fatalf("ParseReceipt(Encode) = %+v, %v", back, err)
		}
	}
}
