// Package inference calls the diagnostic provider's inference server over the Open Inference
// Protocol v2. The records API is an unmodified app: it speaks plain HTTP to a loopback address
// (its sidecar's outbound listener), and keeps whatever receipt header the sidecar hands back.
package inference

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ReceiptHeader is the header a Countersign sidecar adds to responses it has checked.
const ReceiptHeader = "Countersign-Receipt"

// WantReceiptHeader asks the sidecar for that receipt (value "inline"); without it there is none.
const WantReceiptHeader = "Countersign-Want-Receipt"

// MaxResponseBytes bounds an inference response.
const MaxResponseBytes = 1 << 20

// Result is a diagnosis as the inference server answered it.
type Result struct {
	Model        string
	ModelVersion string
	Label        string // the highest-scoring class
	Classes      []Class
	Body         []byte // the response body as received
	Encoding     string // "" (REST: Body is the JSON) or EncodingGRPC
	Receipt      string // the Countersign-Receipt header, "" if none
}

// EncodingGRPC marks a Result whose Body is a gRPC response body: the length-prefixed
// ModelInferResponse message exactly as received (what the receipt's bodySha256 covers).
const EncodingGRPC = "grpc"

// Class is a label and its probability.
type Class struct {
	Label string
	Score float64
}

// Client diagnoses a scan tensor.
type Client interface {
	Diagnose(ctx context.Context, id string, tensor []float32, side int) (*Result, error)
}

// Error is a failed call; Status is the HTTP status (0 for transport errors) and Reject the
// sidecar's Countersign-Reject code, if any.
type Error struct {
	Status int
	Reject string
	Msg    string
}

func (e *Error) Error() string {
	s := e.Msg
	if e.Status != 0 {
		s = fmt.Sprintf("inference server answered %d: %s", e.Status, e.Msg)
	}
	if e.Reject != "" {
		s += " (sidecar rejection: " + e.Reject + ")"
	}
	return s
}

// OIP is a Client over HTTP.
type OIP struct {
	BaseURL string // e.g. http://127.0.0.1:7001 (the sidecar's outbound listener)
	Model   string
	HTTP    *http.Client
}

type tensor struct {
	Name     string    `json:"name"`
	Datatype string    `json:"datatype"`
	Shape    []int     `json:"shape"`
	Data     []float32 `json:"data"`
}

type outputReq struct {
	Name       string         `json:"name"`
	Parameters map[string]int `json:"parameters"`
}

type inferRequest struct {
	ID      string      `json:"id"`
	Inputs  []tensor    `json:"inputs"`
	Outputs []outputReq `json:"outputs"`
}

type inferResponse struct {
	ModelName    string `json:"model_name"`
	ModelVersion string `json:"model_version"`
	Outputs      []struct {
		Name string          `json:"name"`
		Data json.RawMessage `json:"data"`
	} `json:"outputs"`
}

// Diagnose implements Client: it asks for the probabilities output as a classification of
// every class ("score:index:label" strings).
func (c *OIP) Diagnose(ctx context.Context, id string, t []float32, side int) (*Result, error) {
	if len(t) != side*side {
		return nil, fmt.Errorf("tensor of %d values, expected %d", len(t), side*side)
	}
	body, err := json.Marshal(inferRequest{
		ID:      id,
		Inputs:  []tensor{{Name: "scan", Datatype: "FP32", Shape: []int{1, 1, side, side}, Data: t}},
		Outputs: []outputReq{{Name: "probabilities", Parameters: map[string]int{"classification": 3}}},
	})
	if err != nil {
		return nil, err
	}
	url := strings.TrimRight(c.BaseURL, "/") + "/v2/models/" + c.Model + "/infer"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	// Ask the sidecar for the receipt of this call: the diagnosis is stored with it.
	req.Header.Set(WantReceiptHeader, "inline")
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, &Error{Msg: fmt.Sprintf("calling the inference server: %v", err)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return nil, &Error{Status: resp.StatusCode, Msg: fmt.Sprintf("reading the response: %v", err)}
	}
	if len(b) > MaxResponseBytes {
		return nil, &Error{Status: resp.StatusCode, Msg: fmt.Sprintf("response larger than %d bytes", MaxResponseBytes)}
	}
	if resp.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(string(b))
		if d := resp.Header.Get("Countersign-Reject-Detail"); d != "" {
			msg = d
		}
		if len(msg) > 300 {
			msg = msg[:300] + "…"
		}
		return nil, &Error{Status: resp.StatusCode, Reject: resp.Header.Get("Countersign-Reject"), Msg: msg}
	}
	r, err := ParseResponse(b)
	if err != nil {
		return nil, &Error{Status: resp.StatusCode, Msg: err.Error()}
	}
	r.Receipt = resp.Header.Get(ReceiptHeader)
	return r, nil
}

// ParseResponse reads an OIP response whose "probabilities" output is a classification.
func ParseResponse(b []byte) (*Result, error) {
	var ir inferResponse
	if err := json.Unmarshal(b, &ir); err != nil {
		return nil, fmt.Errorf("response is not OIP JSON: %v", err)
	}
	for _, o := range ir.Outputs {
		if o.Name != "probabilities" {
			continue
		}
		var items []string
		if err := json.Unmarshal(o.Data, &items); err != nil {
			return nil, fmt.Errorf("probabilities output is not a classification (strings): %v", err)
		}
		if len(items) == 0 {
			return nil, errors.New("probabilities output is empty")
		}
		res := &Result{Model: ir.ModelName, ModelVersion: ir.ModelVersion, Body: b}
		if err := res.classify(items); err != nil {
			return nil, err
		}
		return res, nil
	}
	return nil, errors.New("response has no probabilities output")
}

// classify fills r's classes, highest score first, and its label from the classification
// entries "score:index:label" that both the REST and the gRPC answer carry.
func (r *Result) classify(items []string) error {
	for _, it := range items {
		parts := strings.SplitN(it, ":", 3)
		if len(parts) != 3 {
			return fmt.Errorf("classification entry %q is not score:index:label", it)
		}
		score, err := strconv.ParseFloat(parts[0], 64)
		if err != nil || score < 0 || score > 1 {
			return fmt.Errorf("classification entry %q: score is not a probability", it)
		}
		r.Classes = append(r.Classes, Class{Label: parts[2], Score: score})
	}
	sort.SliceStable(r.Classes, func(i, j int) bool { return r.Classes[i].Score > r.Classes[j].Score })
	r.Label = r.Classes[0].Label
	return nil
}
