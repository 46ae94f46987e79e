package service

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/countersign/countersign/internal/syncbuf"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/countersign/countersign/attestation/maa"
	"github.com/countersign/countersign/attestation/maapolicy"
	"github.com/countersign/countersign/attestation/quote"
)

const (
	sgxPath = maa.PathSgxEnclave + "?api-version=" + maa.APIVersion2022
	oePath  = maa.PathOpenEnclave + "?api-version=" + maa.APIVersion2020
	// emptySHA256 is hex SHA-256 of nothing: MAA's collateral hashes of absent collateral.
	emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)

// policyHashOf computes x-ms-policy-hash independently of package maapolicy.
func policyHashOf(text string) string {
	inner := base64.RawURLEncoding.EncodeToString([]byte(text))
	sum := sha256.Sum256([]byte(inner))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// wantSGXClaims is the full claim set the default policy yields for testReport(runtime) quoted
// as q, except iat/nbf/exp/jti, which the caller checks.
func wantSGXClaims(r *quote.Report, q, runtime []byte, nonce any) map[string]any {
	mrenclave := hex.EncodeToString(r.MREnclave[:])
	mrsigner := hex.EncodeToString(r.MRSigner[:])
	qh := sha256.Sum256(q)
	collateral := map[string]any{
		"qeidcertshash":    emptySHA256,
		"qeidcrlhash":      emptySHA256,
		"qeidhash":         emptySHA256,
		"quotehash":        hex.EncodeToString(qh[:]),
		"tcbinfocertshash": emptySHA256,
		"tcbinfocrlhash":   emptySHA256,
		"tcbinfohash":      emptySHA256,
	}
	ehd := b64url(runtime)
	c := map[string]any{
		"iss":                       testIssuer,
		"x-ms-ver":                  "1.0",
		"x-ms-attestation-type":     "sgx",
		"x-ms-policy-hash":          policyHashOf(maapolicy.DefaultSGX),
		"x-ms-sgx-is-debuggable":    true,
		"x-ms-sgx-mrenclave":        mrenclave,
		"x-ms-sgx-mrsigner":         mrsigner,
		"x-ms-sgx-product-id":       json.Number("7"),
		"x-ms-sgx-svn":              json.Number("3"),
		"x-ms-sgx-ehd":              ehd,
		"x-ms-sgx-report-data":      hex.EncodeToString(r.ReportData[:]),
		"x-ms-sgx-config-id":        strings.Repeat("00", 64),
		"x-ms-sgx-collateral":       collateral,
		"x-countersign-sim":         true,
		"is-debuggable":             true,
		"sgx-mrenclave":             mrenclave,
		"sgx-mrsigner":              mrsigner,
		"product-id":                json.Number("7"),
		"svn":                       json.Number("3"),
		"tee":                       "sgx",
		"maa-ehd":                   ehd,
		"aas-ehd":                   ehd,
		"maa-attestationcollateral": collateral,
	}
	if nonce != nil {
		c["nonce"] = nonce
	}
	return c
}

// checkTimes checks iat, nbf, exp and jti and removes them from claims.
func checkTimes(t *testing.T, claims map[string]any, now time.Time, lifetime time.Duration) {
	t.Helper()
	for name, want := range map[string]int64{"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(lifetime).Unix()} {
		if got, ok := claims[name].(json.Number); !ok || got.String() != fmt.Sprint(want) {
			t.Errorf("%s = %v, want the number %d", name, claims[name], want)
		}
		delete(claims, name)
	}
	if jti, _ := claims["jti"].(string); !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(jti) {
		t.Errorf("jti %q is not 64 hex digits", claims["jti"])
	}
	delete(claims, "jti")
}

func diffClaims(t *testing.T, got, want map[string]any) {
	t.Helper()
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("claim %s missing, want %v", k, w)
			continue
		}
		gb, _ := json.Marshal(g)
		wb, _ := json.Marshal(w)
		if !bytes.Equal(gb, wb) {
			t.Errorf("claim %s = %s, want %s", k, gb, wb)
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected claim %s = %v", k, g)
		}
	}
}

func TestAttestSgxEnclave(t *testing.T) {
	p := newPlatform(t)
	s := newTestService(t, p, nil)
	runtime := []byte("enclave-held data: a public key")
	rep := testReport(runtime)
	q := p.quote(rep)
	res := postJSON(t, s.Handler(), sgxPath, map[string]any{
		"quote":       b64url(q),
		"runtimeData": map[string]string{"data": b64url(runtime), "dataType": "Binary"},
		"nonce":       "n-123",
	})
	token := tokenOf(t, res)
	key, cert := testSigning(t)
	header, claims := verifyToken(t, token, &key.PublicKey)
	wantHeader := `{"alg":"RS256","jku":"` + testIssuer + `/certs","kid":"` + KeyID(cert) + `","typ":"JWT"}`
	if header != wantHeader {
		t.Errorf("header\n%s\nwant\n%s", header, wantHeader)
	}
	checkTimes(t, claims, testNow, 8*time.Hour)
	diffClaims(t, claims, wantSGXClaims(rep, q, runtime, "n-123"))

	// The typed claim decoder the rest of Countersign uses accepts the token as is.
	var typed maa.Claims
	payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[1])
	if err := json.Unmarshal(payload, &typed); err != nil {
		t.Fatalf("maa.Claims: %v", err)
	}
	if typed.SGXIsDebuggable == nil || !*typed.SGXIsDebuggable || typed.Sim == nil || !*typed.Sim ||
		*typed.SGXSVN != 3 || *typed.SGXProductID != 7 || typed.SGXCollateral.QuoteHash == "" {
		t.Errorf("typed claims %+v", typed)
	}

	// An independent JOSE implementation (go-jose, which EGo uses) verifies it.
	sig, err := jose.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatalf("go-jose cannot parse the token: %v", err)
	}
	if _, err := sig.Verify(&key.PublicKey); err != nil {
		t.Errorf("go-jose does not verify the token: %v", err)
	}
}

func TestAttestOpenEnclaveLikeEGo(t *testing.T) {
	p := newPlatform(t)
	s := newTestService(t, p, func(c *Config) { c.TokenLifetime = time.Hour })
	runtime := []byte{0x00, 0xff, 0x10, 0x20}
	rep := testReport(runtime)
	q := p.quote(rep)
	// Exactly what EGo's internal/attestation.CreateAzureAttestationToken sends: the OE report
	// (header + quote) and the data, both unpadded base64url, dataType Binary, no nonce, to
	// /attest/OpenEnclave?api-version=2020-10-01 with Content-Type application/json.
	body, err := json.Marshal(struct {
		Report      string `json:"report"`
		RuntimeData struct {
			Data     string `json:"data"`
			DataType string `json:"dataType"`
		} `json:"runtimeData"`
	}{Report: base64.RawURLEncoding.EncodeToString(quote.WrapOEReport(q)), RuntimeData: struct {
		Data     string `json:"data"`
		DataType string `json:"dataType"`
	}{base64.RawURLEncoding.EncodeToString(runtime), "Binary"}})
	if err != nil {
		t.Fatal(err)
	}
	res := do(t, s.Handler(), http.MethodPost, "/attest/OpenEnclave?api-version=2020-10-01", "application/json", body, nil)
	token := tokenOf(t, res)
	key, _ := testSigning(t)
	_, claims := verifyToken(t, token, &key.PublicKey)
	checkTimes(t, claims, testNow, time.Hour)
	// The quote hash is over the SGX quote, without the OE header.
	diffClaims(t, claims, wantSGXClaims(rep, q, runtime, nil))
}

func TestAttestJSONRuntimeData(t *testing.T) {
	p := newPlatform(t)
	s := newTestService(t, p, nil)
	pub, _, _ := ed25519.GenerateKey(nil)
	jwk, err := maa.NewJWK(pub, "tls")
	if err != nil {
		t.Fatal(err)
	}
	rd := maa.RuntimeData{Keys: []maa.JWK{jwk}, Claimed: map[string]string{"image": "sha256:abc"}}
	runtime, err := rd.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	initTime := []byte(`{"config":{"replicas":3}}`)
	rep := testReport(runtime)
	ih := sha256.Sum256(initTime)
	copy(rep.ConfigID[:], ih[:])
	q := p.quote(rep)
	for _, padded := range []bool{false, true} {
		t.Run(fmt.Sprintf("padded=%v", padded), func(t *testing.T) {
			enc := base64.RawURLEncoding
			if padded { // the REST spec's own examples use standard base64 with padding
				enc = base64.StdEncoding
			}
			res := postJSON(t, s.Handler(), sgxPath, map[string]any{
				"quote":        enc.EncodeToString(q),
				"runtimeData":  map[string]string{"data": enc.EncodeToString(runtime), "dataType": "JSON"},
				"initTimeData": map[string]string{"data": enc.EncodeToString(initTime), "dataType": "JSON"},
				"nonce":        json.Number("12345678901234567890"),
			})
			key, _ := testSigning(t)
			_, claims := verifyToken(t, tokenOf(t, res), &key.PublicKey)
			if n, ok := claims["nonce"].(json.Number); !ok || n.String() != "12345678901234567890" {
				t.Errorf("nonce = %#v, want the number copied exactly", claims["nonce"])
			}
			var typed maa.Claims
			b, _ := json.Marshal(claims)
			if err := json.Unmarshal(b, &typed); err != nil {
				t.Fatal(err)
			}
			got, err := maa.ParseRuntimeData(typed.Runtime)
			if err != nil {
				t.Fatalf("x-ms-runtime: %v", err)
			}
			if len(got.Keys) != 1 || got.Keys[0] != jwk || got.Claimed["image"] != "sha256:abc" {
				t.Errorf("x-ms-runtime.keys = %+v, want %+v", got, rd)
			}
			if !got.HasKey(pub) {
				t.Error("x-ms-runtime does not name the enclave's key")
			}
			if string(typed.InitTime) != `{"config":{"replicas":3}}` {
				t.Errorf("x-ms-inittime = %s", typed.InitTime)
			}
			if typed.SGXConfigID != hex.EncodeToString(rep.ConfigID[:]) {
				t.Errorf("x-ms-sgx-config-id = %s", typed.SGXConfigID)
			}
			if typed.SGXEHD != b64url(runtime) {
				t.Errorf("x-ms-sgx-ehd = %s", typed.SGXEHD)
			}
		})
	}
}

// badQuote builds quote-shaped bytes with the given header fields and signature data.
func rawQuote(version, keyType uint16, sigData []byte) []byte {
	b := make([]byte, quote.HeaderSize+quote.ReportBodySize)
	binary.LittleEndian.PutUint16(b[0:2], version)
	binary.LittleEndian.PutUint16(b[2:4], keyType)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(sigData)))
	return append(b, sigData...)
}

func TestAttestRejects(t *testing.T) {
	p := newPlatform(t)
	s := newTestService(t, p, func(c *Config) { c.MaxBodyBytes = 8 << 10 })
	h := s.Handler()
	runtime := []byte("runtime")
	rep := testReport(runtime)
	q := p.quote(rep)
	good := map[string]any{"quote": b64url(q), "runtimeData": map[string]string{"data": b64url(runtime), "dataType": "Binary"}}
	with := func(k string, v any) []byte {
		m := map[string]any{}
		for kk, vv := range good {
			m[kk] = vv
		}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	rd := func(data, typ string) map[string]string { return map[string]string{"data": data, "dataType": typ} }
	untrusted := newPlatform(t).quote(rep)
	tampered := bytes.Clone(q)
	tampered[quote.HeaderSize+64] ^= 1 // a bit of MRENCLAVE
	otherRuntime := testReport([]byte("other"))
	mismatch := p.quote(otherRuntime)
	wrongSize := quote.WrapOEReport(q)
	binary.LittleEndian.PutUint64(wrongSize[8:16], 3)

	tests := []struct {
		name   string
		method string
		target string
		ctype  string
		body   []byte
		status int
		code   string
		msg    string
	}{
		{"oversized body", "POST", sgxPath, "application/json", with("pad", strings.Repeat("x", 9<<10)), 413, maa.CodeRequestTooLarge, "larger than the 8192"},
		{"quote is a number", "POST", sgxPath, "application/json", []byte(`{"quote": 5}`), 400, maa.CodeInvalidParameter, "quote: expected a JSON string, got number"},
		{"runtimeData is a string", "POST", sgxPath, "application/json", with("runtimeData", "abc"), 400, maa.CodeInvalidParameter, "runtimeData: expected a JSON object, got string"},
		{"runtimeData.data is a bool", "POST", sgxPath, "application/json", []byte(`{"quote":"AAAA","runtimeData":{"data":true,"dataType":"Binary"}}`), 400, maa.CodeInvalidParameter, "runtimeData.data: expected a JSON string, got bool"},
		{"body is an array", "POST", sgxPath, "application/json", []byte(`[1,2]`), 400, maa.CodeBadRequest, "expected a JSON object, got array"},
		{"body is null", "POST", sgxPath, "application/json", []byte(`null`), 400, maa.CodeBadRequest, "expected a JSON object, got null"},
		{"body is not JSON", "POST", sgxPath, "application/json", []byte(`quote=abc`), 400, maa.CodeBadRequest, "not valid JSON"},
		{"body is empty", "POST", sgxPath, "application/json", nil, 400, maa.CodeBadRequest, "request body is empty"},
		{"data after the object", "POST", sgxPath, "application/json", append(with("nonce", "x"), []byte(` {}`)...), 400, maa.CodeBadRequest, "data after the JSON object"},
		{"quote missing", "POST", sgxPath, "application/json", with("quote", nil), 400, maa.CodeInvalidParameter, "quote is required"},
		{"report sent to SgxEnclave", "POST", sgxPath, "application/json", []byte(`{"report":"AAAA"}`), 400, maa.CodeInvalidParameter, "belongs to /attest/OpenEnclave"},
		{"bad base64 standard alphabet", "POST", sgxPath, "application/json", with("quote", "ab+/c*=="), 400, maa.CodeInvalidParameter, "quote: not base64 or base64url"},
		{"bad base64url alphabet", "POST", sgxPath, "application/json", with("quote", "ab-_c*"), 400, maa.CodeInvalidParameter, "quote: not base64 or base64url"},
		{"mixed alphabets", "POST", sgxPath, "application/json", with("quote", "ab+_cd"), 400, maa.CodeInvalidParameter, "mixes the standard (+/) and URL-safe (-_) alphabets"},
		{"bad base64 in runtime data", "POST", sgxPath, "application/json", with("runtimeData", rd("%%%", "Binary")), 400, maa.CodeInvalidParameter, "runtimeData.data: not base64"},
		{"unknown dataType", "POST", sgxPath, "application/json", with("runtimeData", rd(b64url(runtime), "Text")), 400, maa.CodeInvalidParameter, `runtimeData.dataType "Text" is not supported: expected "Binary" or "JSON"`},
		{"missing dataType", "POST", sgxPath, "application/json", with("runtimeData", map[string]string{"data": b64url(runtime)}), 400, maa.CodeInvalidParameter, "runtimeData.dataType is required"},
		{"JSON dataType with an array", "POST", sgxPath, "application/json", with("runtimeData", rd(b64url([]byte(`[1]`)), "JSON")), 400, maa.CodeInvalidParameter, "must be a JSON object (it becomes a claim object), got an array"},
		{"JSON dataType with bad JSON", "POST", sgxPath, "application/json", with("runtimeData", rd(b64url([]byte(`{"a":`)), "JSON")), 400, maa.CodeInvalidParameter, "dataType is JSON but the data is not JSON"},
		{"bad initTimeData dataType", "POST", sgxPath, "application/json", with("initTimeData", rd("", "Blob")), 400, maa.CodeInvalidParameter, "initTimeData.dataType"},
		{"nonce is an object", "POST", sgxPath, "application/json", with("nonce", map[string]int{"a": 1}), 400, maa.CodeInvalidParameter, "nonce: expected a JSON string or number, got an object"},
		{"truncated quote", "POST", sgxPath, "application/json", with("quote", b64url(q[:200])), 400, maa.CodeInvalidQuote, "truncated: 200 bytes"},
		{"quote with a bad signature length", "POST", sgxPath, "application/json", with("quote", b64url(q[:len(q)-1])), 400, maa.CodeInvalidQuote, "signatureDataLength"},
		{"real SGX quote", "POST", sgxPath, "application/json", with("quote", b64url(rawQuote(3, 2, make([]byte, 64)))), 400, maa.CodeInvalidQuote, "DCAP collateral (PCK certificates, TCB info, QE identity, CRLs) is not reachable offline; send real quotes to Azure Attestation"},
		{"real SGX v4 quote in an OE report", "POST", oePath, "application/json", []byte(`{"report":"` + b64url(quote.WrapOEReport(rawQuote(4, 2, nil))) + `"}`), 400, maa.CodeInvalidQuote, "SGX ECDSA quote (version 4)"},
		{"unknown quote version", "POST", sgxPath, "application/json", with("quote", b64url(rawQuote(9, 2, nil))), 400, maa.CodeInvalidQuote, "quote.header.version: 9"},
		{"untrusted platform key", "POST", sgxPath, "application/json", with("quote", b64url(untrusted)), 400, maa.CodeInvalidQuote, "simulated platform key that is not trusted"},
		{"tampered quote", "POST", sgxPath, "application/json", with("quote", b64url(tampered)), 400, maa.CodeInvalidQuote, "Ed25519 signature does not verify"},
		{"runtime data hash mismatch", "POST", sgxPath, "application/json", with("quote", b64url(mismatch)), 400, maa.CodeInvalidQuote, "runtimeData does not match the quote"},
		{"initTimeData hash mismatch", "POST", sgxPath, "application/json", with("initTimeData", rd(b64url([]byte("init")), "Binary")), 400, maa.CodeInvalidQuote, "initTimeData does not match the quote"},
		{"OE header on SgxEnclave", "POST", sgxPath, "application/json", with("quote", b64url(quote.WrapOEReport(q))), 400, maa.CodeInvalidQuote, "send it to /attest/OpenEnclave"},
		{"bare quote on OpenEnclave", "POST", oePath, "application/json", []byte(`{"report":"` + b64url(q) + `"}`), 400, maa.CodeInvalidQuote, "does not start with an Open Enclave report header"},
		{"OE header with a wrong size", "POST", oePath, "application/json", []byte(`{"report":"` + b64url(wrongSize) + `"}`), 400, maa.CodeInvalidQuote, "Open Enclave header says 3 quote bytes"},
		{"bad draft policy", "POST", sgxPath, "application/json", with("draftPolicyForAttestation", "version=1.0;\nauthorizationrules { => maybe(); };"), 400, maa.CodeInvalidPolicy, `2:25: expected "permit" or "deny", found "maybe"`},
		{"missing api-version", "POST", maa.PathSgxEnclave, "application/json", with("nonce", "x"), 400, maa.CodeInvalidParameter, "api-version query parameter is required"},
		{"unknown api-version", "POST", maa.PathSgxEnclave + "?api-version=2019-01-01", "application/json", with("nonce", "x"), 400, maa.CodeInvalidParameter, `api-version "2019-01-01" is not supported`},
		{"wrong content type", "POST", sgxPath, "text/plain", with("nonce", "x"), 415, maa.CodeUnsupportedMediaType, `Content-Type "text/plain" is not supported: expected application/json`},
		{"missing content type", "POST", sgxPath, "", with("nonce", "x"), 415, maa.CodeUnsupportedMediaType, "a missing Content-Type"},
		{"unknown path", "GET", "/nope", "", nil, 404, maa.CodeNotFound, `no endpoint at "/nope"`},
		{"unsupported attestation type", "POST", "/attest/SevSnpVm?api-version=2022-08-01", "application/json", []byte(`{}`), 404, maa.CodeNotFound, `attestation type "SevSnpVm" is not supported`},
		{"wrong method on attest", "GET", sgxPath, "", nil, 405, maa.CodeMethodNotAllowed, `method "GET" is not allowed on /attest/SgxEnclave: expected POST`},
		{"wrong method on certs", "DELETE", "/certs", "", nil, 405, maa.CodeMethodNotAllowed, "expected GET or HEAD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := do(t, h, tt.method, tt.target, tt.ctype, tt.body, nil)
			if res.status != tt.status {
				t.Errorf("status %d, want %d (%s)", res.status, tt.status, res.body)
			}
			e := errorOf(t, res)
			if e.Code != tt.code {
				t.Errorf("code %s, want %s (%s)", e.Code, tt.code, e.Message)
			}
			if !strings.Contains(e.Message, tt.msg) {
				t.Errorf("message %q does not contain %q", e.Message, tt.msg)
			}
			if tt.status == 405 && res.header.Get("Allow") == "" {
				t.Error("405 without an Allow header")
			}
		})
	}
	// The good request the table mutates is itself accepted.
	tokenOf(t, do(t, h, "POST", sgxPath, "application/json", with("nonce", "x"), nil))
}

// TestOversizedStream sends a body without Content-Length, so http.MaxBytesReader must stop it.
func TestOversizedStream(t *testing.T) {
	s := newTestService(t, newPlatform(t), func(c *Config) { c.MaxBodyBytes = 1024 })
	req := httptest.NewRequest("POST", sgxPath, strings.NewReader(`{"quote":"`+strings.Repeat("A", 4096)+`"}`))
	req.ContentLength = -1
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != 413 || !strings.Contains(rec.Body.String(), `"code":"RequestEntityTooLarge"`) {
		t.Errorf("status %d body %s, want 413 RequestEntityTooLarge", rec.Code, rec.Body)
	}
}

const productionPolicy = `version=1.0;
authorizationrules {
  [type=="x-ms-sgx-is-debuggable", value==false] && [type=="x-ms-sgx-svn", value==3] => permit();
  [type=="x-ms-sgx-product-id", value==99] => permit();
};
issuancerules {
  c:[type=="x-ms-sgx-mrsigner"] => issue(type="signer", value=c.value);
};
`

func TestPolicyDenial(t *testing.T) {
	p := newPlatform(t)
	s := newTestService(t, p, func(c *Config) { c.PolicyText = productionPolicy })
	runtime := []byte("rt")
	q := p.quote(testReport(runtime))
	res := postJSON(t, s.Handler(), sgxPath, map[string]any{"quote": b64url(q), "runtimeData": map[string]string{"data": b64url(runtime), "dataType": "Binary"}})
	if res.status != 400 {
		t.Fatalf("status %d, want 400: %s", res.status, res.body)
	}
	e := errorOf(t, res)
	if e.Code != maa.CodePolicyEvaluationError {
		t.Errorf("code %s", e.Code)
	}
	want := &maa.InnerError{Code: maa.CodePolicyValidation, Details: []maa.FailureDetail{
		{Code: maa.CodePolicyFailureClaim, Target: "x-ms-sgx-is-debuggable", Value: "true"},
		{Code: maa.CodePolicyFailureClaim, Target: "x-ms-sgx-product-id", Value: "7"},
	}}
	if got, _ := json.Marshal(e.InnerError); string(got) != string(must(json.Marshal(want))) {
		t.Errorf("innererror %s, want %s", got, must(json.Marshal(want)))
	}
	if !strings.Contains(e.Message, "x-ms-sgx-is-debuggable is true (expected == false)") {
		t.Errorf("message %q does not say which claim failed", e.Message)
	}
	// The raw body has MAA's exact shape.
	if !strings.Contains(string(res.body), `"innererror":{"code":"PolicyValidationFailure","details":[{"code":"PolicyFailureClaim","target":"x-ms-sgx-is-debuggable","value":"true"}`) {
		t.Errorf("body %s", res.body)
	}

	// A draft policy replaces the configured one for that request only, and the token says so.
	draft := "version=1.0; authorizationrules { [type==\"x-countersign-sim\", value==true] => permit(); }; issuancerules { => issue(type=\"draft\", value=true); };"
	for name, d := range map[string]string{"text": draft, "jws": UnsignedPolicyJWS(draft)} {
		res = postJSON(t, s.Handler(), sgxPath, map[string]any{"quote": b64url(q), "runtimeData": map[string]string{"data": b64url(runtime), "dataType": "Binary"}, "draftPolicyForAttestation": d})
		key, _ := testSigning(t)
		_, claims := verifyToken(t, tokenOf(t, res), &key.PublicKey)
		if claims["x-ms-policy-hash"] != policyHashOf(draft) || claims["draft"] != true {
			t.Errorf("%s draft: policy hash %v draft claim %v", name, claims["x-ms-policy-hash"], claims["draft"])
		}
		if _, ok := claims["sgx-mrsigner"]; ok {
			t.Errorf("%s draft: token carries the default policy's aliases", name)
		}
	}
	if res := postJSON(t, s.Handler(), sgxPath, map[string]any{"quote": b64url(q), "runtimeData": map[string]string{"data": b64url(runtime), "dataType": "Binary"}}); res.status != 400 {
		t.Errorf("after a draft, the configured policy no longer applies: status %d", res.status)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestPolicyManagement(t *testing.T) {
	p := newPlatform(t)
	const admin = "0123456789abcdef-admin"
	key, _ := testSigning(t)
	runtime := []byte("rt")
	q := p.quote(testReport(runtime))
	attest := func(h http.Handler, path string) response {
		field := "quote"
		ev := q
		if strings.Contains(path, "OpenEnclave") {
			field, ev = "report", quote.WrapOEReport(q)
		}
		return postJSON(t, h, path, map[string]any{field: b64url(ev), "runtimeData": map[string]string{"data": b64url(runtime), "dataType": "Binary"}})
	}
	putPath := "/policies/SgxEnclave?api-version=2022-08-01"
	bearer := map[string]string{"Authorization": "Bearer " + admin}

	t.Run("disabled without an admin token", func(t *testing.T) {
		s := newTestService(t, p, nil)
		res := do(t, s.Handler(), "PUT", putPath, "text/plain", []byte(UnsignedPolicyJWS(productionPolicy)), bearer)
		e := errorOf(t, res)
		if res.status != 403 || e.Code != CodeForbidden || !strings.Contains(e.Message, "--admin-token-file") {
			t.Errorf("status %d %+v", res.status, e)
		}
	})

	s := newTestService(t, p, func(c *Config) { c.AdminToken = admin })
	h := s.Handler()
	for name, hdr := range map[string]map[string]string{
		"no token":     nil,
		"wrong token":  {"Authorization": "Bearer 0123456789abcdef-admiN"},
		"wrong scheme": {"Authorization": "Basic " + admin},
		"prefix":       {"Authorization": "Bearer " + admin[:10]},
	} {
		t.Run(name, func(t *testing.T) {
			res := do(t, h, "PUT", putPath, "text/plain", []byte(UnsignedPolicyJWS(productionPolicy)), hdr)
			if e := errorOf(t, res); res.status != 401 || e.Code != CodeUnauthorized || res.header.Get("WWW-Authenticate") == "" {
				t.Errorf("status %d %+v", res.status, e)
			}
		})
	}

	badPolicies := []struct {
		name, body, msg string
	}{
		{"syntax error", UnsignedPolicyJWS("version=1.0;\nauthorizationrules {\n  [type==\"x\" => permit();\n};"), `policy error at 3:14: expected "," or "]", found "=>"; the previous policy stays in force`},
		{"signed policy", base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256"}`)) + ".e30.c2ln", `JWS alg "RS256": this service accepts unsigned policies only`},
		{"not a JWS", "version=1.0; authorizationrules { => permit(); };", "not a JWS in compact form"},
		{"no AttestationPolicy", base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + ".e30.", "JWS payload has no AttestationPolicy"},
	}
	for _, tt := range badPolicies {
		t.Run(tt.name, func(t *testing.T) {
			res := do(t, h, "PUT", putPath, "text/plain", []byte(tt.body), bearer)
			e := errorOf(t, res)
			if res.status != 400 || e.Code != maa.CodeInvalidPolicy || !strings.Contains(e.Message, tt.msg) {
				t.Errorf("status %d %+v, want 400 InvalidPolicy containing %q", res.status, e, tt.msg)
			}
			// The old (default) policy stays: attestation still succeeds.
			tokenOf(t, attest(h, sgxPath))
		})
	}
	t.Run("wrong content type", func(t *testing.T) {
		res := do(t, h, "PUT", putPath, "application/octet-stream", []byte(UnsignedPolicyJWS(productionPolicy)), bearer)
		if e := errorOf(t, res); res.status != 415 || e.Code != maa.CodeUnsupportedMediaType {
			t.Errorf("status %d %+v", res.status, e)
		}
	})

	t.Run("update", func(t *testing.T) {
		jwsText := UnsignedPolicyJWS(productionPolicy)
		// As a JSON string, the way SDKs send it.
		res := do(t, h, "PUT", putPath, "application/json", must(json.Marshal(jwsText)), bearer)
		_, claims := verifyToken(t, tokenOf(t, res), &key.PublicKey)
		sum := sha256.Sum256([]byte(jwsText))
		if claims[ClaimPolicyResult] != "Updated" || claims[ClaimPolicyTokenHash] != base64.RawURLEncoding.EncodeToString(sum[:]) || claims["iss"] != testIssuer {
			t.Errorf("policy result claims %v", claims)
		}
		// SgxEnclave now denies the debuggable sim quote; OpenEnclave keeps its own policy.
		if res := attest(h, sgxPath); res.status != 400 || errorOf(t, res).Code != maa.CodePolicyEvaluationError {
			t.Errorf("SgxEnclave after update: %d %s", res.status, res.body)
		}
		tokenOf(t, attest(h, oePath))

		// GET returns the policy JWS in x-ms-policy.
		res = do(t, h, "GET", putPath, "", nil, nil)
		_, claims = verifyToken(t, tokenOf(t, res), &key.PublicKey)
		got, _ := claims[ClaimPolicy].(string)
		text, err := policyFromJWS(got)
		if err != nil || text != productionPolicy {
			t.Errorf("GET policy = %q (%v), want the policy just set", text, err)
		}
		res = do(t, h, "GET", "/policies/OpenEnclave?api-version=2020-10-01", "", nil, nil)
		_, claims = verifyToken(t, tokenOf(t, res), &key.PublicKey)
		if text, err := policyFromJWS(claims[ClaimPolicy].(string)); err != nil || text != maapolicy.DefaultSGX {
			t.Errorf("OpenEnclave policy = %q (%v), want the default", text, err)
		}
		// Raw JWS text works too, and restores a permissive policy.
		res = do(t, h, "PUT", putPath, "text/plain; charset=utf-8", []byte(UnsignedPolicyJWS(maapolicy.DefaultSGX)+"\n"), bearer)
		tokenOf(t, res)
		tokenOf(t, attest(h, sgxPath))
	})
	t.Run("GET needs api-version", func(t *testing.T) {
		if e := errorOf(t, do(t, h, "GET", "/policies/SgxEnclave", "", nil, nil)); e.Code != maa.CodeInvalidParameter {
			t.Errorf("%+v", e)
		}
	})
}

func TestDiscovery(t *testing.T) {
	s := newTestService(t, newPlatform(t), nil)
	_, cert := testSigning(t)
	res := do(t, s.Handler(), "GET", "/certs", "", nil, nil)
	if res.status != 200 {
		t.Fatalf("status %d", res.status)
	}
	if got := res.header.Get("Access-Control-Allow-Origin"); got != "*" {
		t.Errorf("/certs Access-Control-Allow-Origin %q, want * (browsers verify tokens against it)", got)
	}
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(res.body, &set); err != nil || len(set.Keys) != 1 {
		t.Fatalf("certs %s: %v", res.body, err)
	}
	k := set.Keys[0]
	if len(k) != 3 || k["kty"] != "RSA" || k["kid"] != KeyID(cert) {
		t.Errorf("key %v", k)
	}
	x5c, _ := k["x5c"].([]any)
	if len(x5c) != 1 {
		t.Fatalf("x5c %v", k["x5c"])
	}
	der, err := base64.StdEncoding.DecodeString(x5c[0].(string))
	if err != nil {
		t.Fatalf("x5c is not standard base64: %v", err)
	}
	parsed, err := x509.ParseCertificate(der)
	if err != nil || !parsed.Equal(cert) {
		t.Errorf("x5c certificate differs: %v", err)
	}
	sum := sha256.Sum256(cert.Raw)
	if KeyID(cert) != base64.RawURLEncoding.EncodeToString(sum[:]) {
		t.Error("kid is not base64url SHA-256 of the certificate")
	}

	res = do(t, s.Handler(), "GET", "/.well-known/openid-configuration", "", nil, nil)
	var oc map[string]any
	if err := json.Unmarshal(res.body, &oc); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"issuer":                                testIssuer,
		"jwks_uri":                              testIssuer + "/certs",
		"id_token_signing_alg_values_supported": []any{"RS256"},
		"response_types_supported":              []any{"token", "none"},
	}
	for k, v := range want {
		if fmt.Sprint(oc[k]) != fmt.Sprint(v) {
			t.Errorf("%s = %v, want %v", k, oc[k], v)
		}
	}
	// Every member is in docs/attestation-service.md's table, and nothing advertises an
	// endpoint the service does not serve (revocation_endpoint was a 404).
	for k := range oc {
		if _, ok := want[k]; !ok && k != "claims_supported" {
			t.Errorf("openid-configuration advertises %s, which the page does not list", k)
		}
	}
	if res := do(t, s.Handler(), "GET", "/revoke", "", nil, nil); res.status == 200 {
		t.Errorf("GET /revoke answers 200: document it in the endpoint table")
	}
	claims, _ := oc["claims_supported"].([]any)
	for _, c := range []string{"x-ms-sgx-mrenclave", "x-ms-policy-hash", "x-countersign-sim", "maa-ehd"} {
		if !slices.Contains(claims, any(c)) {
			t.Errorf("claims_supported lacks %s", c)
		}
	}
	if res := do(t, s.Handler(), "HEAD", "/certs", "", nil, nil); res.status != 200 || len(res.body) != 0 {
		t.Errorf("HEAD /certs: %d, %d bytes", res.status, len(res.body))
	}
}

func TestNewValidates(t *testing.T) {
	key, cert := testSigning(t)
	p := newPlatform(t)
	other, _ := rsa.GenerateKey(randReader{}, 1024)
	tests := []struct {
		name   string
		mutate func(*Config)
		field  string
		msg    string
	}{
		{"no issuer", func(c *Config) { c.Issuer = "" }, "Config.Issuer", "required"},
		{"http issuer", func(c *Config) { c.Issuer = "http://attest.test" }, "Config.Issuer", "must use https"},
		{"trailing slash", func(c *Config) { c.Issuer = "https://attest.test/" }, "Config.Issuer", `ends with a slash; MAA issuers have none (clients compare iss byte for byte): use "https://attest.test"`},
		{"path", func(c *Config) { c.Issuer = "https://attest.test/maa" }, "Config.Issuer", "has a path"},
		{"query", func(c *Config) { c.Issuer = "https://attest.test?x=1" }, "Config.Issuer", "query or fragment"},
		{"user info", func(c *Config) { c.Issuer = "https://u@attest.test" }, "Config.Issuer", "user information"},
		{"no host", func(c *Config) { c.Issuer = "https://" }, "Config.Issuer", "no host"},
		{"not canonical", func(c *Config) { c.Issuer = "HTTPS://attest.test" }, "Config.Issuer", `not in canonical form, expected "https://attest.test"`},
		{"no key", func(c *Config) { c.SigningKey = nil }, "Config.SigningKey", "required"},
		{"small key", func(c *Config) { c.SigningKey = other }, "Config.SigningKey", "1024 bits"},
		{"no cert", func(c *Config) { c.SigningCert = nil }, "Config.SigningCert", "required"},
		{"cert of another key", func(c *Config) { c.SigningCert = &x509.Certificate{PublicKey: &other.PublicKey} }, "Config.SigningCert", "not Config.SigningKey's"},
		{"negative lifetime", func(c *Config) { c.TokenLifetime = -time.Second }, "Config.TokenLifetime", "expected a positive duration"},
		{"tiny lifetime", func(c *Config) { c.TokenLifetime = time.Millisecond }, "Config.TokenLifetime", "at least 1s"},
		{"negative body limit", func(c *Config) { c.MaxBodyBytes = -1 }, "Config.MaxBodyBytes", "expected a positive size"},
		{"short admin token", func(c *Config) { c.AdminToken = "secret" }, "Config.AdminToken", "expected at least 16"},
		{"bad platform key", func(c *Config) { c.SimPlatformKeys = []ed25519.PublicKey{p.pub, p.pub[:5]} }, "Config.SimPlatformKeys[1]", "5 bytes"},
		{"bad policy", func(c *Config) { c.PolicyText = "version=1.0;\nauthorizationrules { => permit() };" }, "Config.PolicyText", `2:34: expected ";", found "}"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Issuer: testIssuer, SigningKey: key, SigningCert: cert, SimPlatformKeys: []ed25519.PublicKey{p.pub}}
			tt.mutate(&cfg)
			_, err := New(cfg)
			if err == nil {
				t.Fatal("New accepted it")
			}
			if !strings.HasPrefix(err.Error(), tt.field+":") || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q, want it to name %s and say %q", err, tt.field, tt.msg)
			}
		})
	}
	for _, ok := range []string{"https://attest.test", "https://127.0.0.1:8443", "https://[::1]:443"} {
		if _, err := New(Config{Issuer: ok, SigningKey: key, SigningCert: cert}); err != nil {
			t.Errorf("issuer %s: %v", ok, err)
		}
	}
}

// randReader is a deterministic reader for a throwaway small key in a validation test.
type randReader struct{}

func (randReader) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(i*7 + 1)
	}
	return len(b), nil
}

func TestAttestLogs(t *testing.T) {
	var buf syncbuf.Buffer
	p := newPlatform(t)
	s := newTestService(t, p, func(c *Config) { c.Logger = slog.New(slog.NewJSONHandler(&buf, nil)) })
	runtime := []byte("secret-ish runtime data that must not be logged")
	q := p.quote(testReport(runtime))
	tokenOf(t, postJSON(t, s.Handler(), sgxPath, map[string]any{"quote": b64url(q), "runtimeData": map[string]string{"data": b64url(runtime), "dataType": "Binary"}}))
	postJSON(t, s.Handler(), sgxPath, map[string]any{"quote": b64url(q[:100])})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d log lines, want one per attest:\n%s", len(lines), buf.String())
	}
	var ok, bad map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &ok); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &bad); err != nil {
		t.Fatal(err)
	}
	if ok["msg"] != "attest" || ok["result"] != "issued" || ok["endpoint"] != "SgxEnclave" || ok["mrenclave"] == nil || ok["policy_hash"] == nil {
		t.Errorf("success line %v", ok)
	}
	if bad["result"] != "rejected" || bad["code"] != maa.CodeInvalidQuote || !strings.Contains(fmt.Sprint(bad["reason"]), "truncated") {
		t.Errorf("failure line %v", bad)
	}
	if strings.Contains(buf.String(), b64url(runtime)) || strings.Contains(buf.String(), "secret-ish") {
		t.Error("runtime data was logged")
	}
}

// TestConcurrentPolicySwap attests while the policy is replaced: every token carries one of
// the two policies' hashes and the race detector sees no unsynchronized access.
func TestConcurrentPolicySwap(t *testing.T) {
	p := newPlatform(t)
	const admin = "0123456789abcdef-admin"
	s := newTestService(t, p, func(c *Config) { c.AdminToken = admin })
	h := s.Handler()
	key, _ := testSigning(t)
	other := "version=1.0; authorizationrules { => permit(); };"
	hashes := map[any]bool{policyHashOf(maapolicy.DefaultSGX): true, policyHashOf(other): true}
	runtime := []byte("rt")
	body := must(json.Marshal(map[string]any{"quote": b64url(p.quote(testReport(runtime))), "runtimeData": map[string]string{"data": b64url(runtime), "dataType": "Binary"}}))
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Go(func() {
			for i := 0; i < 20; i++ {
				res := do(t, h, "POST", sgxPath, "application/json", body, nil)
				_, claims := verifyToken(t, tokenOf(t, res), &key.PublicKey)
				if !hashes[claims["x-ms-policy-hash"]] {
					t.Errorf("policy hash %v is neither policy's", claims["x-ms-policy-hash"])
				}
			}
		})
	}
	wg.Go(func() {
		for i := 0; i < 20; i++ {
			text := []string{other, maapolicy.DefaultSGX}[i%2]
			tokenOf(t, do(t, h, "PUT", "/policies/SgxEnclave?api-version=2022-08-01", "text/plain", []byte(UnsignedPolicyJWS(text)), map[string]string{"Authorization": "Bearer " + admin}))
		}
	})
	wg.Wait()
}
