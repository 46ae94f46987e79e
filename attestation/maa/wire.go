// Package maa speaks Microsoft Azure Attestation's REST protocol: the attest requests and
// responses, the error shape, the runtime data Countersign sends, the token's claim set, and a
// client. The local attestation service (attestation/service) and real MAA share this wire.
package maa

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
)

// API versions and paths of the attest endpoints.
const (
	PathSgxEnclave   = "/attest/SgxEnclave"
	PathOpenEnclave  = "/attest/OpenEnclave"
	APIVersion2022   = "2022-08-01"
	APIVersion2020   = "2020-10-01"
	PathCerts        = "/certs"
	PathOpenIDConfig = "/.well-known/openid-configuration"
)

// DataType values of RuntimeData / InitTimeData.
const (
	DataTypeBinary = "Binary"
	DataTypeJSON   = "JSON"
)

// Data is runtimeData or initTimeData: bytes (base64url on the wire) and how MAA treats them.
type Data struct {
	Data     string `json:"data"`
	DataType string `json:"dataType"`
}

// AttestSgxRequest is the body of POST /attest/SgxEnclave.
type AttestSgxRequest struct {
	Quote                     string `json:"quote"`
	RuntimeData               *Data  `json:"runtimeData,omitempty"`
	InitTimeData              *Data  `json:"initTimeData,omitempty"`
	DraftPolicyForAttestation string `json:"draftPolicyForAttestation,omitempty"`
	// Nonce is copied into the token; it may arrive as a string or a number.
	Nonce json.RawMessage `json:"nonce,omitempty"`
}

// AttestOpenEnclaveRequest is the body of POST /attest/OpenEnclave.
type AttestOpenEnclaveRequest struct {
	Report                    string          `json:"report"`
	RuntimeData               *Data           `json:"runtimeData,omitempty"`
	InitTimeData              *Data           `json:"initTimeData,omitempty"`
	DraftPolicyForAttestation string          `json:"draftPolicyForAttestation,omitempty"`
	Nonce                     json.RawMessage `json:"nonce,omitempty"`
}

// TokenResponse is the 200 body of every attest endpoint.
type TokenResponse struct {
	Token string `json:"token"`
}

// ErrorResponse is MAA's error body.
type ErrorResponse struct {
	Error ErrorBody `json:"error"`
}

// ErrorBody is the inner error of an ErrorResponse.
type ErrorBody struct {
	Code       string      `json:"code"`
	Message    string      `json:"message"`
	InnerError *InnerError `json:"innererror,omitempty"`
}

// InnerError carries policy failure details.
type InnerError struct {
	Code    string          `json:"code"`
	Details []FailureDetail `json:"details,omitempty"`
}

// FailureDetail names a claim that failed policy.
type FailureDetail struct {
	Code   string `json:"code"`
	Target string `json:"target"`
	Value  string `json:"value"`
}

// Error codes MAA returns.
const (
	CodeInvalidQuote          = "InvalidQuote"
	CodeInvalidParameter      = "InvalidParameter"
	CodeBadRequest            = "BadRequest"
	CodePolicyEvaluationError = "PolicyEvaluationError"
	CodePolicyValidation      = "PolicyValidationFailure"
	CodePolicyFailureClaim    = "PolicyFailureClaim"
	CodeInvalidPolicy         = "InvalidPolicy"
	CodeNotFound              = "NotFound"
	CodeInternal              = "InternalServerError"
	CodeRequestTooLarge       = "RequestEntityTooLarge"
	CodeUnsupportedMediaType  = "UnsupportedMediaType"
	CodeMethodNotAllowed      = "MethodNotAllowed"
)

// DecodeBase64 decodes standard or URL-safe base64, padded or not, as MAA accepts.
func DecodeBase64(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	enc := base64.RawURLEncoding
	if strings.ContainsAny(s, "+/") {
		if strings.ContainsAny(s, "-_") {
			return nil, fmt.Errorf("base64 mixes the standard (+/) and URL-safe (-_) alphabets")
		}
		enc = base64.RawStdEncoding
	}
	b, err := enc.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("not base64 or base64url: %w", err)
	}
	return b, nil
}
