package service

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/countersign/countersign/attestation/maa"
	"github.com/countersign/countersign/attestation/maapolicy"
)

// Claim names of policy management tokens, as MAA sends them.
const (
	ClaimPolicy          = "x-ms-policy"
	ClaimPolicyResult    = "x-ms-policy-result"
	ClaimPolicyTokenHash = "x-ms-policy-token-hash"
)

// Error codes of policy management beyond those in package maa.
const (
	CodeUnauthorized = "Unauthorized"
	CodeForbidden    = "Forbidden"
)

// policyEnvelope is the JWS payload of a policy: StoredAttestationPolicy in MAA's spec.
type policyEnvelope struct {
	AttestationPolicy string `json:"AttestationPolicy"`
}

// UnsignedPolicyJWS wraps policy text the way MAA stores and transports it: an unsigned JWS
// (header {"alg":"none"}, empty signature) over {"AttestationPolicy": base64url(text)}.
func UnsignedPolicyJWS(text string) string {
	hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`))
	payload, _ := marshal(policyEnvelope{AttestationPolicy: base64.RawURLEncoding.EncodeToString([]byte(text))})
	return hdr + "." + base64.RawURLEncoding.EncodeToString(payload) + "."
}

// policyFromJWS extracts the policy text from an unsigned policy JWS.
func policyFromJWS(jws string) (string, error) {
	parts := strings.Split(jws, ".")
	if len(parts) != 3 {
		return "", fmt.Errorf("not a JWS in compact form: expected header.payload.signature, got %d part(s)", len(parts))
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return "", fmt.Errorf("JWS header is not unpadded base64url: %v", err)
	}
	var hdr map[string]any
	if err := json.Unmarshal(hb, &hdr); err != nil {
		return "", fmt.Errorf("JWS header is not a JSON object: %v", err)
	}
	alg, _ := hdr["alg"].(string)
	if alg != "none" {
		return "", fmt.Errorf("JWS alg %s: this service accepts unsigned policies only (alg none); signed policies need Azure Attestation's isolated mode", quoted(alg))
	}
	if parts[2] != "" {
		return "", errors.New("JWS with alg none has a signature: expected an empty third part")
	}
	pb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", fmt.Errorf("JWS payload is not unpadded base64url: %v", err)
	}
	var env policyEnvelope
	dec := json.NewDecoder(bytes.NewReader(pb))
	if err := dec.Decode(&env); err != nil {
		return "", fmt.Errorf(`JWS payload is not {"AttestationPolicy": "<base64url policy text>"}: %v`, err)
	}
	if env.AttestationPolicy == "" {
		return "", errors.New(`JWS payload has no AttestationPolicy: expected {"AttestationPolicy": "<base64url policy text>"}`)
	}
	text, err := maa.DecodeBase64(env.AttestationPolicy)
	if err != nil {
		return "", fmt.Errorf("AttestationPolicy: %v", err)
	}
	return string(text), nil
}

// getPolicy answers GET /policies/{type}: a token whose x-ms-policy claim is the policy JWS.
func (s *Service) getPolicy(w http.ResponseWriter, r *http.Request, typ string) {
	if aerr := checkAPIVersion(r); aerr != nil {
		writeAPIError(w, aerr)
		return
	}
	cur := s.policies[typ].Load()
	claims := map[string]any{ClaimPolicy: cur.jws}
	s.standardClaims(claims)
	token, err := s.sign(claims)
	if err != nil {
		writeError(w, http.StatusInternalServerError, maa.CodeInternal, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, maa.TokenResponse{Token: token})
}

// putPolicy answers PUT /policies/{type}: the body is the policy JWS, raw or as a JSON string.
func (s *Service) putPolicy(w http.ResponseWriter, r *http.Request, typ string) {
	log := s.log.With(slog.String("endpoint", "policies/"+typ), slog.String("request_id", w.Header().Get("x-ms-request-id")), slog.String("remote", r.RemoteAddr))
	fail := func(aerr *apiError) {
		log.Info("policy update", slog.String("result", "rejected"), slog.Int("status", aerr.status), slog.String("code", aerr.code), slog.String("reason", aerr.msg))
		writeAPIError(w, aerr)
	}
	if !s.adminOn {
		fail(&apiError{status: http.StatusForbidden, code: CodeForbidden,
			msg: "policy updates are disabled on this service: start it with --admin-token-file FILE (Config.AdminToken) and send Authorization: Bearer <token>"})
		return
	}
	if !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="countersign-attestation-service"`)
		fail(&apiError{status: http.StatusUnauthorized, code: CodeUnauthorized,
			msg: "policy updates need Authorization: Bearer <admin token>; the token is missing or wrong"})
		return
	}
	if aerr := checkAPIVersion(r); aerr != nil {
		fail(aerr)
		return
	}
	if aerr := checkContentType(r, "text/plain", "application/json"); aerr != nil {
		fail(aerr)
		return
	}
	body, aerr := s.readBody(w, r)
	if aerr != nil {
		fail(aerr)
		return
	}
	jws := strings.TrimSpace(string(body))
	if strings.HasPrefix(jws, `"`) {
		if err := json.Unmarshal([]byte(jws), &jws); err != nil {
			fail(badRequest(maa.CodeInvalidPolicy, "body is neither a policy JWS nor a JSON string holding one: %v", err))
			return
		}
		jws = strings.TrimSpace(jws)
	}
	text, err := policyFromJWS(jws)
	if err != nil {
		fail(badRequest(maa.CodeInvalidPolicy, "body: %v", err))
		return
	}
	pol, err := maapolicy.Parse(text)
	if err != nil {
		fail(badRequest(maa.CodeInvalidPolicy, "policy error at %v; the previous policy stays in force", err))
		return
	}
	s.policies[typ].Store(&storedPolicy{policy: pol, jws: jws})
	sum := sha256.Sum256([]byte(jws))
	claims := map[string]any{
		ClaimPolicyResult:    "Updated",
		ClaimPolicyTokenHash: base64.RawURLEncoding.EncodeToString(sum[:]),
	}
	s.standardClaims(claims)
	token, err := s.sign(claims)
	if err != nil {
		writeError(w, http.StatusInternalServerError, maa.CodeInternal, err.Error())
		return
	}
	log.Info("policy update", slog.String("result", "updated"), slog.String("policy_hash", pol.Hash()),
		slog.Int("authorization_rules", len(pol.Authorization)), slog.Int("issuance_rules", len(pol.Issuance)))
	writeJSON(w, http.StatusOK, maa.TokenResponse{Token: token})
}

// authorized checks the bearer token in constant time (over SHA-256 digests, so the length of
// the configured token does not leak either).
func (s *Service) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(got[:], s.adminToken[:]) == 1
}
