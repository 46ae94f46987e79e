package cli

// The published test vectors of docs/vectors (see its README.md): fixed keys, tokens, chain
// entries, countersignatures and receipts, genuine and broken, each with the verdict and reason
// code `proxy verify --receipt` must give. TestVectors regenerates every file in memory from
// the fixed keys (docs/vectors/keys.json) and the fixed clock, compares it byte for byte with
// the committed one (go test ./proxy/cli -run TestVectors -update rewrites them), then runs
// `proxy verify --receipt` on every committed receipt.
//
// The generator below is written from docs/protocol.md, not from proxy/chain: it builds the
// JSON payloads, the base64url and the RFC 6979 ECDSA signatures itself, so that the Go
// verifier is checked against the page, not against its own encoder.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"github.com/countersign/countersign/internal/cmdexit"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/cryptotest"
	"time"

	"github.com/countersign/countersign/proxy/chain"
)

var updateVectors = flag.Bool("update", false, "rewrite docs/vectors from the fixed keys and clock")

const (
	vectorsDir = "../../docs/vectors"
	vecIssuer  = "https://attest.vectors.countersign.example"
	// vecT0 is the fixed clock: the first entry's ts (2023-11-14T22:13:20Z).
	vecT0 = int64(1700000000000)
)

var vb64 = base64.RawURLEncoding

// kv is one JSON object member; obj an object with its members in this order.
type kv struct {
	K string
	V any
}
type obj []kv

func (o obj) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(m.K)
		v, err := json.Marshal(m.V)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// set replaces member k's value, or appends the member.
func (o obj) set(k string, v any) obj {
	o = slices.Clone(o)
	for i := range o {
		if o[i].K == k {
			o[i].V = v
			return o
		}
	}
	return append(o, kv{k, v})
}

func (o obj) del(k string) obj {
	return slices.DeleteFunc(slices.Clone(o), func(m kv) bool { return m.K == k })
}

func (o obj) get(k string) any {
	for _, m := range o {
		if m.K == k {
			return m.V
		}
	}
	return nil
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func h(s string) []byte { x := sha256.Sum256([]byte(s)); return x[:] }

// digest is b64url(H(s)).
func digest(s string) string { return vb64.EncodeToString(h(s)) }

// vecKeys is docs/vectors/keys.json: the issuer's RSA key and certificate, and each hop's
// P-256 key. Test keys, published on purpose: never use them for anything else.
type vecKeys struct {
	Issuer struct {
		URL         string `json:"url"`
		Kid         string `json:"kid"`
		PrivateKey  string `json:"privateKeyPkcs8Pem"`
		Certificate string `json:"certificateDerBase64"`
	} `json:"issuer"`
	Hops []vecHop `json:"hops"`
}

type vecHop struct {
	Name      string `json:"name"` // also its identity in policy.yaml
	D         string `json:"d"`    // the P-256 private scalar, hex
	X         string `json:"x"`    // b64url
	Y         string `json:"y"`    // b64url
	MREnclave string `json:"mrenclave"`
	key       *ecdsa.PrivateKey
}

// rfc6979Key is the P-256 private key of RFC 6979 appendix A.2.5: the key of the entry vector
// on docs/protocol.md (TestProtocolVector), used here as the first hop's key.
const rfc6979Key = "c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721"

var hopNames = []string{"records-api", "gateway", "inference"}

// loadKeys reads keys.json, or makes the keys once (deterministically: a fixed seed for the
// RSA key, fixed scalars for the hops) when it does not exist yet.
func loadKeys(t *testing.T) (*vecKeys, *rsa.PrivateKey, []byte) {
	t.Helper()
	var k vecKeys
	b, err := os.ReadFile(filepath.Join(vectorsDir, "keys.json"))
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &k); err != nil {
			t.Fatalf("keys.json: %v", err)
		}
	case errors.Is(err, os.ErrNotExist) && *updateVectors:
		cryptotest.SetGlobalRandom(t, 17)
		rk, err := rsa.GenerateKey(nil, 2048)
		if err != nil {
			t.Fatal(err)
		}
		p8, _ := x509.MarshalPKCS8PrivateKey(rk)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(17), Subject: pkix.Name{CommonName: "countersign test vectors issuer"},
			NotBefore: time.Unix(vecT0/1000, 0).Add(-365 * 24 * time.Hour).UTC(), NotAfter: time.Unix(vecT0/1000, 0).Add(10 * 365 * 24 * time.Hour).UTC()}
		der, err := x509.CreateCertificate(nil, tmpl, tmpl, &rk.PublicKey, rk)
		if err != nil {
			t.Fatal(err)
		}
		k.Issuer.URL = vecIssuer
		// Not b64url(H(certificate)), the local service's convention: verifiers only look kid up.
		k.Issuer.Kid = "countersign-test-vectors-2023"
		k.Issuer.PrivateKey = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}))
		k.Issuer.Certificate = base64.StdEncoding.EncodeToString(der)
		for i, n := range hopNames {
			d := rfc6979Key
			if i > 0 {
				d = hex.EncodeToString(h("countersign test vectors: hop key " + n))
			}
			k.Hops = append(k.Hops, vecHop{Name: n, D: d, MREnclave: hex.EncodeToString(h("countersign test vectors: mrenclave " + n))})
		}
	default:
		t.Fatalf("keys.json: %v (run with -update to make the keys)", err)
	}
	block, _ := pem.Decode([]byte(k.Issuer.PrivateKey))
	if block == nil {
		t.Fatal("keys.json: issuer key is not PEM")
	}
	pk, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	der, err := base64.StdEncoding.DecodeString(k.Issuer.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	for i := range k.Hops {
		d, _ := hex.DecodeString(k.Hops[i].D)
		key, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
		if err != nil {
			t.Fatalf("keys.json hop %s: %v", k.Hops[i].Name, err)
		}
		k.Hops[i].key = key
		pt, _ := key.PublicKey.Bytes() // 04 || X || Y
		k.Hops[i].X, k.Hops[i].Y = vb64.EncodeToString(pt[1:33]), vb64.EncodeToString(pt[33:])
	}
	return &k, pk.(*rsa.PrivateKey), der
}

// signStatement is `b64url(P) "." b64url(r || s)`, the signature ECDSA P-256 over
// H(context || b64url(P)) (RFC 6979, deterministic), low-s.
func signStatement(t testing.TB, key *ecdsa.PrivateKey, context string, payload []byte) string {
	t.Helper()
	p := vb64.EncodeToString(payload)
	return p + "." + signDigest(t, key, h(context+p))
}

// signV2 is the v2 encoding of docs/protocol.md section 10, written from the page: payload's
// leaf H(0x00 || context || b64url(P)) at index of a batch whose other leaves are siblings
// hashes of "sibling N", the root signed over "countersign/batch-root/v2." || b64url(root),
// then b64url(index || size || the RFC 9162 inclusion path).
func signV2(t testing.TB, key *ecdsa.PrivateKey, context string, payload []byte, index, siblings int) string {
	t.Helper()
	p := vb64.EncodeToString(payload)
	leaves := make([][]byte, 0, siblings+1)
	for i := 0; i < siblings+1; i++ {
		if i == index {
			leaves = append(leaves, h("\x00"+context+p))
		} else {
			leaves = append(leaves, h("\x00sibling "+fmt.Sprint(i)))
		}
	}
	root := mth(leaves)
	proof := []byte{byte(index), byte(len(leaves))}
	for _, x := range inclusionPath(index, leaves) {
		proof = append(proof, x...)
	}
	return p + "." + signDigest(t, key, h("countersign/batch-root/v2."+vb64.EncodeToString(root))) + "." + vb64.EncodeToString(proof)
}

// mth is RFC 9162's Merkle tree hash: one leaf is itself; n > 1 leaves split at the largest
// power of two below n, H(0x01 || left || right).
func mth(l [][]byte) []byte {
	if len(l) == 1 {
		return l[0]
	}
	k := 1
	for k*2 < len(l) {
		k *= 2
	}
	return h("\x01" + string(mth(l[:k])) + string(mth(l[k:])))
}

// inclusionPath is RFC 9162's PATH(m, D[n]), from the leaf up.
func inclusionPath(m int, l [][]byte) [][]byte {
	if len(l) == 1 {
		return nil
	}
	k := 1
	for k*2 < len(l) {
		k *= 2
	}
	if m < k {
		return append(inclusionPath(m, l[:k]), mth(l[k:]))
	}
	return append(inclusionPath(m-k, l[k:]), mth(l[:k]))
}

// signDigest is b64url(r || s), low-s, of the RFC 6979 ECDSA P-256 signature of digest d.
func signDigest(t testing.TB, key *ecdsa.PrivateKey, d []byte) string {
	t.Helper()
	der, err := key.Sign(nil, d, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	var rs struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(der, &rs); err != nil {
		t.Fatal(err)
	}
	n := elliptic.P256().Params().N
	if rs.S.Cmp(new(big.Int).Rsh(n, 1)) > 0 {
		rs.S.Sub(n, rs.S)
	}
	sig := make([]byte, 64)
	rs.R.FillBytes(sig[:32])
	rs.S.FillBytes(sig[32:])
	return vb64.EncodeToString(sig)
}

// highS is enc with its signature (r, s) as (r, n-s): the same signature's other encoding.
func highS(t testing.TB, enc string) string {
	p, s, _ := strings.Cut(enc, ".")
	sig, err := vb64.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	x := new(big.Int).SetBytes(sig[32:])
	x.Sub(elliptic.P256().Params().N, x).FillBytes(sig[32:])
	return p + "." + vb64.EncodeToString(sig)
}

const b64alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// spareBits sets the unused low bits of s's last character: another encoding of the same bytes.
func spareBits(t testing.TB, s string) string {
	if len(s)%4 == 0 {
		t.Fatalf("%d characters leave no spare bits", len(s))
	}
	last := strings.IndexByte(b64alphabet, s[len(s)-1])
	return s[:len(s)-1] + string(b64alphabet[last|1])
}

// vecRequest is a request one hop sent, for the holder's proof of what was asked.
type vecRequest struct {
	Hop       string  `json:"hop"`
	Method    string  `json:"method"`
	Authority string  `json:"authority"`
	Target    string  `json:"target"`
	Body      *string `json:"body"` // b64url; null: unknown length or over 64 KiB, B is "-"
	Digest    string  `json:"digest"`
}

type vecResponse struct {
	Status int    `json:"status"`
	Body   string `json:"body"` // b64url
	// A streamed exchange's (docs/protocol.md section 11): T, b64url, and RB.
	Trailers    *string `json:"trailers,omitempty"`
	RequestBody *string `json:"requestBody,omitempty"`
	Digest      string  `json:"digest"`
}

type vecCase struct {
	Name        string       `json:"name"`
	Description string       `json:"description"`
	File        string       `json:"file"`
	Identities  []string     `json:"identities,omitempty"`
	Answerer    []string     `json:"answerer,omitempty"`
	Verdict     string       `json:"verdict"` // accepted or rejected
	Code        string       `json:"code,omitempty"`
	Requests    []vecRequest `json:"requests,omitempty"`
	Response    *vecResponse `json:"response,omitempty"`
	receipt     []byte
}

// vecGen builds the vectors.
type vecGen struct {
	t      *testing.T
	keys   *vecKeys
	rsa    *rsa.PrivateKey
	hops   map[string]*vecHop
	tokens map[string]string // name → compact token
}

func (g *vecGen) token(hop string, edit func(obj) obj, kid string, key *rsa.PrivateKey) string {
	hp := g.hops[hop]
	iat := vecT0/1000 - 3600
	claims := obj{
		{"iss", vecIssuer}, {"iat", iat}, {"nbf", iat}, {"exp", iat + 28800}, {"jti", hex.EncodeToString(h("jti " + hop))[:32]},
		{"x-ms-ver", "1.0"}, {"x-ms-attestation-type", "sgx"},
		{"x-ms-policy-hash", digest("countersign test vectors policy")},
		{"x-ms-runtime", obj{{"keys", []obj{{{"kty", "EC"}, {"crv", "P-256"}, {"kid", "tls"}, {"x", hp.X}, {"y", hp.Y}}}}}},
		{"x-ms-sgx-is-debuggable", false},
		{"x-ms-sgx-mrenclave", hp.MREnclave},
		{"x-ms-sgx-mrsigner", hex.EncodeToString(h("countersign test vectors: mrsigner"))},
		{"x-ms-sgx-product-id", 1}, {"x-ms-sgx-svn", 2},
	}
	if edit != nil {
		claims = edit(claims)
	}
	if kid == "" {
		kid = g.keys.Issuer.Kid
	}
	if key == nil {
		key = g.rsa
	}
	hdr := obj{{"alg", "RS256"}, {"jku", vecIssuer + "/certs"}, {"kid", kid}, {"typ", "JWT"}}
	in := vb64.EncodeToString(mustJSON(g.t, hdr)) + "." + vb64.EncodeToString(mustJSON(g.t, claims))
	sig, err := rsa.SignPKCS1v15(nil, key, crypto.SHA256, h(in))
	if err != nil {
		g.t.Fatal(err)
	}
	return in + "." + vb64.EncodeToString(sig)
}

// scene is one request's path: the senders' entries, the answerer's countersignature and the
// receipt the first sender's app gets.
type scene struct {
	senders  []string          // hops that append entries, in order
	answerer string            // the hop that countersigns
	tokens   map[string]string // hop → token used (default g.tokens)
	// entry edits entry i's members before it is signed; signer picks its key (default: the hop's).
	entry  func(i int, e obj) obj
	signer func(i int) *ecdsa.PrivateKey
	cs     func(c obj) obj
	csKey  *ecdsa.PrivateKey
	// v2 signs every statement as protocol v2 (docs/protocol.md section 10): entries in
	// batches of one, the countersignature as leaf csIndex of a batch with csSiblings other
	// leaves.
	v2         bool
	csSiblings int
	csIndex    int
	// stream makes the exchange a streamed one (docs/protocol.md section 11): the request body
	// is not in the entry (B is "-"), and the countersignature covers the stream response
	// digest over the body, the trailers vecTrailers and the request body received.
	stream bool
	// results
	entries  []string
	countsig string
	requests []vecRequest
	response vecResponse
}

var (
	vecReqBody  = `{"inputs":[{"name":"scan","shape":[1,4],"datatype":"FP32","data":[0.1,0.2,0.3,0.4]}]}`
	vecRespBody = `{"outputs":[{"name":"label","datatype":"BYTES","shape":[1],"data":["normal"]}]}`
)

// vecTrailers is T of a streamed answer: one gRPC status field.
const vecTrailers = "grpc-status:0\n"

func authorityOf(hop string) string { return hop + ".vectors.countersign.example:8443" }

func requestDigest(method, authority, target string, body *string) string {
	b := "-"
	if body != nil {
		raw, _ := vb64.DecodeString(*body)
		b = vb64.EncodeToString(h(string(raw)))
	}
	return digest("countersign/request/v1\n" + method + "\n" + authority + "\n" + target + "\n" + b)
}

func responseDigest(status int, body []byte) string {
	return digest("countersign/response/v1\n" + strconv.Itoa(status) + "\n" + vb64.EncodeToString(h(string(body))))
}

func (g *vecGen) build(s *scene) *scene {
	tok := func(hop string) string {
		if t, ok := s.tokens[hop]; ok {
			return t
		}
		return g.tokens[hop]
	}
	prev := ""
	body := vb64.EncodeToString([]byte(vecReqBody))
	for i, hop := range s.senders {
		next := s.answerer
		if i+1 < len(s.senders) {
			next = s.senders[i+1]
		}
		rq := vecRequest{
			Hop:       hop,
			Method:    "POST",
			Authority: authorityOf(next),
			Target:    "/v2/models/chest-scan-classifier/infer",
			Body:      &body,
		}
		if s.stream {
			rq.Body = nil // B is "-": the countersignature binds the body instead
		}
		rq.Digest = requestDigest(rq.Method, rq.Authority, rq.Target, rq.Body)
		s.requests = append(s.requests, rq)
		e := obj{{"v", 1}, {"i", i}, {"prev", prev}, {"tok", digest(tok(hop))}, {"req", rq.Digest},
			{"ts", vecT0 + int64(5*i)}, {"nonce", vb64.EncodeToString(h("nonce " + hop)[:16])}}
		if s.entry != nil {
			e = s.entry(i, e)
		}
		key := g.hops[hop].key
		if s.signer != nil {
			if k := s.signer(i); k != nil {
				key = k
			}
		}
		var enc string
		if s.v2 {
			enc = signV2(g.t, key, "countersign/chain-entry/v2.", mustJSON(g.t, e.set("v", 2)), 0, 0)
		} else {
			enc = signStatement(g.t, key, "countersign/chain-entry/v1.", mustJSON(g.t, e))
		}
		s.entries = append(s.entries, enc)
		prev = digest(enc)
	}
	s.response = vecResponse{Status: 200, Body: vb64.EncodeToString([]byte(vecRespBody)), Digest: responseDigest(200, []byte(vecRespBody))}
	if s.stream {
		tr, rb := vb64.EncodeToString([]byte(vecTrailers)), vb64.EncodeToString(h(vecReqBody))
		s.response.Trailers, s.response.RequestBody = &tr, &rb
		s.response.Digest = digest("countersign/response-stream/v1\n200\n" + vb64.EncodeToString(h(vecRespBody)) + "\n" +
			vb64.EncodeToString(h(vecTrailers)) + "\n" + rb)
	}
	c := obj{{"v", 1}, {"entry", prev}, {"tok", digest(tok(s.answerer))}, {"resp", s.response.Digest}, {"ts", vecT0 + 20}}
	if s.cs != nil {
		c = s.cs(c)
	}
	key := g.hops[s.answerer].key
	if s.csKey != nil {
		key = s.csKey
	}
	if s.v2 {
		s.countsig = signV2(g.t, key, "countersign/countersignature/v2.", mustJSON(g.t, c.set("v", 2)), s.csIndex, s.csSiblings)
	} else {
		s.countsig = signStatement(g.t, key, "countersign/countersignature/v1.", mustJSON(g.t, c))
	}
	return s
}

// receipt is the receipt of s as the calling proxy hands it over (members in the order of
// docs/protocol.md), tokens in chain order then the answerer's.
func (g *vecGen) receipt(s *scene) obj {
	var toks []string
	for _, hop := range append(slices.Clone(s.senders), s.answerer) {
		t := g.tokens[hop]
		if x, ok := s.tokens[hop]; ok {
			t = x
		}
		if !slices.Contains(toks, t) {
			toks = append(toks, t)
		}
	}
	r := obj{{"v", 1}, {"chain", strings.Join(s.entries, ",")}, {"tokens", toks}, {"countersignature", s.countsig},
		{"status", 200}, {"bodySha256", vb64.EncodeToString(h(vecRespBody))}}
	if s.stream {
		r = append(r.set("v", 2), kv{"trailersSha256", vb64.EncodeToString(h(vecTrailers))}, kv{"requestBody", *s.response.RequestBody})
	}
	return r
}

func (g *vecGen) oneHop() *scene {
	return g.build(&scene{senders: []string{"records-api"}, answerer: "inference"})
}
func (g *vecGen) twoHop() *scene {
	return g.build(&scene{senders: []string{"records-api", "gateway"}, answerer: "inference"})
}

func withEntries(r obj, entries ...string) obj { return r.set("chain", strings.Join(entries, ",")) }

func withoutToken(r obj, tok string) obj {
	return r.set("tokens", slices.DeleteFunc(slices.Clone(r.get("tokens").([]string)), func(s string) bool { return s == tok }))
}

// generate returns every file of docs/vectors by name.
func generateVectors(t *testing.T) map[string][]byte {
	keys, rk, der := loadKeys(t)
	g := &vecGen{
		t:      t,
		keys:   keys,
		rsa:    rk,
		hops:   map[string]*vecHop{},
		tokens: map[string]string{},
	}
	for i := range keys.Hops {
		g.hops[keys.Hops[i].Name] = &keys.Hops[i]
	}
	for _, n := range hopNames {
		g.tokens[n] = g.token(n, nil, "", nil)
	}
	files := map[string][]byte{}
	files["keys.json"] = append(mustIndent(t, keys), '\n')
	files["certs.json"] = append(mustIndent(t, obj{{"keys", []obj{{{"kty", "RSA"}, {"kid", keys.Issuer.Kid}, {"x5c", []string{base64.StdEncoding.EncodeToString(der)}}}}}}), '\n')
	toks := obj{}
	for _, n := range hopNames {
		toks = append(toks, kv{n, g.tokens[n]})
	}
	files["tokens.json"] = append(mustIndent(t, toks), '\n')
	var pol strings.Builder
	pol.WriteString("# The policy of the test vectors (docs/vectors/README.md). Keys: --issuer-keys " + vecIssuer + "=certs.json\n")
	pol.WriteString("issuers:\n  - url: " + vecIssuer + "\nclockSkew: 60s\nidentities:\n")
	for _, n := range hopNames {
		fmt.Fprintf(&pol, "  %s:\n    mrenclave: [%q]\n", n, g.hops[n].MREnclave)
	}
	files["policy.yaml"] = []byte(pol.String())

	var cases []vecCase
	add := func(name, desc string, r any, verdict, code string, ids, ans []string) *vecCase {
		var b []byte
		switch x := r.(type) {
		case obj:
			b = mustJSON(t, x)
		case string:
			b = []byte(x)
		}
		cases = append(cases, vecCase{
			Name:        name,
			Description: desc,
			File:        "receipts/" + name + ".receipt",
			Identities:  ids,
			Answerer:    ans,
			Verdict:     verdict,
			Code:        code,
			receipt:     append(b, '\n'),
		})
		return &cases[len(cases)-1]
	}
	ok := func(name, desc string, s *scene, r any, ids, ans []string) {
		c := add(name, desc, r, "accepted", "", ids, ans)
		c.Requests, c.Response = s.requests, &s.response
	}
	bad := func(name, code, desc string, r any) { add(name, desc, r, "rejected", code, nil, nil) }

	one, two := g.oneHop(), g.twoHop()
	r1, r2 := g.receipt(one), g.receipt(two)
	ans := g.tokens["inference"]

	// Genuine.
	ok("one-hop", "records-api calls inference: one entry, inference's countersignature.", one, r1, nil, nil)
	ok("one-hop-identities", "The one-hop receipt, the hop required to be records-api and the answerer inference.", one, r1, []string{"records-api"}, []string{"inference"})
	ok("two-hop", "records-api calls gateway, which calls inference: two entries.", two, r2, nil, nil)
	ok("two-hop-identities", "The two-hop receipt, every hop required to be records-api or gateway, the answerer inference.", two, r2, []string{"records-api", "gateway"}, []string{"inference"})
	ok("two-hop-tokens-reordered", "tokens in another order (the answerer's first): tokens are found by digest, their order is free.", two,
		r2.set("tokens", []string{ans, g.tokens["gateway"], g.tokens["records-api"]}), nil, nil)
	ok("one-hop-header-form", "The one-hop receipt as the Countersign-Receipt header carries it: b64url of the JSON.", one, vb64.EncodeToString(mustJSON(t, r1)), nil, nil)
	late := g.build(&scene{senders: []string{"records-api"}, answerer: "inference", cs: func(c obj) obj { return c.set("ts", vecT0+3600_000) }})
	ok("countersigned-an-hour-later", "The countersignature an hour after the entry: offline there is no upper bound on the answer's delay.", late, g.receipt(late), nil, nil)

	// Protocol v2 (group signatures).
	v2one := g.build(&scene{senders: []string{"records-api"}, answerer: "inference", v2: true})
	ok("one-hop-v2", "Protocol v2: the entry and the countersignature each in a batch of one (proof 00 01, the root is the leaf).", v2one, g.receipt(v2one), nil, nil)
	v2two := g.build(&scene{
		senders:    []string{"records-api", "gateway"},
		answerer:   "inference",
		v2:         true,
		csSiblings: 2,
		csIndex:    1,
	})
	ok("two-hop-v2-batched", "Protocol v2, two hops: the countersignature is leaf 1 of a batch of 3 (its siblings are other statements of the same key).", v2two, g.receipt(v2two), nil, nil)
	{
		parts := strings.Split(v2two.countsig, ".")
		sib := strings.Split(signV2(t, g.hops["inference"].key, "countersign/countersignature/v2.", []byte("{}"), 0, 2), ".")
		bad("v2-countersignature-proof-of-a-sibling", "countersignature_invalid", "v2: the countersignature's inclusion proof replaced by its batch sibling's (index 0).",
			g.receipt(v2two).set("countersignature", parts[0]+"."+parts[1]+"."+sib[2]))
		ep := strings.Split(v2one.entries[0], ".")
		bad("v2-entry-proof-size-17", "chain_malformed", "v2: the entry's proof says a batch of 17 (at most 16).",
			withEntries(g.receipt(v2one), ep[0]+"."+ep[1]+"."+vb64.EncodeToString([]byte{0, 17})))
		bad("v2-entry-in-two-parts", "chain_malformed", "v2: the entry (v 2) without its proof part.", withEntries(g.receipt(v2one), ep[0]+"."+ep[1]))
	}

	// Streamed exchanges (section 11): v2 receipts.
	{
		st := g.build(&scene{senders: []string{"records-api"}, answerer: "inference", v2: true, stream: true})
		rs := g.receipt(st)
		ok("one-hop-streamed", "A streamed exchange (gRPC): the entry's B is -, the countersignature covers the body, the trailers (grpc-status 0) and the request body received; a v2 receipt.", st, rs, nil, nil)
		early := digest("countersign/response-stream/v1\n200\n" + vb64.EncodeToString(h(vecRespBody)) + "\n" + vb64.EncodeToString(h(vecTrailers)) + "\n-")
		cut := g.build(&scene{senders: []string{"records-api"}, answerer: "inference", stream: true, cs: func(c obj) obj { return c.set("resp", early) }})
		dash := "-"
		cut.response.RequestBody, cut.response.Digest = &dash, early
		ok("one-hop-streamed-answered-early", "A streamed exchange answered before the request body ended: requestBody is - (v1 statements).", cut, g.receipt(cut).set("requestBody", "-"), nil, nil)
		bad("streamed-request-body-changed", "countersignature_invalid", "A v2 receipt whose requestBody says - although the countersignature covers the body's digest.", rs.set("requestBody", "-"))
		bad("streamed-trailers-changed", "countersignature_invalid", "A v2 receipt whose trailersSha256 is that of grpc-status:7.", rs.set("trailersSha256", vb64.EncodeToString(h("grpc-status:7\n"))))
		bad("streamed-receipt-as-v1", "receipt_malformed", "A streamed exchange's receipt (with trailersSha256 and requestBody) that says v 1.", rs.set("v", 1))
		bad("streamed-receipt-without-request-body", "receipt_malformed", "A v2 receipt without requestBody.", rs.del("requestBody"))
	}

	// The receipt.
	bad("receipt-v2", "receipt_malformed", "The receipt's v is 2.", r1.set("v", 2))
	bad("receipt-unknown-member", "receipt_malformed", "The receipt has a member the page does not list.", r1.set("note", "x"))
	bad("receipt-member-missing", "receipt_malformed", "The receipt has no status.", r1.del("status"))
	bad("receipt-member-case", "receipt_malformed", "The receipt spells bodySha256 as bodysha256.", append(r1.del("bodySha256"), kv{"bodysha256", r1.get("bodySha256")}))
	bad("receipt-member-twice", "receipt_malformed", "The receipt's status appears twice (200, then 500).", append(slices.Clone(r1), kv{"status", 500}))
	bad("receipt-status-string", "receipt_malformed", "The receipt's status is the string \"200\".", r1.set("status", "200"))
	bad("receipt-status-out-of-range", "receipt_malformed", "The receipt's status is 1000.", r1.set("status", 1000))
	bad("receipt-chain-empty", "chain_missing", "The receipt's chain is the empty string.", r1.set("chain", ""))
	bad("receipt-chain-trailing-comma", "chain_malformed", "The receipt's chain ends in a comma: an empty entry.", r1.set("chain", one.entries[0]+","))
	bad("receipt-body-not-digest", "receipt_malformed", "bodySha256 is 31 bytes.", r1.set("bodySha256", vb64.EncodeToString(h("x")[:31])))
	js := mustJSON(t, r1)
	for vb64.EncodedLen(len(js))%4 == 0 { // JSON may end in white space: find a length with spare bits
		js = append(js, ' ')
	}
	ok("one-hop-header-form-whitespace", "The header form of the one-hop JSON followed by white space, canonical: the twin of the two cases below.", one, vb64.EncodeToString(js), nil, nil)
	bad("receipt-header-spare-bits", "receipt_malformed", "The header form (of the JSON followed by white space, for a length that leaves spare bits) with the unused bits of its last character set: not canonical base64url.", spareBits(t, vb64.EncodeToString(js)))
	bad("receipt-header-padded", "receipt_malformed", "The header form (of the same JSON and white space) with = padding.", base64.URLEncoding.EncodeToString(js))
	bad("receipt-token-twice", "receipt_malformed", "tokens lists records-api's token twice.", r1.set("tokens", []string{g.tokens["records-api"], g.tokens["records-api"], ans}))
	bad("receipt-token-unnamed", "receipt_malformed", "tokens carries gateway's token, which nothing in the one-hop receipt names.", r1.set("tokens", []string{g.tokens["records-api"], g.tokens["gateway"], ans}))

	// The response.
	bad("body-sha256-tampered", "countersignature_invalid", "bodySha256 replaced by the digest of another body.", r1.set("bodySha256", vb64.EncodeToString(h(`{"outputs":[{"name":"label","data":["nodule"]}]}`))))
	bad("status-tampered", "countersignature_invalid", "status changed from 200 to 201.", r1.set("status", 201))

	// The chain.
	bad("first-entry-dropped", "chain_order_invalid", "Two-hop, the first entry dropped (its token still listed): the remaining entry's i is 1 at position 0.", withEntries(r2, two.entries[1]))
	bad("first-entry-and-token-dropped", "chain_order_invalid", "Two-hop, the first entry and its token dropped.", withoutToken(withEntries(r2, two.entries[1]), g.tokens["records-api"]))
	bad("last-entry-dropped", "countersignature_invalid", "Two-hop, the last entry and its token dropped: the countersignature answers an entry the chain no longer has.", withoutToken(withEntries(r2, two.entries[0]), g.tokens["gateway"]))
	bad("entries-swapped", "chain_order_invalid", "Two-hop, the entries in reverse order.", withEntries(r2, two.entries[1], two.entries[0]))
	bad("entry-duplicated", "chain_duplicate_entry", "Two-hop, the first entry repeated after itself.", withEntries(r2, two.entries[0], two.entries[0], two.entries[1]))
	bad("entry-high-s", "signature_not_low_s", "The entry's signature as (r, n-s).", withEntries(r1, highS(t, one.entries[0])))
	p, s, _ := strings.Cut(one.entries[0], ".")
	bad("entry-payload-spare-bits", "chain_malformed", "The entry's payload re-encoded with the unused bits of its last character set.", withEntries(r1, spareBits(t, p)+"."+s))
	bad("entry-signature-spare-bits", "chain_malformed", "The entry's signature re-encoded with the unused bits of its last character set.", withEntries(r1, p+"."+spareBits(t, s)))
	bad("entry-padded", "chain_malformed", "The entry's payload with = padding.", withEntries(r1, p+strings.Repeat("=", (4-len(p)%4)%4)+"."+s))
	resign := func(edit func(i int, e obj) obj) obj {
		sc := g.build(&scene{senders: []string{"records-api"}, answerer: "inference", entry: edit})
		return g.receipt(sc)
	}
	bad("entry-v2", "chain_malformed", "The entry's v is 2 (signed).", resign(func(_ int, e obj) obj { return e.set("v", 2) }))
	bad("entry-unknown-member", "chain_malformed", "The entry has an eighth member (signed).", resign(func(_ int, e obj) obj { return e.set("x", 1) }))
	bad("entry-member-case", "chain_malformed", "The entry spells req as REQ (signed).", resign(func(_ int, e obj) obj { return append(e.del("req"), kv{"REQ", e.get("req")}) }))
	bad("entry-index-wrong", "chain_order_invalid", "The entry's i is 1 at position 0 (signed).", resign(func(_ int, e obj) obj { return e.set("i", 1) }))
	bad("entry-prev-not-empty", "chain_link_broken", "The first entry's prev is a digest, not \"\" (signed).", resign(func(_ int, e obj) obj { return e.set("prev", digest("x")) }))
	spliced := g.build(&scene{senders: []string{"records-api", "gateway"}, answerer: "inference", entry: func(i int, e obj) obj {
		if i == 1 {
			return e.set("prev", digest("another first entry"))
		}
		return e
	}})
	bad("entry-prev-broken", "chain_link_broken", "Two-hop, the second entry's prev is not the digest of the first (signed).", g.receipt(spliced))
	older := g.build(&scene{senders: []string{"records-api", "gateway"}, answerer: "inference", entry: func(i int, e obj) obj {
		if i == 1 {
			return e.set("ts", vecT0-1)
		}
		return e
	}})
	bad("entry-ts-decreasing", "chain_order_invalid", "Two-hop, the second entry 1 ms older than the first (signed).", g.receipt(older))
	wrongKey := g.build(&scene{senders: []string{"records-api"}, answerer: "inference", signer: func(int) *ecdsa.PrivateKey { return g.hops["gateway"].key }})
	bad("entry-wrong-key", "chain_signature_invalid", "The entry signed by gateway's key, which records-api's token does not name.", g.receipt(wrongKey))
	// Signed over H(H(m)) (ES256 over the digest): the mistake the conventions warn about.
	bad("entry-signed-over-double-hash", "chain_signature_invalid", "The entry's signature over H(H(m)) instead of H(m).",
		withEntries(r1, p+"."+signDigest(t, g.hops["records-api"].key, h(string(h("countersign/chain-entry/v1."+p))))))
	bad("hop-token-dropped", "chain_token_unavailable", "records-api's token removed from tokens.", withoutToken(r1, g.tokens["records-api"]))

	// The hops' tokens, judged at the countersignature's time.
	tokScene := func(tok string) obj {
		return g.receipt(g.build(&scene{senders: []string{"records-api"}, answerer: "inference", tokens: map[string]string{"records-api": tok}}))
	}
	tsig := g.tokens["records-api"]
	tsig = tsig[:len(tsig)-2] + map[bool]string{true: "AA", false: "AQ"}[strings.HasSuffix(tsig, "AQ")]
	bad("hop-token-bad-signature", "signature_invalid", "records-api's token with its RS256 signature altered (the entry names the altered token).", tokScene(tsig))
	rec := []string{"records-api"}
	debugTok := tokScene(g.token("records-api", func(c obj) obj { return c.set("x-ms-sgx-is-debuggable", true) }, "", nil))
	add("hop-token-debuggable", "records-api's token says x-ms-sgx-is-debuggable: true; the hop required to be records-api.", debugTok, "rejected", "debug_not_allowed", rec, nil)
	bad("hop-token-debuggable-any-identity", "no_identity_matches", "The same receipt, no identity named: every identity of the policy refuses the hop.", debugTok)
	add("hop-token-debuggable-missing", "records-api's token has no x-ms-sgx-is-debuggable; the hop required to be records-api.",
		tokScene(g.token("records-api", func(c obj) obj { return c.del("x-ms-sgx-is-debuggable") }, "", nil)), "rejected", "claim_missing", rec, nil)
	bad("hop-token-svn-string", "claim_type", "records-api's token has x-ms-sgx-svn as the string \"2\".", tokScene(g.token("records-api", func(c obj) obj { return c.set("x-ms-sgx-svn", "2") }, "", nil)))
	add("hop-token-no-attestation-type", "records-api's token has no x-ms-attestation-type; the hop required to be records-api.",
		tokScene(g.token("records-api", func(c obj) obj { return c.del("x-ms-attestation-type") }, "", nil)), "rejected", "attestation_type_not_allowed", rec, nil)
	bad("hop-token-unknown-kid", "kid_unknown", "records-api's token names a kid the issuer's key set does not have.", tokScene(g.token("records-api", nil, digest("another key"), nil)))
	bad("hop-token-untrusted-issuer", "issuer_untrusted", "records-api's token has iss with a trailing slash.", tokScene(g.token("records-api", func(c obj) obj { return c.set("iss", vecIssuer+"/") }, "", nil)))
	bad("hop-token-no-runtime", "chain_signature_invalid", "records-api's token has no x-ms-runtime: no key to check the entry with.", tokScene(g.token("records-api", func(c obj) obj { return c.del("x-ms-runtime") }, "", nil)))
	add("hop-identity-wrong", "The one-hop receipt, the hop required to be gateway.", r1, "rejected", "mrenclave_mismatch", []string{"gateway"}, nil)
	add("answerer-identity-wrong", "The one-hop receipt, the answerer required to be records-api.", r1, "rejected", "mrenclave_mismatch", nil, []string{"records-api"})

	// The countersignature.
	bad("answerer-token-dropped", "chain_token_unavailable", "The answerer's token removed from tokens.", withoutToken(r1, ans))
	other := g.token("inference", func(c obj) obj { return c.set("jti", hex.EncodeToString(h("another jti"))[:32]) }, "", nil)
	bad("answerer-token-swapped", "chain_token_unavailable", "The answerer's token replaced by another valid token of the same enclave.", r1.set("tokens", []string{g.tokens["records-api"], other}))
	bad("countersignature-high-s", "signature_not_low_s", "The countersignature's signature as (r, n-s).", r1.set("countersignature", highS(t, one.countsig)))
	cp, cs, _ := strings.Cut(one.countsig, ".")
	bad("countersignature-spare-bits", "countersignature_invalid", "The countersignature's payload re-encoded with the unused bits of its last character set.", r1.set("countersignature", spareBits(t, cp)+"."+cs))
	csScene := func(edit func(obj) obj, key *ecdsa.PrivateKey) obj {
		return g.receipt(g.build(&scene{senders: []string{"records-api"}, answerer: "inference", cs: edit, csKey: key}))
	}
	bad("countersignature-v2", "countersignature_invalid", "The countersignature's v is 2 (signed).", csScene(func(c obj) obj { return c.set("v", 2) }, nil))
	bad("countersignature-unknown-member", "countersignature_invalid", "The countersignature has a sixth member (signed).", csScene(func(c obj) obj { return c.set("status", 200) }, nil))
	bad("countersignature-wrong-entry", "countersignature_invalid", "Two-hop, the countersignature answers the first entry, not the last (signed).",
		g.receipt(g.build(&scene{senders: []string{"records-api", "gateway"}, answerer: "inference", cs: func(c obj) obj { return c.set("entry", digest(two.entries[0])) }})))
	bad("countersignature-wrong-key", "countersignature_invalid", "The countersignature signed by records-api's key, which the answerer's token does not name.", csScene(nil, g.hops["records-api"].key))
	bad("countersignature-before-entry", "countersignature_invalid", "The countersignature's ts 1 ms before the entry's (signed).", csScene(func(c obj) obj { return c.set("ts", vecT0-1) }, nil))
	bad("entry-after-countersignature", "chain_stale", "The entry's ts 61 s after the countersignature's (signed): more than the 60 s skew.",
		g.receipt(g.build(&scene{senders: []string{"records-api"}, answerer: "inference", entry: func(_ int, e obj) obj { return e.set("ts", vecT0+20+61_000) }})))
	bad("countersigned-after-tokens-expired", "token_expired", "The countersignature 8 hours after the entry: the tokens (exp 7 h after the entry) are judged at the countersignature's time.",
		csScene(func(c obj) obj { return c.set("ts", vecT0+8*3600_000) }, nil))

	for i := range cases {
		files[cases[i].File] = cases[i].receipt
	}
	files["cases.json"] = append(mustIndent(t, cases), '\n')
	files["digests.json"] = append(mustIndent(t, digestVectors()), '\n')
	return files
}

type digestVector struct {
	Description string  `json:"description"`
	Kind        string  `json:"kind"` // request or response
	Method      string  `json:"method,omitempty"`
	Authority   string  `json:"authority,omitempty"`
	Target      string  `json:"target,omitempty"`
	Status      int     `json:"status,omitempty"`
	Body        *string `json:"body"` // b64url; null in a request: B is "-"
	Message     string  `json:"message"`
	Digest      string  `json:"digest"`
}

func digestVectors() []digestVector {
	str := func(s string) *string { e := vb64.EncodeToString([]byte(s)); return &e }
	empty := ""
	reqs := []digestVector{
		{
			Description: "GET with no body and no Content-Length: digested as the empty body (like Content-Length: 0)",
			Method:      "GET",
			Authority:   "records.vectors.countersign.example:8443",
			Target:      "/patients/17?fields=name",
			Body:        &empty,
		},
		{
			Description: "POST with a 13-byte body",
			Method:      "POST",
			Authority:   "inference.vectors.countersign.example:8443",
			Target:      "/v2/models/x/infer",
			Body:        str(`{"inputs":[]}`),
		},
		{
			Description: "POST whose body is over 65536 bytes, or whose length the receiving proxy does not know (chunked): B is -",
			Method:      "POST",
			Authority:   "inference.vectors.countersign.example:8443",
			Target:      "/upload",
			Body:        nil,
		},
	}
	var out []digestVector
	for _, r := range reqs {
		r.Kind = "request"
		b := "-"
		if r.Body != nil {
			raw, _ := vb64.DecodeString(*r.Body)
			b = vb64.EncodeToString(h(string(raw)))
		}
		r.Message = "countersign/request/v1\n" + r.Method + "\n" + r.Authority + "\n" + r.Target + "\n" + b
		r.Digest = digest(r.Message)
		out = append(out, r)
	}
	for _, r := range []digestVector{
		{Description: "200 with a JSON body", Status: 200, Body: str(vecRespBody)},
		{Description: "204 with no body", Status: 204, Body: &empty},
	} {
		r.Kind = "response"
		raw, _ := vb64.DecodeString(*r.Body)
		r.Message = "countersign/response/v1\n" + strconv.Itoa(r.Status) + "\n" + vb64.EncodeToString(h(string(raw)))
		r.Digest = digest(r.Message)
		out = append(out, r)
	}
	return out
}

func mustIndent(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestVectors: the committed vectors are what the generator makes (-update rewrites them), and
// `proxy verify --receipt` gives every receipt exactly its expected verdict and reason code.
func TestVectors(t *testing.T) {
	files := generateVectors(t)
	for name, b := range files {
		path := filepath.Join(vectorsDir, name)
		if *updateVectors {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (go test ./proxy/cli -run TestVectors -update writes the vectors)", err)
		}
		if !bytes.Equal(got, b) {
			t.Errorf("docs/vectors/%s differs from what the generator makes (go test ./proxy/cli -run TestVectors -update rewrites it)", name)
		}
	}
	if *updateVectors {
		// Remove receipts no case names any more.
		old, _ := filepath.Glob(filepath.Join(vectorsDir, "receipts", "*"))
		for _, f := range old {
			if _, ok := files["receipts/"+filepath.Base(f)]; !ok {
				_ = os.Remove(f)
			}
		}
	}
	checkVectorFiles(t)
}

// checkVectorFiles reads the committed vectors, as a verifier in another language would.
func checkVectorFiles(t *testing.T) {
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(vectorsDir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var cases []vecCase
	if err := json.Unmarshal(read("cases.json"), &cases); err != nil {
		t.Fatal(err)
	}
	var keys vecKeys
	if err := json.Unmarshal(read("keys.json"), &keys); err != nil {
		t.Fatal(err)
	}
	page := string(read("../protocol.md"))
	named := map[string]bool{}
	for _, c := range cases {
		named[c.File] = true
	}
	onDisk, _ := filepath.Glob(filepath.Join(vectorsDir, "receipts", "*"))
	for _, f := range onDisk {
		if !named["receipts/"+filepath.Base(f)] {
			t.Errorf("docs/vectors/receipts/%s: no case in cases.json names it", filepath.Base(f))
		}
	}
	seen := map[string]bool{}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			if seen[c.Name] {
				t.Fatalf("case %s twice", c.Name)
			}
			seen[c.Name] = true
			if (c.Verdict == "accepted") != (c.Code == "") || (c.Verdict != "accepted" && c.Verdict != "rejected") {
				t.Fatalf("verdict %q with code %q", c.Verdict, c.Code)
			}
			if c.Code != "" && !strings.Contains(page, "`"+c.Code+"`") {
				t.Errorf("reason code %s is not on docs/protocol.md", c.Code)
			}
			args := []string{"--policy", filepath.Join(vectorsDir, "policy.yaml"), "--receipt", filepath.Join(vectorsDir, c.File),
				"--issuer-keys", keys.Issuer.URL + "=" + filepath.Join(vectorsDir, "certs.json")}
			if len(c.Identities) > 0 {
				args = append(args, "--identity", strings.Join(c.Identities, ","))
			}
			if len(c.Answerer) > 0 {
				args = append(args, "--answerer", strings.Join(c.Answerer, ","))
			}
			var out, errOut bytes.Buffer
			err := runVerify(context.Background(), args, Streams{Out: &out, Err: &errOut})
			first, _, _ := strings.Cut(out.String(), "\n")
			switch {
			case c.Verdict == "accepted":
				if err != nil || !strings.HasPrefix(first, "accepted: ") {
					t.Fatalf("want accepted, got %v\n%s%s", err, out.String(), errOut.String())
				}
			case err == nil || cmdexit.Code(err) != ExitRejected:
				t.Fatalf("want rejected (exit %d) with %s, got %v\n%s%s", ExitRejected, c.Code, err, out.String(), errOut.String())
			case first != "rejected: "+c.Code:
				t.Fatalf("want rejected: %s, got %q\n%s", c.Code, first, out.String())
			}
			if c.Verdict != "accepted" {
				return
			}
			// What the holder keeps: the requests and the response, whose digests the receipt
			// holds.
			r, err := chain.ParseReceipt(read(c.File))
			if err != nil {
				t.Fatal(err)
			}
			entries, err := chain.Split(r.Chain, 32)
			if err != nil || len(entries) != len(c.Requests) {
				t.Fatalf("%d entries, %d requests (%v)", len(entries), len(c.Requests), err)
			}
			for i, rq := range c.Requests {
				var body []byte
				if rq.Body != nil {
					b, _ := vb64.DecodeString(*rq.Body)
					s := sha256.Sum256(b)
					body = s[:]
				}
				d := chain.RequestDigest(rq.Method, rq.Authority, rq.Target, body)
				e, _, _, err := chain.ParseEntry(entries[i])
				if err != nil {
					t.Fatal(err)
				}
				if got := vb64.EncodeToString(d[:]); got != rq.Digest || got != e.Req {
					t.Errorf("request %d: digest %s, case says %s, entry's req %s", i, got, rq.Digest, e.Req)
				}
			}
			body, _ := vb64.DecodeString(c.Response.Body)
			bs := sha256.Sum256(body)
			rd := chain.ResponseDigest(c.Response.Status, bs[:])
			if c.Response.Trailers != nil { // streamed: the digest the Go code computes from T and RB
				tr, _ := vb64.DecodeString(*c.Response.Trailers)
				ts := sha256.Sum256(tr)
				rd = chain.StreamResponseDigest(c.Response.Status, bs[:], ts[:], *c.Response.RequestBody)
				if r.TrailersSHA256 != vb64.EncodeToString(ts[:]) || r.RequestBody != *c.Response.RequestBody {
					t.Errorf("the receipt's trailersSha256 %s / requestBody %s are not the case's", r.TrailersSHA256, r.RequestBody)
				}
			}
			cs, _, _, err := chain.ParseCountersig(r.Countersignature)
			if err != nil {
				t.Fatal(err)
			}
			if got := vb64.EncodeToString(rd[:]); got != c.Response.Digest || got != cs.Resp || vb64.EncodeToString(bs[:]) != r.BodySHA256 {
				t.Errorf("response: digest %s, case says %s, countersignature's resp %s", got, c.Response.Digest, cs.Resp)
			}
		})
	}
	var dv []digestVector
	if err := json.Unmarshal(read("digests.json"), &dv); err != nil {
		t.Fatal(err)
	}
	for i, v := range dv {
		var body []byte
		if v.Body != nil {
			b, _ := vb64.DecodeString(*v.Body)
			s := sha256.Sum256(b)
			body = s[:]
		}
		var d [32]byte
		if v.Kind == "request" {
			d = chain.RequestDigest(v.Method, v.Authority, v.Target, body)
		} else {
			d = chain.ResponseDigest(v.Status, body)
		}
		if got := vb64.EncodeToString(d[:]); got != v.Digest {
			t.Errorf("digests.json[%d] (%s): chain gives %s, the vector says %s", i, v.Description, got, v.Digest)
		}
	}
}
