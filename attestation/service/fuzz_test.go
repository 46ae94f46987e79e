package service

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/countersign/countersign/attestation/maa"
	"github.com/countersign/countersign/attestation/quote"
)

// fuzzPlatform has a fixed key so that quotes in the committed corpus stay valid.
func fuzzPlatform() platform {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x42}, ed25519.SeedSize))
	return platform{priv: priv, pub: priv.Public().(ed25519.PublicKey)}
}

// fuzzSeeds are valid and nearly valid attest bodies.
func fuzzSeeds() [][]byte {
	p := fuzzPlatform()
	runtime := []byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`)
	q := p.quote(testReport(runtime))
	oe := quote.WrapOEReport(q)
	withConfig := testReport(runtime)
	configID := sha256.Sum256([]byte("{}"))
	copy(withConfig.ConfigID[:], configID[:])
	oeConfig := quote.WrapOEReport(p.quote(withConfig))
	m := func(v map[string]any) []byte { return must(json.Marshal(v)) }
	rd := func(d []byte, typ string) map[string]string {
		return map[string]string{"data": b64url(d), "dataType": typ}
	}
	return [][]byte{
		m(map[string]any{"quote": b64url(q), "runtimeData": rd(runtime, "JSON"), "nonce": "abc"}),
		m(map[string]any{"quote": b64url(q), "runtimeData": rd(runtime, "Binary"), "nonce": 7}),
		m(map[string]any{"report": b64url(oe), "runtimeData": rd(runtime, "Binary")}),
		m(map[string]any{"report": b64url(oeConfig), "runtimeData": rd(runtime, "JSON"), "initTimeData": rd([]byte("{}"), "JSON")}),
		m(map[string]any{"quote": b64url(q), "runtimeData": rd(runtime, "Binary"), "draftPolicyForAttestation": "version=1.0; authorizationrules { [type==\"x-ms-sgx-svn\", value==3] => permit(); };"}),
		m(map[string]any{"quote": b64url(q[:300])}),
		m(map[string]any{"quote": 5}),
		m(map[string]any{"quote": "ab+_cd"}),
		[]byte(`{"quote":"AAAA","runtimeData":{"data":"AAAA","dataType":"Other"}}`),
		[]byte(`{"quote":null,"report":[1,2,3],"nonce":{"x":1}}`),
		[]byte(`[]`),
		[]byte(``),
		[]byte(`{"quote":"` + b64url(q) + `"} trailing`),
	}
}

// FuzzAttest feeds arbitrary bodies to both attest endpoints: never a panic, always a 2xx or
// 4xx status with JSON in MAA's shapes, and a 200 only with a token for a trusted quote.
func FuzzAttest(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	p := fuzzPlatform()
	key, _ := testSigning(f)
	s := newTestService(f, p, func(c *Config) { c.MaxBodyBytes = 64 << 10 })
	h := s.Handler()
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, path := range []string{sgxPath, oePath} {
			req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			res := response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
			switch {
			case res.status == http.StatusOK:
				_, claims := verifyToken(t, tokenOf(t, res), &key.PublicKey)
				if claims[maa.ClaimSim] != true || claims[maa.ClaimSGXDebuggable] != true {
					t.Fatalf("token without the simulation markers: %v", claims)
				}
			case res.status >= 400 && res.status < 500:
				errorOf(t, res)
			default:
				t.Fatalf("status %d for %s: %s", res.status, path, res.body)
			}
			if ct := res.header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
				t.Fatalf("Content-Type %q", ct)
			}
		}
	})
}

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/FuzzAttest/seed-* from fuzzSeeds")

// TestFuzzAttestCorpus keeps the committed seed corpus in step with fuzzSeeds: go test
// -run TestFuzzAttestCorpus -update-corpus rewrites it.
func TestFuzzAttestCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzAttest")
	for i, s := range fuzzSeeds() {
		path := filepath.Join(dir, fmt.Sprintf("seed-%02d", i))
		want := "go test fuzz v1\n[]byte(" + strconv.Quote(string(s)) + ")\n"
		if *updateCorpus {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != want {
			t.Errorf("%s is missing or stale (%v): run go test -run TestFuzzAttestCorpus -update-corpus", path, err)
		}
	}
}

// TestFuzzSeedsValid: the first seeds are valid requests, so the fuzzer starts from the
// success path too.
func TestFuzzSeedsValid(t *testing.T) {
	s := newTestService(t, fuzzPlatform(), nil)
	seeds := fuzzSeeds()
	for i, path := range []string{sgxPath, sgxPath, oePath, oePath, sgxPath} {
		tokenOf(t, do(t, s.Handler(), http.MethodPost, path, "application/json", seeds[i], nil))
	}
}
