package chain

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"os"
	"strings"
	"testing"
)

// The test vector of docs/protocol.md section 8: the P-256 key of RFC 6979 appendix A.2.5,
// an entry and its signature. If this test changes, change the page.
const (
	vectorX     = "60fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb6"
	vectorY     = "7903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299"
	vectorEntry = "eyJ2IjoxLCJpIjowLCJwcmV2IjoiIiwidG9rIjoiVFJWbW9kZmZRcWhSZEZiV0RxQnUwb1RsTmNfa3lWYXFidUZ5MjgzNVJmYyIsInJlcSI6IkFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUEiLCJ0cyI6MTcwMDAwMDAwMDAwMCwibm9uY2UiOiJBQUFBQUFBQUFBQUFBQUFBQUFBQUFBIn0.dnYPKyZqQqjAVPEknvOSj2sq05G3UZs1ohxR7i8SP-gaI4L3UVHND0EWh99sW4P2IOoJHe1Zqwyw0cxcrvmagA"
)

// TestProtocolVector: the documented entry parses, is low-s, and its signature verifies as
// ECDSA P-256 over the digest H(m), m = "countersign/chain-entry/v1." || b64url(P) (hashed
// once); (r, n-s) is refused.
func TestProtocolVector(t *testing.T) {
	point, _ := hex.DecodeString("04" + vectorX + vectorY)
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
	if err != nil {
		t.Fatal(err)
	}
	e, p, sig, err := ParseEntry(vectorEntry)
	if err != nil {
		t.Fatal(err)
	}
	if e.Token != Digest("example-token") || e.TS != 1700000000000 {
		t.Errorf("entry %+v", e)
	}
	h := sha256.Sum256([]byte("countersign/chain-entry/v1." + p))
	if !ecdsa.Verify(pub, h[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		t.Fatal("the documented signature does not verify over H(m)")
	}
	hh := sha256.Sum256(h[:])
	if ecdsa.Verify(pub, hh[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		t.Fatal("verifies over H(H(m)) too")
	}
	if _, _, _, err := ParseEntry(flipS(t, vectorEntry)); err == nil || !strings.Contains(err.Error(), "low-s") {
		t.Errorf("(r, n-s): %v", err)
	}
	// The published vectors (docs/vectors, checked by TestVectors in proxy/cli) sign the first
	// hop's entries with this same key.
	b, err := os.ReadFile("../../docs/vectors/keys.json")
	if err != nil {
		t.Fatal(err)
	}
	var keys struct {
		Hops []struct{ Name, X, Y string }
	}
	if err := json.Unmarshal(b, &keys); err != nil || len(keys.Hops) == 0 {
		t.Fatalf("docs/vectors/keys.json: %v", err)
	}
	x, _ := hex.DecodeString(vectorX)
	y, _ := hex.DecodeString(vectorY)
	if h := keys.Hops[0]; h.Name != "records-api" || h.X != b64.EncodeToString(x) || h.Y != b64.EncodeToString(y) {
		t.Errorf("docs/vectors/keys.json: first hop %s (%s, %s), want records-api with the RFC 6979 A.2.5 key", h.Name, h.X, h.Y)
	}
}
