package server_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/proxy/chain"
	"github.com/countersign/countersign/proxy/config"
)

// highS returns enc with its signature (r, s) replaced by (r, n-s), which verifies as well.
func highS(t *testing.T, enc string) string {
	parts := strings.Split(enc, ".") // v1: payload.sig, v2: payload.sig.proof
	sig, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	s := new(big.Int).SetBytes(sig[32:])
	s.Sub(elliptic.P256().Params().N, s)
	s.FillBytes(sig[32:])
	parts[1] = base64.RawURLEncoding.EncodeToString(sig)
	return strings.Join(parts, ".")
}

// spareBits returns enc with the unused low bits of its signature's last base64url character
// set: the same bytes, another encoding that encoding/base64 accepts.
func spareBits(enc string) string {
	const alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alpha, enc[len(enc)-1])
	return enc[:len(enc)-1] + string(alpha[last|1])
}

// signRaw signs a hand-written entry payload with key as a proxy signs entries.
func signRaw(t *testing.T, key *ecdsa.PrivateKey, payload string) string {
	p := base64.RawURLEncoding.EncodeToString([]byte(payload))
	h := sha256.Sum256([]byte("countersign/chain-entry/v1." + p))
	r, s, err := ecdsa.Sign(rand.Reader, key, h[:])
	if err != nil {
		t.Fatal(err)
	}
	if s.Cmp(new(big.Int).Rsh(elliptic.P256().Params().N, 1)) > 0 {
		s.Sub(elliptic.P256().Params().N, s)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return p + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// TestReplayVariantsRefused acts as a hostile peer with a genuine token (front's certificate
// and key). A request entry that passed once is replayed with its signature as (r, n-s) and
// with other spare bits in its base64url: both once verified and were forwarded again, since
// the replay set keyed the encoded entry. Entries with a duplicated member or members in
// another case (signed by the genuine key) were read differently by other parsers. All are
// refused now; the proxy's own entries are low-s.
func TestReplayVariantsRefused(t *testing.T) {
	e := newEnv(t, time.Hour)
	a, _ := newApp(t)
	bc := e.cfg("back", mrBack)
	bc.Inbound = []config.Inbound{{
		Name:      "api",
		Listen:    "127.0.0.1:0",
		Protocol:  "http",
		ForwardTo: strings.TrimPrefix(a.URL, "http://"),
		Allow:     []string{"front"},
	}}
	back := e.start(bc)
	fc := e.cfg("front", mrFront)
	fc.Outbound = []config.Outbound{{
		Name:             "o",
		Listen:           "127.0.0.1:0",
		Protocol:         "http",
		Upstream:         back.Addr("api"),
		UpstreamIdentity: []string{"back"},
	}}
	front := e.start(fc)
	client := attestedClient(&front.Identity.Current().Cert)
	empty := sha256.Sum256(nil)
	reqDigest := chain.RequestDigest("GET", "back.internal", "/x", empty[:])
	send := func(chainHdr string) *http.Response {
		req, _ := http.NewRequest("GET", "https://"+back.Addr("api")+"/x", nil)
		req.Host = "back.internal"
		req.Header.Set(chain.HeaderChain, chainHdr)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	self := selfOf(front)
	good, _, err := chain.Append(nil, self, reqDigest, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if r := send(good); r.StatusCode != 200 {
		t.Fatalf("valid entry: %d %s %s", r.StatusCode, r.Header.Get(chain.HeaderReject), r.Header.Get(chain.HeaderRejectCause))
	}
	tok := chain.Digest(self.Token)
	req := b64(reqDigest[:])
	nonce := func() string { var n [16]byte; _, _ = rand.Read(n[:]); return b64(n[:]) }
	ts := func() int64 { return time.Now().UnixMilli() }
	cases := []struct{ name, chain, code string }{
		{"high s", highS(t, good), "signature_not_low_s"},
		{"spare bits", spareBits(good), "chain_malformed"},
		{"replayed", good, "chain_replayed"},
		{"member twice", signRaw(t, self.Key, fmt.Sprintf(`{"v":1,"i":0,"prev":"","tok":%q,"req":%q,"ts":%d,"nonce":%q,"req":%q}`, tok, b64(make([]byte, 32)), ts(), nonce(), req)), "chain_malformed"},
		{"members in other case", signRaw(t, self.Key, fmt.Sprintf(`{"V":1,"I":0,"PREV":"","Tok":%q,"REQ":%q,"TS":%d,"NONCE":%q}`, tok, req, ts(), nonce())), "chain_malformed"},
		{"member missing", signRaw(t, self.Key, fmt.Sprintf(`{"v":1,"i":0,"tok":%q,"req":%q,"ts":%d,"nonce":%q}`, tok, req, ts(), nonce())), "chain_malformed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := send(c.chain)
			if r.StatusCode != http.StatusForbidden || r.Header.Get(chain.HeaderReject) != c.code {
				t.Errorf("status %d reason %q (%s), want 403 %s", r.StatusCode, r.Header.Get(chain.HeaderReject), r.Header.Get(chain.HeaderRejectCause), c.code)
			}
		})
	}
	// A hand-written entry with exactly the members, in another order, is a valid entry.
	if r := send(signRaw(t, self.Key, fmt.Sprintf(`{"nonce":%q,"ts":%d,"req":%q,"tok":%q,"prev":"","i":0,"v":1}`, nonce(), ts(), req, tok))); r.StatusCode != 200 {
		t.Errorf("exact members in another order: %d %s", r.StatusCode, r.Header.Get(chain.HeaderRejectCause))
	}
	// The proxy's own signatures are low-s.
	half := new(big.Int).Rsh(elliptic.P256().Params().N, 1)
	for i := 0; i < 64; i++ {
		enc, _, _ := chain.Append(nil, self, reqDigest, time.Now())
		_, s64, _ := strings.Cut(enc, ".")
		sig, _ := base64.RawURLEncoding.DecodeString(s64)
		if new(big.Int).SetBytes(sig[32:]).Cmp(half) > 0 {
			t.Fatalf("Append produced a high-s signature: %s", enc)
		}
	}
}
