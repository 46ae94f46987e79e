package maa

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Claim names of an MAA SGX token.
const (
	ClaimIssuer          = "iss"
	ClaimIssuedAt        = "iat"
	ClaimNotBefore       = "nbf"
	ClaimExpiry          = "exp"
	ClaimJTI             = "jti"
	ClaimVer             = "x-ms-ver"
	ClaimAttestationType = "x-ms-attestation-type"
	ClaimPolicyHash      = "x-ms-policy-hash"
	ClaimPolicySigner    = "x-ms-policy-signer"
	ClaimRuntime         = "x-ms-runtime"
	ClaimInitTime        = "x-ms-inittime"
	ClaimSGXDebuggable   = "x-ms-sgx-is-debuggable"
	ClaimSGXMREnclave    = "x-ms-sgx-mrenclave"
	ClaimSGXMRSigner     = "x-ms-sgx-mrsigner"
	ClaimSGXProductID    = "x-ms-sgx-product-id"
	ClaimSGXSVN          = "x-ms-sgx-svn"
	ClaimSGXEHD          = "x-ms-sgx-ehd"
	ClaimSGXReportData   = "x-ms-sgx-report-data"
	ClaimSGXConfigID     = "x-ms-sgx-config-id"
	ClaimSGXCollateral   = "x-ms-sgx-collateral"
	// ClaimSim is Countersign's own claim: present and true in tokens the local attestation
	// service issues for simulated quotes. Real MAA never emits it.
	ClaimSim = "x-countersign-sim"
)

// Claims is the claim set of an MAA SGX token, strictly typed: a claim of the wrong JSON type
// fails decoding. Pointer fields distinguish "absent" from zero. Claims not listed are ignored.
type Claims struct {
	Issuer    string       `json:"iss"`
	IssuedAt  *NumericDate `json:"iat"`
	NotBefore *NumericDate `json:"nbf"`
	Expiry    *NumericDate `json:"exp"`
	ID        string       `json:"jti,omitempty"`

	Ver             string          `json:"x-ms-ver,omitempty"`
	AttestationType string          `json:"x-ms-attestation-type,omitempty"`
	PolicyHash      string          `json:"x-ms-policy-hash,omitempty"`
	PolicySigner    json.RawMessage `json:"x-ms-policy-signer,omitempty"`
	Nonce           json.RawMessage `json:"nonce,omitempty"`
	Runtime         json.RawMessage `json:"x-ms-runtime,omitempty"`
	InitTime        json.RawMessage `json:"x-ms-inittime,omitempty"`

	SGXIsDebuggable *bool       `json:"x-ms-sgx-is-debuggable,omitempty"`
	SGXMREnclave    string      `json:"x-ms-sgx-mrenclave,omitempty"`
	SGXMRSigner     string      `json:"x-ms-sgx-mrsigner,omitempty"`
	SGXProductID    *uint64     `json:"x-ms-sgx-product-id,omitempty"`
	SGXSVN          *uint64     `json:"x-ms-sgx-svn,omitempty"`
	SGXEHD          string      `json:"x-ms-sgx-ehd,omitempty"`
	SGXReportData   string      `json:"x-ms-sgx-report-data,omitempty"`
	SGXConfigID     string      `json:"x-ms-sgx-config-id,omitempty"`
	SGXCollateral   *Collateral `json:"x-ms-sgx-collateral,omitempty"`

	Sim *bool `json:"x-countersign-sim,omitempty"`

	rt     *RuntimeData // set by ParseClaims
	rtErr  error
	rtDone bool
}

// Collateral is x-ms-sgx-collateral: hashes of the collateral the quote was checked against.
type Collateral struct {
	QEIDCertsHash    string `json:"qeidcertshash"`
	QEIDCRLHash      string `json:"qeidcrlhash"`
	QEIDHash         string `json:"qeidhash"`
	QuoteHash        string `json:"quotehash"`
	TCBInfoCertsHash string `json:"tcbinfocertshash"`
	TCBInfoCRLHash   string `json:"tcbinfocrlhash"`
	TCBInfoHash      string `json:"tcbinfohash"`
}

// NumericDate is a JWT NumericDate: seconds since the epoch, a JSON number (never a string).
// Fractions are truncated.
type NumericDate int64

// Time converts d to a time.Time.
func (d NumericDate) Time() time.Time { return time.Unix(int64(d), 0) }

// UnmarshalJSON accepts only a JSON number.
func (d *NumericDate) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || !(b[0] == '-' || (b[0] >= '0' && b[0] <= '9')) {
		return fmt.Errorf("NumericDate must be a JSON number, got %.20s", b)
	}
	if i, err := strconv.ParseInt(string(b), 10, 64); err == nil {
		*d = NumericDate(i)
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || f > 1<<53 || f < -(1<<53) {
		return fmt.Errorf("NumericDate %.20s is not a number of seconds in range", b)
	}
	*d = NumericDate(int64(f))
	return nil
}

// MarshalJSON writes an integer.
func (d NumericDate) MarshalJSON() ([]byte, error) {
	return strconv.AppendInt(nil, int64(d), 10), nil
}
