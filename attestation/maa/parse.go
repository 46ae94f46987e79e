package maa

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"

	"github.com/valyala/fastjson"
)

// ClaimTypeError says a claim had the wrong JSON type.
type ClaimTypeError struct {
	Claim string
	Want  string
	Got   string
}

func (e *ClaimTypeError) Error() string {
	return fmt.Sprintf("claim %s is a JSON %s, expected %s", e.Claim, e.Got, e.Want)
}

var parsers fastjson.ParserPool

// ParseClaims decodes a token payload into Claims, strictly typed: every known claim must have
// its JSON type (a *ClaimTypeError otherwise), and a known claim may not appear twice (JSON
// parsers disagree on which duplicate wins, so the ambiguity is refused). Unknown claims are
// ignored. It does the work of json.Unmarshal into Claims in a fraction of the time, which
// matters because every new peer token is decoded on a handshake.
func ParseClaims(b []byte) (*Claims, error) {
	p := parsers.Get()
	defer parsers.Put(p)
	v, err := p.ParseBytes(b)
	if err != nil {
		return nil, fmt.Errorf("claims are not JSON: %w", err)
	}
	o, err := v.Object()
	if err != nil {
		return nil, &ClaimTypeError{Claim: "(payload)", Want: "an object", Got: v.Type().String()}
	}
	c := new(Claims)
	var seen uint64
	var ferr error
	var runtime *fastjson.Value
	o.Visit(func(k []byte, v *fastjson.Value) {
		if ferr != nil {
			return
		}
		cs, ok := claimSetters[string(k)] // no allocation: the compiler optimises this lookup
		if !ok {
			return
		}
		if seen&(1<<cs.bit) != 0 {
			ferr = fmt.Errorf("claim %s appears twice", k)
			return
		}
		seen |= 1 << cs.bit
		ferr = cs.set(c, cs.name, v)
		if cs.name == ClaimRuntime {
			runtime = v
		}
	})
	if ferr != nil {
		return nil, ferr
	}
	// Decode the runtime data while the parsed value is at hand, so that the enclave's keys
	// cost no second parse.
	if runtime != nil {
		c.rt, c.rtErr = runtimeFromValue(runtime)
		c.rtDone = true
	}
	return c, nil
}

// RuntimeData returns the enclave's runtime data: x-ms-runtime or, when it is absent,
// x-ms-sgx-ehd (runtime data sent with dataType Binary), parsed with ParseRuntimeData.
func (c *Claims) RuntimeData() (*RuntimeData, error) {
	if c.rtDone {
		return c.rt, c.rtErr
	}
	switch {
	case len(c.Runtime) > 0:
		return ParseRuntimeData(c.Runtime)
	case c.SGXEHD != "":
		b, err := base64.RawURLEncoding.DecodeString(c.SGXEHD)
		if err != nil {
			return nil, fmt.Errorf("%s is not base64url: %w", ClaimSGXEHD, err)
		}
		return ParseRuntimeData(b)
	}
	return nil, errors.New("the token has neither x-ms-runtime nor x-ms-sgx-ehd")
}

type setter func(c *Claims, key string, v *fastjson.Value) error

func str(f func(*Claims) *string) setter {
	return func(c *Claims, key string, v *fastjson.Value) error {
		if v.Type() != fastjson.TypeString {
			return &ClaimTypeError{Claim: key, Want: "a string", Got: v.Type().String()}
		}
		b := v.GetStringBytes()
		if !utf8.Valid(b) {
			// JSON text is UTF-8 (RFC 8259); decoders differ on what invalid bytes mean.
			return &ClaimTypeError{Claim: key, Want: "a valid UTF-8 string", Got: "string with invalid UTF-8"}
		}
		*f(c) = string(b)
		return nil
	}
}

func boolean(f func(*Claims) **bool) setter {
	return func(c *Claims, key string, v *fastjson.Value) error {
		b, err := v.Bool()
		if err != nil {
			return &ClaimTypeError{Claim: key, Want: "a boolean", Got: v.Type().String()}
		}
		*f(c) = &b
		return nil
	}
}

func uint64Claim(f func(*Claims) **uint64) setter {
	return func(c *Claims, key string, v *fastjson.Value) error {
		if v.Type() != fastjson.TypeNumber {
			return &ClaimTypeError{Claim: key, Want: "a non-negative integer", Got: v.Type().String()}
		}
		n, err := v.Uint64()
		if err != nil {
			return &ClaimTypeError{Claim: key, Want: "a non-negative integer", Got: "number " + v.String()}
		}
		*f(c) = &n
		return nil
	}
}

func date(f func(*Claims) **NumericDate) setter {
	return func(c *Claims, key string, v *fastjson.Value) error {
		if v.Type() != fastjson.TypeNumber {
			return &ClaimTypeError{Claim: key, Want: "a NumericDate (number)", Got: v.Type().String()}
		}
		n, err := v.Int64()
		if err != nil {
			fl, ferr := v.Float64()
			if ferr != nil || math.IsNaN(fl) || fl > 1<<53 || fl < -(1<<53) {
				return &ClaimTypeError{Claim: key, Want: "a NumericDate in range", Got: "number " + v.String()}
			}
			n = int64(fl)
		}
		d := NumericDate(n)
		*f(c) = &d
		return nil
	}
}

func raw(f func(*Claims) *[]byte, want fastjson.Type) setter {
	return func(c *Claims, key string, v *fastjson.Value) error {
		if want != fastjson.TypeNull && v.Type() != want {
			return &ClaimTypeError{Claim: key, Want: "a JSON " + want.String(), Got: v.Type().String()}
		}
		*f(c) = v.MarshalTo(nil)
		return nil
	}
}

func collateral(c *Claims, key string, v *fastjson.Value) error {
	o, err := v.Object()
	if err != nil {
		return &ClaimTypeError{Claim: key, Want: "an object", Got: v.Type().String()}
	}
	col := new(Collateral)
	var ferr error
	o.Visit(func(k []byte, v *fastjson.Value) {
		var dst *string
		switch string(k) {
		case "qeidcertshash":
			dst = &col.QEIDCertsHash
		case "qeidcrlhash":
			dst = &col.QEIDCRLHash
		case "qeidhash":
			dst = &col.QEIDHash
		case "quotehash":
			dst = &col.QuoteHash
		case "tcbinfocertshash":
			dst = &col.TCBInfoCertsHash
		case "tcbinfocrlhash":
			dst = &col.TCBInfoCRLHash
		case "tcbinfohash":
			dst = &col.TCBInfoHash
		default:
			return
		}
		if ferr != nil {
			return
		}
		if v.Type() != fastjson.TypeString {
			ferr = &ClaimTypeError{Claim: key + "." + string(k), Want: "a string", Got: v.Type().String()}
			return
		}
		*dst = string(v.GetStringBytes())
	})
	c.SGXCollateral = col
	return ferr
}

type claimSetter struct {
	name string
	bit  uint
	set  setter
}

var claimSetters = func() map[string]claimSetter {
	m := make(map[string]claimSetter, len(setters))
	bit := uint(0)
	for name, set := range setters {
		m[name] = claimSetter{name: name, bit: bit, set: set}
		bit++
	}
	if bit > 64 {
		panic("maa: more than 64 known claims")
	}
	return m
}()

var setters = map[string]setter{
	ClaimIssuer:          str(func(c *Claims) *string { return &c.Issuer }),
	ClaimJTI:             str(func(c *Claims) *string { return &c.ID }),
	ClaimVer:             str(func(c *Claims) *string { return &c.Ver }),
	ClaimAttestationType: str(func(c *Claims) *string { return &c.AttestationType }),
	ClaimPolicyHash:      str(func(c *Claims) *string { return &c.PolicyHash }),
	ClaimSGXMREnclave:    str(func(c *Claims) *string { return &c.SGXMREnclave }),
	ClaimSGXMRSigner:     str(func(c *Claims) *string { return &c.SGXMRSigner }),
	ClaimSGXEHD:          str(func(c *Claims) *string { return &c.SGXEHD }),
	ClaimSGXReportData:   str(func(c *Claims) *string { return &c.SGXReportData }),
	ClaimSGXConfigID:     str(func(c *Claims) *string { return &c.SGXConfigID }),
	ClaimIssuedAt:        date(func(c *Claims) **NumericDate { return &c.IssuedAt }),
	ClaimNotBefore:       date(func(c *Claims) **NumericDate { return &c.NotBefore }),
	ClaimExpiry:          date(func(c *Claims) **NumericDate { return &c.Expiry }),
	ClaimSGXDebuggable:   boolean(func(c *Claims) **bool { return &c.SGXIsDebuggable }),
	ClaimSim:             boolean(func(c *Claims) **bool { return &c.Sim }),
	ClaimSGXProductID:    uint64Claim(func(c *Claims) **uint64 { return &c.SGXProductID }),
	ClaimSGXSVN:          uint64Claim(func(c *Claims) **uint64 { return &c.SGXSVN }),
	ClaimRuntime:         raw(func(c *Claims) *[]byte { return (*[]byte)(&c.Runtime) }, fastjson.TypeObject),
	ClaimInitTime:        raw(func(c *Claims) *[]byte { return (*[]byte)(&c.InitTime) }, fastjson.TypeObject),
	ClaimPolicySigner:    raw(func(c *Claims) *[]byte { return (*[]byte)(&c.PolicySigner) }, fastjson.TypeObject),
	"nonce":              raw(func(c *Claims) *[]byte { return (*[]byte)(&c.Nonce) }, fastjson.TypeNull),
	ClaimSGXCollateral:   collateral,
}
