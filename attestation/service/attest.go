package service

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strings"

	"github.com/countersign/countersign/attestation/maa"
	"github.com/countersign/countersign/attestation/maapolicy"
	"github.com/countersign/countersign/attestation/quote"
)

// attestRequest is the union of the SgxEnclave and OpenEnclave request bodies.
type attestRequest struct {
	Quote                     *string         `json:"quote"`
	Report                    *string         `json:"report"`
	RuntimeData               *maa.Data       `json:"runtimeData"`
	InitTimeData              *maa.Data       `json:"initTimeData"`
	DraftPolicyForAttestation *string         `json:"draftPolicyForAttestation"`
	Nonce                     json.RawMessage `json:"nonce"`
}

// attestation is what one attest request produced, for the log line.
type attestation struct {
	mrenclave, mrsigner string
	policyHash          string
}

func (s *Service) attest(w http.ResponseWriter, r *http.Request, typ string) {
	start := s.now()
	var a attestation
	token, aerr := s.attestRequest(w, r, typ, &a)
	attrs := []any{
		slog.String("endpoint", typ),
		slog.String("request_id", w.Header().Get("x-ms-request-id")),
		slog.String("remote", r.RemoteAddr),
	}
	if a.mrenclave != "" {
		attrs = append(attrs, slog.String("mrenclave", a.mrenclave), slog.String("mrsigner", a.mrsigner))
	}
	if a.policyHash != "" {
		attrs = append(attrs, slog.String("policy_hash", a.policyHash))
	}
	attrs = append(attrs, slog.Duration("duration", s.now().Sub(start)))
	if aerr != nil {
		s.log.Info("attest", append(attrs, slog.String("result", "rejected"), slog.Int("status", aerr.status),
			slog.String("code", aerr.code), slog.String("reason", aerr.msg))...)
		writeAPIError(w, aerr)
		return
	}
	s.log.Info("attest", append(attrs, slog.String("result", "issued"), slog.Int("status", http.StatusOK))...)
	writeJSON(w, http.StatusOK, maa.TokenResponse{Token: token})
}

func (s *Service) attestRequest(w http.ResponseWriter, r *http.Request, typ string, a *attestation) (string, *apiError) {
	if err := checkAPIVersion(r); err != nil {
		return "", err
	}
	if err := checkContentType(r, "application/json"); err != nil {
		return "", err
	}
	body, aerr := s.readBody(w, r)
	if aerr != nil {
		return "", aerr
	}
	req, aerr := decodeAttestRequest(body)
	if aerr != nil {
		return "", aerr
	}

	// The evidence: "quote" on SgxEnclave, "report" (OE header + quote) on OpenEnclave.
	field, evidence, other := "quote", req.Quote, req.Report
	if typ == TypeOpenEnclave {
		field, evidence, other = "report", req.Report, req.Quote
	}
	if evidence == nil || *evidence == "" {
		if other != nil {
			otherField := map[string]string{"quote": "report", "report": "quote"}[field]
			return "", badRequest(maa.CodeInvalidParameter, "%s is required on /attest/%s; this request has %s, which belongs to /attest/%s",
				field, typ, otherField, map[string]string{TypeSgxEnclave: TypeOpenEnclave, TypeOpenEnclave: TypeSgxEnclave}[typ])
		}
		return "", badRequest(maa.CodeInvalidParameter, "%s is required: expected the base64url-encoded %s", field, map[string]string{"quote": "SGX quote", "report": "Open Enclave report"}[field])
	}
	raw, err := maa.DecodeBase64(*evidence)
	if err != nil {
		return "", badRequest(maa.CodeInvalidParameter, "%s: %v", field, err)
	}

	runtime, runtimeJSON, aerr := decodeData("runtimeData", req.RuntimeData)
	if aerr != nil {
		return "", aerr
	}
	initTime, initTimeJSON, aerr := decodeData("initTimeData", req.InitTimeData)
	if aerr != nil {
		return "", aerr
	}
	nonce, aerr := checkNonce(req.Nonce)
	if aerr != nil {
		return "", aerr
	}
	pol := s.policies[typ].Load().policy
	if req.DraftPolicyForAttestation != nil && *req.DraftPolicyForAttestation != "" {
		text, err := policyFromDraft(*req.DraftPolicyForAttestation)
		if err != nil {
			return "", badRequest(maa.CodeInvalidPolicy, "draftPolicyForAttestation: %v", err)
		}
		if pol, err = maapolicy.Parse(text); err != nil {
			return "", badRequest(maa.CodeInvalidPolicy, "draftPolicyForAttestation: policy error at %v", err)
		}
	}

	// The quote itself.
	unwrapped, err := quote.UnwrapOEReport(raw)
	if err != nil {
		return "", badRequest(maa.CodeInvalidQuote, "%s: %v", field, err)
	}
	hasOEHeader := len(unwrapped) != len(raw)
	switch {
	case typ == TypeOpenEnclave && !hasOEHeader:
		return "", badRequest(maa.CodeInvalidQuote, "report does not start with an Open Enclave report header (u32 version 1, u32 type 2, u64 size): send a bare SGX quote to /attest/SgxEnclave as quote")
	case typ == TypeSgxEnclave && hasOEHeader:
		return "", badRequest(maa.CodeInvalidQuote, "quote starts with an Open Enclave report header: send it to /attest/OpenEnclave as report, or strip the 16-byte header")
	}
	q, err := quote.Parse(unwrapped)
	if err != nil {
		return "", badRequest(maa.CodeInvalidQuote, "%s is not a valid quote: %v", field, err)
	}
	if !q.IsSim() {
		return "", badRequest(maa.CodeInvalidQuote, "%s is an SGX ECDSA quote (version %d): the local attestation service cannot verify real quotes because Intel's DCAP collateral (PCK certificates, TCB info, QE identity, CRLs) is not reachable offline; send real quotes to Azure Attestation, or use a simulated quote signed by a trusted platform key", field, q.Version)
	}
	if err := q.VerifySim(s.trusted); err != nil {
		if errors.Is(err, quote.ErrUntrustedPlatform) {
			return "", badRequest(maa.CodeInvalidQuote, "%v: start the service with that platform's public key (--sim-platform-key FILE.pub)", err)
		}
		return "", badRequest(maa.CodeInvalidQuote, "simulated quote does not verify: %v", err)
	}
	rep := &q.Report
	a.mrenclave, a.mrsigner = hex.EncodeToString(rep.MREnclave[:]), hex.EncodeToString(rep.MRSigner[:])

	// Binding: the enclave put SHA-256(runtimeData) in report_data (and SHA-256(initTimeData) in
	// its config ID).
	if runtime != nil {
		if h := sha256.Sum256(runtime); !bytes.Equal(h[:], rep.ReportData[:32]) {
			return "", badRequest(maa.CodeInvalidQuote, "runtimeData does not match the quote: its SHA-256 is %x, but the first 32 bytes of the quote's report_data are %x; the enclave must put SHA-256(runtimeData.data) there",
				h[:], rep.ReportData[:32])
		}
	}
	if initTime != nil {
		if h := sha256.Sum256(initTime); !bytes.Equal(h[:], rep.ConfigID[:32]) {
			return "", badRequest(maa.CodeInvalidQuote, "initTimeData does not match the quote: its SHA-256 is %x, but the first 32 bytes of the quote's config ID are %x; the enclave must be launched with SHA-256(initTimeData.data) as its config ID",
				h[:], rep.ConfigID[:32])
		}
	}

	claims := s.evidenceClaims(q, unwrapped, runtime, runtimeJSON, initTimeJSON)
	a.policyHash = pol.Hash()
	if d := pol.Authorize(maapolicy.Claims(claims)); !d.Permit {
		inner := &maa.InnerError{Code: maa.CodePolicyValidation}
		for _, f := range d.Failures {
			v := f.Actual
			if !f.Present {
				v = "(absent)"
			}
			inner.Details = append(inner.Details, maa.FailureDetail{Code: maa.CodePolicyFailureClaim, Target: f.Claim, Value: v})
		}
		return "", &apiError{status: http.StatusBadRequest, code: maa.CodePolicyEvaluationError,
			msg: "the attestation policy denied the evidence: " + d.Reason(), inner: inner}
	}
	issued := pol.Issue(maapolicy.Claims(claims))
	for k, v := range issued {
		if _, dup := claims[k]; dup {
			// Parse refuses rules that issue reserved names; this guards the invariant.
			return "", &apiError{status: http.StatusInternalServerError, code: maa.CodeInternal, msg: fmt.Sprintf("policy issued claim %q, which the service sets itself", k)}
		}
		claims[k] = v
	}
	claims[maa.ClaimPolicyHash] = pol.Hash()
	if nonce != nil {
		claims["nonce"] = nonce
	}
	s.standardClaims(claims)
	token, err := s.sign(claims)
	if err != nil {
		return "", &apiError{status: http.StatusInternalServerError, code: maa.CodeInternal, msg: err.Error()}
	}
	return token, nil
}

// evidenceClaims are the incoming claims: what the verified quote and the request prove or
// carry. The policy is evaluated over them and they all go into the token.
func (s *Service) evidenceClaims(q *quote.Quote, quoteBytes, runtime []byte, runtimeJSON, initTimeJSON map[string]any) map[string]any {
	rep := &q.Report
	empty := sha256.Sum256(nil)
	emptyHash := hex.EncodeToString(empty[:])
	quoteHash := sha256.Sum256(quoteBytes)
	claims := map[string]any{
		maa.ClaimVer:             "1.0",
		maa.ClaimAttestationType: "sgx",
		// A simulated quote proves nothing about debug mode: no hardware enforced it. Tokens
		// for simulated quotes therefore always say debuggable, so production policies that
		// require x-ms-sgx-is-debuggable == false reject them.
		maa.ClaimSGXDebuggable: true,
		maa.ClaimSGXMREnclave:  hex.EncodeToString(rep.MREnclave[:]),
		maa.ClaimSGXMRSigner:   hex.EncodeToString(rep.MRSigner[:]),
		maa.ClaimSGXProductID:  uint64(rep.ProductID),
		maa.ClaimSGXSVN:        uint64(rep.SVN),
		maa.ClaimSGXReportData: hex.EncodeToString(rep.ReportData[:]),
		maa.ClaimSGXConfigID:   hex.EncodeToString(rep.ConfigID[:]),
		maa.ClaimSGXCollateral: map[string]any{
			"qeidcertshash":    emptyHash,
			"qeidcrlhash":      emptyHash,
			"qeidhash":         emptyHash,
			"quotehash":        hex.EncodeToString(quoteHash[:]),
			"tcbinfocertshash": emptyHash,
			"tcbinfocrlhash":   emptyHash,
			"tcbinfohash":      emptyHash,
		},
		maa.ClaimSim: true,
	}
	if runtime != nil {
		claims[maa.ClaimSGXEHD] = base64.RawURLEncoding.EncodeToString(runtime)
	}
	if runtimeJSON != nil {
		claims[maa.ClaimRuntime] = runtimeJSON
	}
	if initTimeJSON != nil {
		claims[maa.ClaimInitTime] = initTimeJSON
	}
	return claims
}

// decodeAttestRequest decodes the JSON body strictly: one object, fields of the right JSON
// types, nothing after it. Unknown members are ignored, as MAA does.
func decodeAttestRequest(body []byte) (*attestRequest, *apiError) {
	var req attestRequest
	if aerr := decodeJSON(body, &req, "request body"); aerr != nil {
		return nil, aerr
	}
	return &req, nil
}

func decodeJSON(body []byte, v any, what string) *apiError {
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te):
			field := te.Field
			if field == "" {
				return badRequest(maa.CodeBadRequest, "%s: expected a JSON object, got %s", what, te.Value)
			}
			return badRequest(maa.CodeInvalidParameter, "%s: expected a JSON %s, got %s", field, jsonKind(te.Type), te.Value)
		case errors.As(err, &se):
			return badRequest(maa.CodeBadRequest, "%s is not valid JSON: %v (at byte %d)", what, err, se.Offset)
		case errors.Is(err, io.EOF):
			return badRequest(maa.CodeBadRequest, "%s is empty: expected a JSON object", what)
		}
		return badRequest(maa.CodeBadRequest, "%s is not valid JSON: %v", what, err)
	}
	if rv := reflect.ValueOf(v).Elem(); rv.Kind() == reflect.Struct && bytes.Equal(bytes.TrimSpace(body), []byte("null")) {
		return badRequest(maa.CodeBadRequest, "%s: expected a JSON object, got null", what)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest(maa.CodeBadRequest, "%s has data after the JSON object: expected exactly one object", what)
	}
	return nil
}

// jsonKind names the JSON type a Go type decodes from.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Struct, reflect.Map:
		return "object"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return "number"
	}
	return t.String()
}

// decodeData decodes runtimeData or initTimeData: the bytes, and for dataType JSON the parsed
// object. An absent member gives nil bytes.
func decodeData(name string, d *maa.Data) ([]byte, map[string]any, *apiError) {
	if d == nil {
		return nil, nil, nil
	}
	b, err := maa.DecodeBase64(d.Data)
	if err != nil {
		return nil, nil, badRequest(maa.CodeInvalidParameter, "%s.data: %v", name, err)
	}
	switch d.DataType {
	case maa.DataTypeBinary:
		return b, nil, nil
	case maa.DataTypeJSON:
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, nil, badRequest(maa.CodeInvalidParameter, "%s.data: dataType is JSON but the data is not JSON: %v", name, err)
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return nil, nil, badRequest(maa.CodeInvalidParameter, "%s.data: dataType is JSON but there is data after the JSON value", name)
		}
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, nil, badRequest(maa.CodeInvalidParameter, "%s.data: dataType is JSON, so the data must be a JSON object (it becomes a claim object), got %s", name, jsonValueKind(v))
		}
		return b, obj, nil
	case "":
		return nil, nil, badRequest(maa.CodeInvalidParameter, "%s.dataType is required: expected %q or %q", name, maa.DataTypeBinary, maa.DataTypeJSON)
	}
	return nil, nil, badRequest(maa.CodeInvalidParameter, "%s.dataType %s is not supported: expected %q or %q", name, quoted(d.DataType), maa.DataTypeBinary, maa.DataTypeJSON)
}

func jsonValueKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case []any:
		return "an array"
	}
	return fmt.Sprintf("%T", v)
}

// checkNonce accepts a JSON string or number and returns it to copy into the token.
func checkNonce(raw json.RawMessage) (json.RawMessage, *apiError) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return nil, nil
	}
	if t[0] == '"' || t[0] == '-' || (t[0] >= '0' && t[0] <= '9') {
		var out bytes.Buffer
		if err := json.Compact(&out, t); err != nil {
			return nil, badRequest(maa.CodeInvalidParameter, "nonce: %v", err)
		}
		return out.Bytes(), nil
	}
	return nil, badRequest(maa.CodeInvalidParameter, "nonce: expected a JSON string or number, got %s", map[byte]string{'{': "an object", '[': "an array", 't': "a boolean", 'f': "a boolean"}[t[0]])
}

// policyFromDraft accepts a draft policy as policy text or as the JWS PUT /policies takes.
func policyFromDraft(draft string) (string, error) {
	d := strings.TrimSpace(draft)
	if strings.Count(d, ".") == 2 && !strings.ContainsAny(d, " \n;{") {
		return policyFromJWS(d)
	}
	return draft, nil
}
