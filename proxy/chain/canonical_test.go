package chain

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/internal/fuzzcorpus"
)

const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// withSpareBits sets the unused low bits of the last character of an encoding.
func withSpareBits(s string) string {
	return s[:len(s)-1] + string(alphabet[strings.IndexByte(alphabet, s[len(s)-1])|1])
}

// flipS returns enc with its signature (r, s) as (r, n-s).
func flipS(t testing.TB, enc string) string {
	parts := strings.Split(enc, ".") // v1: payload.sig, v2: payload.sig.proof
	sig, err := b64.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	s := new(big.Int).SetBytes(sig[32:])
	s.Sub(elliptic.P256().Params().N, s).FillBytes(sig[32:])
	parts[1] = b64.EncodeToString(sig)
	return strings.Join(parts, ".")
}

// canonicalSeeds are fixed chain-header seeds for FuzzChainHeader: the non-canonical shapes
// of issue 15 (a high-s signature, spare bits, a duplicated member, members in another case,
// a missing member), with fixed, not necessarily valid, signatures.
func canonicalSeeds() [][]any {
	d := b64.EncodeToString(make([]byte, 32))
	nonce := b64.EncodeToString(make([]byte, 16))
	payload := func(js string) string { return b64.EncodeToString([]byte(js)) }
	lowSig := make([]byte, 64)
	lowSig[31], lowSig[63] = 1, 1
	highSig := make([]byte, 64)
	highSig[31] = 1
	new(big.Int).Sub(elliptic.P256().Params().N, big.NewInt(1)).FillBytes(highSig[32:])
	entry := `{"v":1,"i":0,"prev":"","tok":"` + d + `","req":"` + d + `","ts":1700000000000,"nonce":"` + nonce + `"}`
	cs := `{"v":1,"entry":"` + d + `","tok":"` + d + `","resp":"` + d + `","ts":1700000000000}`
	return [][]any{
		{payload(entry) + "." + b64.EncodeToString(highSig), ""},
		{payload(entry) + "." + withSpareBits(b64.EncodeToString(lowSig)), ""},
		{payload(`{"v":1,"i":0,"prev":"","tok":"`+d+`","req":"`+d+`","ts":1700000000000,"nonce":"`+nonce+`","req":"`+d+`"}`) + "." + b64.EncodeToString(lowSig), ""},
		{payload(`{"V":1,"I":0,"PREV":"","Tok":"`+d+`","REQ":"`+d+`","TS":1700000000000,"NONCE":"`+nonce+`"}`) + "." + b64.EncodeToString(lowSig), ""},
		{payload(`{"v":1,"i":0,"tok":"`+d+`","req":"`+d+`","ts":1700000000000,"nonce":"`+nonce+`"}`) + "." + b64.EncodeToString(lowSig), ""},
		{payload(cs) + "." + b64.EncodeToString(highSig), ""},
		{withSpareBits(b64.EncodeToString([]byte(`{"v":1}`))), ""},
	}
}

// TestCanonicalOnly: entries and countersignatures are refused unless their base64url is
// canonical, their signature low-s and their members exactly the documented set; what the
// proxy produces is low-s; a receipt re-encoded with other spare bits does not parse.
func TestCanonicalOnly(t *testing.T) {
	if *fuzzcorpus.Update {
		if err := fuzzcorpus.Write("FuzzChainHeader", canonicalSeeds()...); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range canonicalSeeds() {
		if _, _, _, err := ParseEntry(s[0].(string)); err == nil {
			t.Errorf("seed %d parsed as an entry", i)
		}
		if _, _, _, err := ParseCountersig(s[0].(string)); err == nil {
			t.Errorf("seed %d parsed as a countersignature", i)
		}
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	self := Self{Key: k, Token: "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln"}
	entry := Digest("entry")
	resp := [32]byte{7}
	half := new(big.Int).Rsh(elliptic.P256().Params().N, 1)
	for i := 0; i < 32; i++ {
		enc, err := Countersign(self, entry, resp, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := b64.DecodeString(strings.Split(enc, ".")[1])
		if new(big.Int).SetBytes(raw[32:]).Cmp(half) > 0 {
			t.Fatal("Countersign produced a high-s signature")
		}
		if _, err := VerifyCountersig(enc, entry, TokenDigest(self.Token), &k.PublicKey, resp); err != nil {
			t.Fatalf("own countersignature: %v", err)
		}
		_, err = VerifyCountersig(flipS(t, enc), entry, TokenDigest(self.Token), &k.PublicKey, resp)
		var rej *attestation.Rejection
		if !errors.As(err, &rej) || rej.Code != CodeSigNotLowS {
			t.Fatalf("(r, n-s) countersignature: %v, want %s", err, CodeSigNotLowS)
		}
		if _, err := VerifyCountersig(withSpareBits(enc), entry, TokenDigest(self.Token), &k.PublicKey, resp); err == nil {
			t.Fatal("countersignature with other spare bits verified")
		}
	}
	rc := Receipt{
		V:                1,
		Chain:            "x",
		Tokens:           []string{"y"},
		Countersignature: "z",
		Status:           200,
		BodySHA256:       b64.EncodeToString(make([]byte, 32)),
	}
	for extra := ""; len(extra) < 3; extra += "a" { // find a length that leaves spare bits
		rc.Chain = "x" + extra
		enc, _ := rc.Encode()
		if len(enc)%4 == 0 {
			continue
		}
		if _, err := ParseReceipt([]byte(enc)); err != nil {
			t.Fatalf("receipt: %v", err)
		}
		if _, err := ParseReceipt([]byte(withSpareBits(enc))); err == nil {
			t.Error("a receipt re-encoded with other spare bits parsed")
		}
		return
	}
	t.Fatal("no receipt length with spare bits")
}
