package chain

import (
	"crypto/sha256"
	"strings"
	"testing"
)

// TestStreamDigestVector is the vector of docs/protocol.md section 11, computed from the page
// (with Python's hashlib), not from this code.
func TestStreamDigestVector(t *testing.T) {
	body := sha256.Sum256([]byte("hello"))
	tr := TrailersDigest(map[string][]string{
		"X-Count":                      {"1"},
		"Grpc-Status":                  {"0"},
		"grpc-message":                 {""},
		"Countersign-Countersignature": {"not covered"},
	})
	if got := b64.EncodeToString(tr[:]); got != "X3Bde8gruyB8rR3kT8z8-MGChKPPnhCtJvlARKrlXxo" {
		t.Errorf("H(T) = %s", got)
	}
	rb := sha256.Sum256([]byte("req"))
	d := StreamResponseDigest(200, body[:], tr[:], b64.EncodeToString(rb[:]))
	if got := b64.EncodeToString(d[:]); got != "T57cgnTErC-BQTWF61dcneRigAkzZh8a0a8HEp-0KBs" {
		t.Errorf("stream digest = %s", got)
	}
	d = StreamResponseDigest(200, body[:], tr[:], "-")
	if got := b64.EncodeToString(d[:]); got != "AGC4XQaNn_-2CLjh8621cL3yIt1KWsyzDLQ8iHDRn0Y" {
		t.Errorf("stream digest with RB \"-\" = %s", got)
	}
	if d == ResponseDigest(200, body[:]) {
		t.Error("the stream digest equals the buffered one")
	}
}

func TestReceiptV2Members(t *testing.T) {
	base := `{"v":%s,"chain":"a.b","tokens":["x.y.z"],"countersignature":"c.d","status":200,"bodySha256":"47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"%s}`
	sum := `47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU`
	for _, c := range []struct {
		v, extra string
		ok       bool
	}{
		{"1", "", true},
		{"2", `,"trailersSha256":"` + sum + `","requestBody":"-"`, true},
		{"2", `,"trailersSha256":"` + sum + `","requestBody":"` + sum + `"`, true},
		{"1", `,"trailersSha256":"` + sum + `","requestBody":"-"`, false}, // v1 with stream members
		{"2", "", false}, // v2 without them
		{"2", `,"trailersSha256":"` + sum + `"`, false},
		{"2", `,"trailersSha256":"x","requestBody":"-"`, false},
		{"2", `,"trailersSha256":"` + sum + `","requestBody":"--"`, false},
		{"2", `,"trailersSha256":"` + sum + `","requestBody":"-","requestbody":"-"`, false},
		{"3", `,"trailersSha256":"` + sum + `","requestBody":"-"`, false},
	} {
		js := strings.Replace(strings.Replace(base, "%s", c.v, 1), "%s", c.extra, 1)
		_, err := ParseReceipt([]byte(js))
		if (err == nil) != c.ok {
			t.Errorf("%s: err %v, want ok %v", js, err, c.ok)
		}
	}
}

// FuzzParseReceipt: ParseReceipt never panics, and what it accepts re-encodes to a receipt it
// accepts again with the same members (v1 and v2, docs/protocol.md sections 9 and 11).
func FuzzParseReceipt(f *testing.F) {
	sum := `47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU`
	f.Add([]byte(`{"v":1,"chain":"a.b","tokens":["x.y.z"],"countersignature":"c.d","status":200,"bodySha256":"` + sum + `"}`))
	f.Add([]byte(`{"v":2,"chain":"a.b","tokens":["x.y.z"],"countersignature":"c.d","status":200,"bodySha256":"` + sum + `","trailersSha256":"` + sum + `","requestBody":"-"}`))
	f.Add([]byte(`{"v":2,"chain":"a.b","tokens":["x.y.z"],"countersignature":"c.d","status":200,"bodySha256":"` + sum + `","trailersSha256":"` + sum + `","requestBody":"` + sum + `","v":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseReceipt(b)
		if err != nil {
			return
		}
		enc, err := r.Encode()
		if err != nil {
			t.Fatal(err)
		}
		r2, err := ParseReceipt([]byte(enc))
		if err != nil {
			t.Fatalf("re-encoded receipt refused: %v", err)
		}
		if r2.V != r.V || r2.RequestBody != r.RequestBody || r2.TrailersSHA256 != r.TrailersSHA256 || r2.BodySHA256 != r.BodySHA256 {
			t.Fatalf("round trip changed the receipt: %+v vs %+v", r, r2)
		}
	})
}
