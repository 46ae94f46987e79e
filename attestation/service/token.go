package service

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/countersign/countersign/attestation/maa"
)

// tokenHeader is MAA's JWS header, fields in MAA's order.
type tokenHeader struct {
	Alg string `json:"alg"`
	JKU string `json:"jku"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

func (s *Service) header() (string, error) {
	b, err := marshal(tokenHeader{Alg: "RS256", JKU: s.issuer + maa.PathCerts, Kid: s.kid, Typ: "JWT"})
	if err != nil {
		return "", fmt.Errorf("encode token header: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// standardClaims sets iss, iat, nbf, exp and jti.
func (s *Service) standardClaims(claims map[string]any) {
	now := s.now().Truncate(time.Second)
	claims[maa.ClaimIssuer] = s.issuer
	claims[maa.ClaimIssuedAt] = now.Unix()
	claims[maa.ClaimNotBefore] = now.Unix()
	claims[maa.ClaimExpiry] = now.Add(s.lifetime).Unix()
	var jti [32]byte
	_, _ = rand.Read(jti[:])
	claims[maa.ClaimJTI] = hex.EncodeToString(jti[:])
}

// sign returns a compact RS256 JWS over the claims.
func (s *Service) sign(claims map[string]any) (string, error) {
	payload, err := marshal(claims)
	if err != nil {
		return "", fmt.Errorf("encode token claims: %w", err)
	}
	signingInput := s.jwsHeader + "." + base64.RawURLEncoding.EncodeToString(payload)
	digest := sha256.Sum256([]byte(signingInput))
	sig, err := rsa.SignPKCS1v15(nil, s.key, crypto.SHA256, digest[:])
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return signingInput + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// certs is the body of GET /certs: MAA's key set, the certificate as std-base64 DER in x5c.
func (s *Service) certs() ([]byte, error) {
	type key struct {
		Kty string   `json:"kty"`
		Kid string   `json:"kid"`
		X5c []string `json:"x5c"`
	}
	return marshal(struct {
		Keys []key `json:"keys"`
	}{Keys: []key{{Kty: "RSA", Kid: s.kid, X5c: []string{base64.StdEncoding.EncodeToString(s.cert.Raw)}}}})
}

// ClaimsSupported are the claims the service can put in an attestation token (before the
// claims a policy issues), as listed by the OpenID configuration.
var ClaimsSupported = []string{
	maa.ClaimIssuer, maa.ClaimIssuedAt, maa.ClaimNotBefore, maa.ClaimExpiry, maa.ClaimJTI,
	"nonce", maa.ClaimVer, maa.ClaimAttestationType, maa.ClaimPolicyHash,
	maa.ClaimRuntime, maa.ClaimInitTime,
	maa.ClaimSGXDebuggable, maa.ClaimSGXMREnclave, maa.ClaimSGXMRSigner, maa.ClaimSGXProductID,
	maa.ClaimSGXSVN, maa.ClaimSGXEHD, maa.ClaimSGXReportData, maa.ClaimSGXConfigID,
	maa.ClaimSGXCollateral, maa.ClaimSim,
	"is-debuggable", "sgx-mrenclave", "sgx-mrsigner", "product-id", "svn", "tee",
	"maa-ehd", "aas-ehd", "maa-attestationcollateral",
}

func (s *Service) openIDConfig() ([]byte, error) {
	return marshal(struct {
		Issuer          string   `json:"issuer"`
		JWKSURI         string   `json:"jwks_uri"`
		SigningAlgs     []string `json:"id_token_signing_alg_values_supported"`
		ResponseTypes   []string `json:"response_types_supported"`
		ClaimsSupported []string `json:"claims_supported"`
		// No revocation_endpoint: MAA advertises {issuer}/revoke, but this service has no
		// revocation to serve and advertised only a 404 (issue 17). Its clients ignore it.
	}{
		Issuer:          s.issuer,
		JWKSURI:         s.issuer + maa.PathCerts,
		SigningAlgs:     []string{"RS256"},
		ResponseTypes:   []string{"token", "none"},
		ClaimsSupported: ClaimsSupported,
	})
}
