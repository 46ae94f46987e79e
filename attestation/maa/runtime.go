package maa

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"unicode/utf8"

	"github.com/valyala/fastjson"
)

// Bounds on runtime data. Countersign's runtime data holds one or two keys and a few claimed
// labels; anything larger is refused before parsing.
const (
	MaxRuntimeDataSize = 16 << 10
	MaxRuntimeKeys     = 8
	MaxClaimedEntries  = 16
)

// RuntimeData is what a Countersign enclave sends as runtimeData with dataType JSON. MAA puts
// the parsed object under the token's x-ms-runtime claim, so "keys" comes back as
// x-ms-runtime.keys.
type RuntimeData struct {
	// Keys are public keys the enclave holds, as JWKs. The first is the TLS key.
	Keys []JWK `json:"keys"`
	// Claimed are labels the enclave reports but that no hardware measured: the app image
	// digest beside the proxy, a model's SHA-256. They are reported as claimed, never as proven.
	Claimed map[string]string `json:"claimed,omitempty"`

	pubs []crypto.PublicKey // Keys decoded, set by ParseRuntimeData
}

// JWK is a public JSON Web Key (RFC 7517) of the kinds Countersign uses: EC P-256/P-384, RSA,
// and OKP Ed25519.
type JWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid,omitempty"`
	Use string `json:"use,omitempty"`
	Alg string `json:"alg,omitempty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
}

// NewJWK encodes a public key as a JWK.
func NewJWK(pub crypto.PublicKey, kid string) (JWK, error) {
	b64 := base64.RawURLEncoding.EncodeToString
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		var crv string
		switch k.Curve {
		case elliptic.P256():
			crv = "P-256"
		case elliptic.P384():
			crv = "P-384"
		default:
			return JWK{}, fmt.Errorf("unsupported curve %s", k.Curve.Params().Name)
		}
		raw, err := k.Bytes() // uncompressed point: 0x04 || X || Y
		if err != nil {
			return JWK{}, err
		}
		n := (len(raw) - 1) / 2
		return JWK{
			Kty: "EC",
			Kid: kid,
			Crv: crv,
			X:   b64(raw[1 : 1+n]),
			Y:   b64(raw[1+n:]),
		}, nil
	case *rsa.PublicKey:
		return JWK{Kty: "RSA", Kid: kid, N: b64(k.N.Bytes()), E: b64(big.NewInt(int64(k.E)).Bytes())}, nil
	case ed25519.PublicKey:
		return JWK{Kty: "OKP", Kid: kid, Crv: "Ed25519", X: b64(k)}, nil
	}
	return JWK{}, fmt.Errorf("unsupported public key type %T", pub)
}

// PublicKey decodes and validates the key: EC points must be on the curve, RSA moduli between
// 2048 and 8192 bits with a small odd exponent.
func (j *JWK) PublicKey() (crypto.PublicKey, error) {
	dec := func(field, s string) ([]byte, error) {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("jwk.%s: not unpadded base64url: %w", field, err)
		}
		return b, nil
	}
	switch j.Kty {
	case "EC":
		var curve elliptic.Curve
		var size int
		switch j.Crv {
		case "P-256":
			curve, size = elliptic.P256(), 32
		case "P-384":
			curve, size = elliptic.P384(), 48
		default:
			return nil, fmt.Errorf("jwk.crv: %q, expected P-256 or P-384", j.Crv)
		}
		x, err := dec("x", j.X)
		if err != nil {
			return nil, err
		}
		y, err := dec("y", j.Y)
		if err != nil {
			return nil, err
		}
		if len(x) != size || len(y) != size {
			return nil, fmt.Errorf("jwk: %s coordinates must be %d bytes each, got %d and %d", j.Crv, size, len(x), len(y))
		}
		raw := append(append([]byte{4}, x...), y...)
		k, err := ecdsa.ParseUncompressedPublicKey(curve, raw)
		if err != nil {
			return nil, fmt.Errorf("jwk: %s point: %w", j.Crv, err)
		}
		return k, nil
	case "RSA":
		n, err := dec("n", j.N)
		if err != nil {
			return nil, err
		}
		e, err := dec("e", j.E)
		if err != nil {
			return nil, err
		}
		if len(n) == 0 || n[0] == 0 || len(e) == 0 || len(e) > 4 || e[0] == 0 {
			return nil, errors.New("jwk: RSA n and e must be minimal big-endian integers")
		}
		N := new(big.Int).SetBytes(n)
		E := int(new(big.Int).SetBytes(e).Int64())
		if bits := N.BitLen(); bits < 2048 || bits > 8192 {
			return nil, fmt.Errorf("jwk: RSA modulus of %d bits, expected 2048 to 8192", bits)
		}
		if E < 3 || E%2 == 0 {
			return nil, fmt.Errorf("jwk: RSA exponent %d, expected an odd number of at least 3", E)
		}
		return &rsa.PublicKey{N: N, E: E}, nil
	case "OKP":
		if j.Crv != "Ed25519" {
			return nil, fmt.Errorf("jwk.crv: %q, expected Ed25519 for kty OKP", j.Crv)
		}
		x, err := dec("x", j.X)
		if err != nil {
			return nil, err
		}
		if len(x) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("jwk.x: %d bytes, expected %d for Ed25519", len(x), ed25519.PublicKeySize)
		}
		return ed25519.PublicKey(x), nil
	}
	return nil, fmt.Errorf("jwk.kty: %q, expected EC, RSA or OKP", j.Kty)
}

// Marshal encodes runtime data as the compact JSON the enclave hashes into its quote.
func (r *RuntimeData) Marshal() ([]byte, error) {
	if len(r.Keys) == 0 {
		return nil, errors.New("runtime data needs at least one key")
	}
	return json.Marshal(r)
}

// ParseRuntimeData parses runtime data (or the x-ms-runtime claim) strictly: bounded size, a
// JSON object with a non-empty "keys" array of valid public keys (JWK members must be strings),
// and string-valued "claimed" labels. Other members are ignored so that other tools' runtime
// data still parses.
func ParseRuntimeData(b []byte) (*RuntimeData, error) {
	if len(b) > MaxRuntimeDataSize {
		return nil, fmt.Errorf("runtime data of %d bytes, at most %d allowed", len(b), MaxRuntimeDataSize)
	}
	p := parsers.Get()
	defer parsers.Put(p)
	v, err := p.ParseBytes(b)
	if err != nil {
		return nil, fmt.Errorf("runtime data is not JSON: %w", err)
	}
	return runtimeFromValue(v)
}

func runtimeFromValue(v *fastjson.Value) (*RuntimeData, error) {
	if v.Type() != fastjson.TypeObject {
		return nil, fmt.Errorf("runtime data is a JSON %s, expected an object {\"keys\":[JWK...]}", v.Type())
	}
	var rd RuntimeData
	keys := v.Get("keys")
	if keys == nil {
		return nil, errors.New("runtime data has no keys: expected \"keys\" with at least one JWK")
	}
	arr, err := keys.Array()
	if err != nil {
		return nil, fmt.Errorf("runtime data \"keys\" is a JSON %s, expected an array of JWKs", keys.Type())
	}
	if len(arr) == 0 {
		return nil, errors.New("runtime data has no keys: expected \"keys\" with at least one JWK")
	}
	if len(arr) > MaxRuntimeKeys {
		return nil, fmt.Errorf("runtime data has %d keys, at most %d allowed", len(arr), MaxRuntimeKeys)
	}
	rd.Keys = make([]JWK, len(arr))
	for i, kv := range arr {
		o, err := kv.Object()
		if err != nil {
			return nil, fmt.Errorf("runtime data keys[%d] is a JSON %s, expected a JWK object", i, kv.Type())
		}
		j := &rd.Keys[i]
		fields := [...]struct {
			name string
			dst  *string
		}{{"kty", &j.Kty}, {"kid", &j.Kid}, {"use", &j.Use}, {"alg", &j.Alg}, {"crv", &j.Crv}, {"x", &j.X}, {"y", &j.Y}, {"n", &j.N}, {"e", &j.E}}
		for _, f := range fields {
			fv := o.Get(f.name)
			if fv == nil {
				continue
			}
			if fv.Type() != fastjson.TypeString || !utf8.Valid(fv.GetStringBytes()) {
				return nil, fmt.Errorf("runtime data keys[%d].%s is a JSON %s, expected a UTF-8 string", i, f.name, fv.Type())
			}
			*f.dst = string(fv.GetStringBytes())
		}
		k, err := j.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("runtime data keys[%d]: %w", i, err)
		}
		rd.pubs = append(rd.pubs, k)
	}
	if cv := v.Get("claimed"); cv != nil {
		o, oerr := cv.Object()
		if oerr != nil {
			return nil, fmt.Errorf("runtime data \"claimed\" is a JSON %s, expected an object of strings", cv.Type())
		}
		if o.Len() > MaxClaimedEntries {
			return nil, fmt.Errorf("runtime data has %d claimed labels, at most %d allowed", o.Len(), MaxClaimedEntries)
		}
		rd.Claimed = make(map[string]string, o.Len())
		var err error
		o.Visit(func(k []byte, lv *fastjson.Value) {
			if err == nil && (lv.Type() != fastjson.TypeString || !utf8.Valid(k) || !utf8.Valid(lv.GetStringBytes())) {
				err = fmt.Errorf("runtime data claimed.%s is a JSON %s, expected a string", k, lv.Type())
			}
			rd.Claimed[string(k)] = string(lv.GetStringBytes())
		})
		if err != nil {
			return nil, err
		}
	}
	return &rd, nil
}

// HasKey reports whether the runtime data names exactly pub among its keys.
func (r *RuntimeData) HasKey(pub crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	want, ok := pub.(equaler)
	if !ok {
		return false
	}
	for _, k := range r.PublicKeys() {
		if want.Equal(k) {
			return true
		}
	}
	return false
}

// PublicKeys returns the decoded keys (decoding them now if r was not made by ParseRuntimeData;
// keys that do not decode are left out).
func (r *RuntimeData) PublicKeys() []crypto.PublicKey {
	if r.pubs != nil {
		return r.pubs
	}
	var out []crypto.PublicKey
	for i := range r.Keys {
		if k, err := r.Keys[i].PublicKey(); err == nil {
			out = append(out, k)
		}
	}
	return out
}

// ReportDataFor is what an enclave puts in the first 32 bytes of its SGX report data for the
// given runtime data: its SHA-256 (the remaining 32 bytes are zero).
func ReportDataFor(runtimeData []byte) [64]byte {
	var rd [64]byte
	h := sha256.Sum256(runtimeData)
	copy(rd[:], h[:])
	return rd
}
