package maa

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/countersign/countersign/attestation/quote"
)

// Endpoint selects the attest API the client calls.
type Endpoint string

// Endpoints the client speaks.
const (
	// EndpointSgxEnclave is POST /attest/SgxEnclave?api-version=2022-08-01 with the bare quote.
	EndpointSgxEnclave Endpoint = "SgxEnclave"
	// EndpointOpenEnclave is POST /attest/OpenEnclave?api-version=2020-10-01 with the quote
	// wrapped in an Open Enclave report header, as EGo sends it.
	EndpointOpenEnclave Endpoint = "OpenEnclave"
)

// MaxTokenResponse bounds the attest response the client reads.
const MaxTokenResponse = 256 << 10

// Client requests tokens from MAA or the local attestation service.
type Client struct {
	// BaseURL is the attestation provider, e.g. https://myattest.weu.attest.azure.net.
	BaseURL string
	// Endpoint defaults to EndpointSgxEnclave.
	Endpoint Endpoint
	// HTTP defaults to a client with a 30 s timeout and the system roots.
	HTTP *http.Client
}

// ServiceError is an error answer from the attestation service, in MAA's error shape.
type ServiceError struct {
	Status  int
	Code    string
	Message string
	Details []FailureDetail
}

func (e *ServiceError) Error() string {
	s := fmt.Sprintf("attestation service answered %d %s: %s", e.Status, e.Code, e.Message)
	for _, d := range e.Details {
		s += fmt.Sprintf(" [%s %s=%s]", d.Code, d.Target, d.Value)
	}
	return s
}

// NewHTTPClient returns an HTTP client with a timeout that trusts caFile (PEM) in addition
// to nothing else when caFile is set, or the system roots when it is empty.
func NewHTTPClient(caFile string, timeout time.Duration) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	return &http.Client{Transport: tr, Timeout: timeout}, nil
}

// Attest sends a quote (bare, without an Open Enclave header) and the runtime data it commits
// to, with the given data type, and returns the token.
func (c *Client) Attest(ctx context.Context, q, runtimeData []byte, dataType string) (string, error) {
	base, err := url.Parse(c.BaseURL)
	if err != nil || (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" {
		return "", fmt.Errorf("attestation service URL %q: expected https://host[:port]", c.BaseURL)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	rd := &Data{Data: b64(runtimeData), DataType: dataType}
	var path string
	var body any
	switch c.Endpoint {
	case "", EndpointSgxEnclave:
		path = PathSgxEnclave + "?api-version=" + APIVersion2022
		body = AttestSgxRequest{Quote: b64(q), RuntimeData: rd}
	case EndpointOpenEnclave:
		path = PathOpenEnclave + "?api-version=" + APIVersion2020
		body = AttestOpenEnclaveRequest{Report: b64(quote.WrapOEReport(q)), RuntimeData: rd}
	default:
		return "", fmt.Errorf("unknown MAA endpoint %q, expected %q or %q", c.Endpoint, EndpointSgxEnclave, EndpointOpenEnclave)
	}
	payload, err := json.Marshal(body)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(c.BaseURL, "/")+path, bytes.NewReader(payload))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("attest at %s: %w", c.BaseURL, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxTokenResponse+1))
	if err != nil {
		return "", fmt.Errorf("attest at %s: read answer: %w", c.BaseURL, err)
	}
	if len(raw) > MaxTokenResponse {
		return "", fmt.Errorf("attest at %s: answer larger than %d bytes", c.BaseURL, MaxTokenResponse)
	}
	if resp.StatusCode != http.StatusOK {
		var e ErrorResponse
		if json.Unmarshal(raw, &e) == nil && e.Error.Code != "" {
			se := &ServiceError{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
			if e.Error.InnerError != nil {
				se.Details = e.Error.InnerError.Details
			}
			return "", se
		}
		return "", &ServiceError{Status: resp.StatusCode, Code: http.StatusText(resp.StatusCode), Message: truncate(string(raw), 200)}
	}
	var tr TokenResponse
	if err := json.Unmarshal(raw, &tr); err != nil || tr.Token == "" {
		return "", errors.New("attest: answer is not {\"token\": \"...\"}")
	}
	return tr.Token, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
