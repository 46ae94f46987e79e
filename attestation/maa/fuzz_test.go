package maa

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"testing"

	"github.com/countersign/countersign/internal/fuzzcorpus"
)

func runtimeSeeds(t testing.TB) [][]any {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	j, _ := NewJWK(&k.PublicKey, "tls")
	good, _ := (&RuntimeData{Keys: []JWK{j}, Claimed: map[string]string{"image": "sha256:00"}}).Marshal()
	return [][]any{
		{good},
		{[]byte(`{"keys":[]}`)},
		{[]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}`)},
		{[]byte(`{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`)},
		{[]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`)},
		{[]byte(`{"keys":{"kty":"EC"}}`)},
		{[]byte(`{"keys":[{"kty":5}]}`)},
		{[]byte(`{"keys":[` + string(mustJSON(t, j)) + `],"claimed":{"a":1}}`)},
		{[]byte(`[]`)}, {[]byte(`null`)}, {[]byte(``)}, {[]byte(`{"keys":[` + string(mustJSON(t, j)) + `]} trailing`)},
	}
}

func mustJSON(t testing.TB, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func FuzzParseRuntimeData(f *testing.F) {
	seeds := runtimeSeeds(f)
	if *fuzzcorpus.Update {
		if err := fuzzcorpus.Write("FuzzParseRuntimeData", seeds...); err != nil {
			f.Fatal(err)
		}
	}
	for _, s := range seeds {
		f.Add(s[0].([]byte))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rd, err := ParseRuntimeData(b)
		if err != nil {
			return
		}
		// Whatever parses has at least one key, every key decodes, and re-encoding and
		// re-parsing gives the same keys.
		if len(rd.Keys) == 0 || len(rd.PublicKeys()) != len(rd.Keys) {
			t.Fatalf("parsed runtime data with %d keys, %d decodable", len(rd.Keys), len(rd.PublicKeys()))
		}
		again, err := rd.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		rd2, err := ParseRuntimeData(again)
		if err != nil {
			t.Fatalf("re-encoded runtime data does not parse: %v", err)
		}
		for _, k := range rd.PublicKeys() {
			if !rd2.HasKey(k) {
				t.Fatal("a key was lost in the round trip")
			}
		}
	})
}

func FuzzParseClaims(f *testing.F) {
	seeds := [][]any{
		{[]byte(`{"iss":"https://a.example","iat":1,"nbf":1,"exp":2,"x-ms-sgx-is-debuggable":false,"x-ms-sgx-svn":3,"x-ms-runtime":{"keys":[]}}`)},
		{[]byte(`{"exp":"1"}`)}, {[]byte(`{"exp":1.5e3}`)}, {[]byte(`{"x-ms-sgx-svn":-1}`)}, {[]byte(`{"iss":"a","iss":"b"}`)},
		{[]byte(`{"x-ms-sgx-collateral":{"quotehash":1}}`)}, {[]byte(`[1]`)}, {[]byte(`{"nonce":12}`)},
	}
	if *fuzzcorpus.Update {
		if err := fuzzcorpus.Write("FuzzParseClaims", seeds...); err != nil {
			f.Fatal(err)
		}
	}
	for _, s := range seeds {
		f.Add(s[0].([]byte))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseClaims(b)
		if err != nil {
			return
		}
		// Anything ParseClaims accepts must mean the same to a generic JSON decoder with exact
		// member names. (encoding/json's struct decoding matches names case-insensitively,
		// so "X-MS-SGX-IS-DEBUGGABLE" would set the debug claim there: exactly the kind of
		// parser disagreement a strict verifier must not have.)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			return // e.g. duplicate members or number forms the decoders treat differently
		}
		str := func(k string) string { s, _ := m[k].(string); return s }
		if str(ClaimIssuer) != c.Issuer || str(ClaimSGXMRSigner) != c.SGXMRSigner || str(ClaimSGXMREnclave) != c.SGXMREnclave {
			t.Fatalf("decoders disagree on iss/mrsigner/mrenclave: %q %q %q vs %q %q %q", str(ClaimIssuer), str(ClaimSGXMRSigner), str(ClaimSGXMREnclave), c.Issuer, c.SGXMRSigner, c.SGXMREnclave)
		}
		dbg, present := m[ClaimSGXDebuggable].(bool)
		if present != (c.SGXIsDebuggable != nil) || (present && dbg != *c.SGXIsDebuggable) {
			t.Fatal("decoders disagree on x-ms-sgx-is-debuggable")
		}
	})
}
