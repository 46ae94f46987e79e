package maa

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"strings"
	"testing"
)

func TestJWKRoundTrip(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	r, _ := rsa.GenerateKey(rand.Reader, 2048)
	ed, _, _ := ed25519.GenerateKey(rand.Reader)
	for _, pub := range []any{&ec.PublicKey, &ec384.PublicKey, &r.PublicKey, ed} {
		j, err := NewJWK(pub, "k")
		if err != nil {
			t.Fatal(err)
		}
		rdb, err := (&RuntimeData{Keys: []JWK{j}}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		rd, err := ParseRuntimeData(rdb)
		if err != nil {
			t.Fatalf("%T: %v", pub, err)
		}
		if !rd.HasKey(pub) {
			t.Fatalf("%T: key lost", pub)
		}
	}
}

func TestParseRuntimeDataErrors(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	j, _ := NewJWK(&ec.PublicKey, "k")
	good := string(mustJSON(t, j))
	cases := map[string]struct{ in, want string }{
		"not json":          {`{`, "not JSON"},
		"array":             {`[]`, "expected an object"},
		"no keys":           {`{}`, "no keys"},
		"empty keys":        {`{"keys":[]}`, "no keys"},
		"keys not an array": {`{"keys":{}}`, "expected an array"},
		"key not an object": {`{"keys":[1]}`, "expected a JWK object"},
		"kty not a string":  {`{"keys":[{"kty":1}]}`, "expected a UTF-8 string"},
		"point off curve":   {`{"keys":[{"kty":"EC","crv":"P-256","x":"` + strings.Repeat("A", 43) + `","y":"` + strings.Repeat("A", 43) + `"}]}`, "point"},
		"short rsa":         {`{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`, "2048"},
		"unknown kty":       {`{"keys":[{"kty":"oct","k":"AA"}]}`, "expected EC, RSA or OKP"},
		"claimed not str":   {`{"keys":[` + good + `],"claimed":{"image":1}}`, "expected a string"},
		"too many keys":     {`{"keys":[` + strings.Repeat(good+",", MaxRuntimeKeys) + good + `]}`, "at most"},
		"too large":         {`{"keys":[` + good + `],"pad":"` + strings.Repeat("x", MaxRuntimeDataSize) + `"}`, "at most"},
	}
	for name, tc := range cases {
		_, err := ParseRuntimeData([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, tc.want)
		}
	}
}

func TestDecodeBase64BothAlphabets(t *testing.T) {
	for in, want := range map[string]string{
		"-_8":  "\xfb\xff",
		"+/8":  "\xfb\xff",
		"-_8=": "\xfb\xff",
		"+/8=": "\xfb\xff",
		"aGk":  "hi",
	} {
		got, err := DecodeBase64(in)
		if err != nil || string(got) != want {
			t.Errorf("%q: got %q, %v", in, got, err)
		}
	}
	for _, bad := range []string{"+_8", "a b", "!"} {
		if _, err := DecodeBase64(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
