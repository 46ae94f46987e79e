package policy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/attestation/maa"
	"github.com/countersign/countersign/attestation/token"
	"github.com/countersign/countersign/internal/testmaa"
)

type fixture struct {
	is      *testmaa.Issuer
	engine  *Engine
	now     time.Time
	key     *ecdsa.PrivateKey // the key the peer presents
	keyJWK  map[string]any
	other   *ecdsa.PrivateKey
	otherJW map[string]any
}

func jwkMap(t *testing.T, k *ecdsa.PrivateKey) map[string]any {
	j, err := maa.NewJWK(&k.PublicKey, "tls")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(j)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

func newFixture(t *testing.T, minFetch time.Duration) *fixture {
	t.Helper()
	is := testmaa.New(t)
	doc := fmt.Sprintf(`
issuers:
  - url: %s
    caFile: %s
clockSkew: 60s
maxStaleness: 24h
identities:
  records-api:
    mrsigner: ["%s"]
    productId: 1
    minSvn: 2
    allowDebug: false
    attestationTypes: [sgx]
  model:
    mrenclave: ["%s"]
`, is.URL, is.CAFile, testmaa.MRSigner, testmaa.MREnclave)
	p, err := Parse([]byte(doc), "")
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{is: is, now: time.Now()}
	f.engine, err = NewEngine(p, nil, func(c *token.Config) {
		c.Now = func() time.Time { return f.now }
		c.MinFetchInterval = minFetch
	})
	if err != nil {
		t.Fatal(err)
	}
	f.key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.other, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.keyJWK, f.otherJW = jwkMap(t, f.key), jwkMap(t, f.other)
	return f
}

func (f *fixture) claims() map[string]any { return f.is.Claims(f.now, f.keyJWK) }

func with(m map[string]any, kv ...any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// TestEngineRejectsBadTokens has one named case per bad token of the checklist, plus
// the good token each bad one is a variant of.
func TestEngineRejectsBadTokens(t *testing.T) {
	f := newFixture(t, time.Minute)
	is := f.is
	attacker := is.OtherKey(t)
	hdr := is.Header()
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: mustPKIX(t, &is.Key.PublicKey)})

	// A server that would hand out the attacker's key, to prove jku/x5u are never followed.
	var foreignHits atomic.Int64
	foreign := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		foreignHits.Add(1)
	}))
	defer foreign.Close()

	hs256 := func() string {
		h := with(hdr, "alg", "HS256")
		signing := testmaa.Encode(h) + "." + testmaa.Encode(f.claims())
		mac := hmac.New(sha256.New, pubPEM)
		mac.Write([]byte(signing))
		return signing + "." + b64(mac.Sum(nil))
	}
	unsigned := func(alg any) string {
		h := with(hdr, "alg", alg)
		return testmaa.Encode(h) + "." + testmaa.Encode(f.claims()) + "."
	}
	unsignedWithSig := func(alg string) string {
		return testmaa.Encode(with(hdr, "alg", alg)) + "." + testmaa.Encode(f.claims()) + "." + b64([]byte("sig"))
	}
	good := is.Sign(hdr, f.claims())
	parts := strings.Split(good, ".")
	jsonSerialization := fmt.Sprintf(`{"payload":%q,"protected":%q,"signature":%q}`, parts[1], parts[0], parts[2])
	twoSignatures := fmt.Sprintf(`{"payload":%q,"signatures":[{"protected":%q,"signature":%q},{"protected":%q,"signature":%q}]}`,
		parts[1], parts[0], parts[2], parts[0], parts[2])
	attackerJWK, _ := maa.NewJWK(&attacker.PublicKey, "attacker")

	cases := []struct {
		name     string
		token    string
		identity string
		code     attestation.Code // "" = accepted
	}{
		{"good by mrsigner", good, "records-api", ""},
		{"good by mrenclave", good, "model", ""},
		{"good by any identity", good, "", ""},
		{"alg none", unsigned("none"), "records-api", attestation.CodeMalformed},
		{"alg none with a signature", unsignedWithSig("none"), "records-api", attestation.CodeAlgorithm},
		{"alg None", unsignedWithSig("None"), "records-api", attestation.CodeAlgorithm},
		{"alg empty", unsignedWithSig(""), "records-api", attestation.CodeAlgorithm},
		{"alg absent", testmaa.Encode(with(hdr, "alg", nil)) + "." + parts[1] + "." + parts[2], "records-api", attestation.CodeAlgorithm},
		{"alg not a string", unsignedWithSig("x")[:0] + testmaa.Encode(with(hdr, "alg", 256)) + "." + parts[1] + "." + parts[2], "records-api", attestation.CodeMalformed},
		{"HS256 signed with the RSA public key", hs256(), "records-api", attestation.CodeAlgorithm},
		{"RS512", testmaa.Encode(with(hdr, "alg", "RS512")) + "." + parts[1] + "." + parts[2], "records-api", attestation.CodeAlgorithm},
		{"embedded jwk of the attacker", testmaa.SignWith(attacker, with(hdr, "jwk", attackerJWK, "kid", "attacker"), f.claims()), "records-api", attestation.CodeKidUnknown},
		{"embedded jwk with the real kid", testmaa.SignWith(attacker, with(hdr, "jwk", attackerJWK), f.claims()), "records-api", attestation.CodeSignature},
		{"foreign jku", testmaa.SignWith(attacker, with(hdr, "jku", foreign.URL+"/certs"), f.claims()), "records-api", attestation.CodeSignature},
		{"foreign x5u", testmaa.SignWith(attacker, with(hdr, "x5u", foreign.URL+"/cert.pem", "kid", "foreign"), f.claims()), "records-api", attestation.CodeKidUnknown},
		{"unknown kid", is.Sign(with(hdr, "kid", "no-such-kid"), f.claims()), "records-api", attestation.CodeKidUnknown},
		{"missing kid", is.Sign(with(hdr, "kid", nil), f.claims()), "records-api", attestation.CodeKidMissing},
		{"empty kid", is.Sign(with(hdr, "kid", ""), f.claims()), "records-api", attestation.CodeKidMissing},
		{"unknown crit", is.Sign(with(hdr, "crit", []string{"exp-ext"}, "exp-ext", 1), f.claims()), "records-api", attestation.CodeCritUnsupported},
		{"JSON serialization", jsonSerialization, "records-api", attestation.CodeMalformed},
		{"two signatures", twoSignatures, "records-api", attestation.CodeMalformed},
		{"extra dots", good + ".", "records-api", attestation.CodeMalformed},
		{"extra part", good + "." + parts[2], "records-api", attestation.CodeMalformed},
		{"two parts", parts[0] + "." + parts[1], "records-api", attestation.CodeMalformed},
		{"padded base64 header", parts[0] + "==." + parts[1] + "." + parts[2], "records-api", attestation.CodeMalformed},
		{"oversize", is.Sign(hdr, with(f.claims(), "pad", strings.Repeat("A", token.DefaultMaxTokenSize))), "records-api", attestation.CodeTooLarge},
		{"expired", is.Sign(hdr, with(f.claims(), "exp", f.now.Add(-2*time.Minute).Unix())), "records-api", attestation.CodeExpired},
		{"expired within skew", is.Sign(hdr, with(f.claims(), "exp", f.now.Add(-30*time.Second).Unix())), "records-api", ""},
		{"not yet valid", is.Sign(hdr, with(f.claims(), "nbf", f.now.Add(5*time.Minute).Unix())), "records-api", attestation.CodeNotYetValid},
		{"issued in the future", is.Sign(hdr, with(f.claims(), "iat", f.now.Add(5*time.Minute).Unix())), "records-api", attestation.CodeIssuedInFuture},
		{"missing exp", is.Sign(hdr, with(f.claims(), "exp", nil)), "records-api", attestation.CodeClaimMissing},
		{"missing nbf", is.Sign(hdr, with(f.claims(), "nbf", nil)), "records-api", attestation.CodeClaimMissing},
		{"missing iat", is.Sign(hdr, with(f.claims(), "iat", nil)), "records-api", attestation.CodeClaimMissing},
		{"exp as a string", is.Sign(hdr, with(f.claims(), "exp", fmt.Sprint(f.now.Add(time.Hour).Unix()))), "records-api", attestation.CodeClaimType},
		{"nbf as a bool", is.Sign(hdr, with(f.claims(), "nbf", true)), "records-api", attestation.CodeClaimType},
		{"debuggable as a string", is.Sign(hdr, with(f.claims(), "x-ms-sgx-is-debuggable", "false")), "records-api", attestation.CodeClaimType},
		{"svn as a string", is.Sign(hdr, with(f.claims(), "x-ms-sgx-svn", "3")), "records-api", attestation.CodeClaimType},
		{"wrong iss", is.Sign(hdr, with(f.claims(), "iss", "https://evil.example")), "records-api", attestation.CodeIssuer},
		{"iss with trailing slash", is.Sign(hdr, with(f.claims(), "iss", is.URL+"/")), "records-api", attestation.CodeIssuer},
		{"iss missing", is.Sign(hdr, with(f.claims(), "iss", nil)), "records-api", attestation.CodeIssuer},
		{"debuggable under a strict policy", is.Sign(hdr, with(f.claims(), "x-ms-sgx-is-debuggable", true)), "records-api", attestation.CodeDebug},
		{"debuggable claim absent", is.Sign(hdr, with(f.claims(), "x-ms-sgx-is-debuggable", nil)), "records-api", attestation.CodeClaimMissing},
		{"wrong MRSIGNER", is.Sign(hdr, with(f.claims(), "x-ms-sgx-mrsigner", strings.Repeat("ab", 32))), "records-api", attestation.CodeMRSigner},
		{"wrong MRENCLAVE", is.Sign(hdr, with(f.claims(), "x-ms-sgx-mrenclave", strings.Repeat("cd", 32))), "model", attestation.CodeMREnclave},
		{"SVN below minimum", is.Sign(hdr, with(f.claims(), "x-ms-sgx-svn", 1)), "records-api", attestation.CodeSVN},
		{"product ID mismatch", is.Sign(hdr, with(f.claims(), "x-ms-sgx-product-id", 2)), "records-api", attestation.CodeProductID},
		{"attestation type sevsnpvm", is.Sign(hdr, with(f.claims(), "x-ms-attestation-type", "sevsnpvm")), "records-api", attestation.CodeAttestationType},
		{"runtime key not the presented key", is.Sign(hdr, with(f.claims(), "x-ms-runtime", map[string]any{"keys": []any{f.otherJW}})), "records-api", attestation.CodeKeyNotBound},
		{"no runtime data", is.Sign(hdr, with(f.claims(), "x-ms-runtime", nil)), "records-api", attestation.CodeRuntimeData},
		{"runtime data keys garbage", is.Sign(hdr, with(f.claims(), "x-ms-runtime", map[string]any{"keys": []any{map[string]any{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}}})), "records-api", attestation.CodeRuntimeData},
		{"signature by a key not in /certs", testmaa.SignWith(attacker, hdr, f.claims()), "records-api", attestation.CodeSignature},
		{"signature bytes flipped", parts[0] + "." + parts[1] + "." + flip(parts[2]), "records-api", attestation.CodeSignature},
		{"payload swapped under a good signature", parts[0] + "." + testmaa.Encode(with(f.claims(), "x-ms-sgx-svn", 9)) + "." + parts[2], "records-api", attestation.CodeSignature},
		{"unknown identity", good, "nobody", attestation.CodeUnknownIdentity},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := f.engine.Check(context.Background(), tc.token, ids(tc.identity), &f.key.PublicKey)
			if tc.code == "" {
				if !d.Allowed() {
					t.Fatalf("rejected a good token: %v", d.Rejection)
				}
				return
			}
			if d.Allowed() {
				t.Fatalf("accepted (identity %q), want rejection %s", d.Identity, tc.code)
			}
			if d.Rejection.Code != tc.code {
				t.Fatalf("rejected with %v, want code %s", d.Rejection, tc.code)
			}
			if d.Rejection.Sentence() == "" {
				t.Fatal("rejection has no explanation")
			}
		})
	}
	if n := foreignHits.Load(); n != 0 {
		t.Errorf("the verifier fetched from a URL named in a token header %d times; it must only use the pinned /certs", n)
	}
}

func ids(name string) []string {
	if name == "" {
		return nil
	}
	return []string{name}
}

func flip(s string) string {
	b := []byte(s)
	if b[10] == 'A' {
		b[10] = 'B'
	} else {
		b[10] = 'A'
	}
	return string(b)
}

func mustPKIX(t *testing.T, pub any) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestRejectionExplainsClaimSeenExpected(t *testing.T) {
	f := newFixture(t, time.Minute)
	tok := f.is.Sign(f.is.Header(), with(f.claims(), "x-ms-sgx-svn", 1))
	d, _ := f.engine.Check(context.Background(), tok, []string{"records-api"}, nil)
	msg := d.Rejection.Error()
	for _, want := range []string{"svn_too_low", "x-ms-sgx-svn", "is 1", "at least 2"} {
		if !strings.Contains(msg, want) {
			t.Errorf("rejection %q does not contain %q", msg, want)
		}
	}
}

// TestUnknownKidFlood: a flood of tokens with unknown kids causes at most one /certs fetch per
// MinFetchInterval.
func TestUnknownKidFlood(t *testing.T) {
	f := newFixture(t, time.Minute)
	ctx := context.Background()
	if d, _ := f.engine.Check(ctx, f.is.Sign(f.is.Header(), f.claims()), nil, nil); !d.Allowed() {
		t.Fatal(d.Rejection)
	}
	before := f.is.CertsHits()
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			tok := f.is.Sign(with(f.is.Header(), "kid", fmt.Sprintf("kid-%d", i)), f.claims())
			d, _ := f.engine.Check(ctx, tok, nil, nil)
			if d.Allowed() || d.Rejection.Code != attestation.CodeKidUnknown {
				t.Errorf("kid-%d: %+v", i, d)
			}
		}(i)
	}
	wg.Wait()
	if got := f.is.CertsHits() - before; got > 1 {
		t.Fatalf("%d /certs fetches for 200 unknown kids within one interval, want at most 1", got)
	}
	// After the interval, one more fetch is allowed, and a rotated-in key is then found.
	f.is.AddKey("rotated", f.is.OtherKey(t))
	f.now = f.now.Add(61 * time.Second)
	before = f.is.CertsHits()
	for i := 0; i < 50; i++ {
		f.engine.Check(ctx, f.is.Sign(with(f.is.Header(), "kid", fmt.Sprintf("again-%d", i)), f.claims()), nil, nil)
	}
	if got := f.is.CertsHits() - before; got != 1 {
		t.Fatalf("%d fetches after the interval passed, want exactly 1", got)
	}
}
