package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/sample-apps/records/api"
	"github.com/countersign/countersign/sample-apps/records/inference"
	"github.com/countersign/countersign/sample-apps/records/store"
)

// fakeInference answers a fixed diagnosis and counts calls.
type fakeInference struct {
	mu    sync.Mutex
	calls int
	err   error
}

func (f *fakeInference) Diagnose(_ context.Context, id string, t []float32, side int) (*inference.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	if len(t) != side*side {
		return nil, errors.New("bad tensor")
	}
	body := `{"model_name":"m","model_version":"1","id":"` + id + `","outputs":[{"name":"probabilities","datatype":"BYTES","shape":[1,3],"data":["0.900000:2:nodule","0.060000:0:normal","0.040000:1:opacity"]}]}`
	r, err := inference.ParseResponse([]byte(body))
	if err != nil {
		return nil, err
	}
	r.Receipt = "receipt-from-sidecar"
	return r, nil
}

func newAPI(t *testing.T) (*httptest.Server, *store.Memory, *fakeInference) {
	st := store.NewMemory()
	fi := &fakeInference{}
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	s := httptest.NewServer(api.New(api.Options{Store: st, Inference: fi, Now: func() time.Time { return now }}))
	t.Cleanup(s.Close)
	return s, st, fi
}

func do(t *testing.T, method, url, ct, body string, hdr ...string) (*http.Response, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp, m
}

func TestPatientValidation(t *testing.T) {
	s, _, _ := newAPI(t)
	for _, tc := range []struct {
		name, body string
		status     int
		field      string
	}{
		{"before 1900", `{"name":"Ada Lovelace","dateOfBirth":"1815-12-10"}`, 422, "dateOfBirth"},
		{"valid", `{"name":"Ada Lovelace","dateOfBirth":"1985-12-10","sex":"female","mrn":"MRN-1"}`, 201, ""},
		{"missing name", `{"dateOfBirth":"1985-12-10"}`, 422, "name"},
		{"bad date", `{"name":"A","dateOfBirth":"10/12/1985"}`, 422, "dateOfBirth"},
		{"future date", `{"name":"A","dateOfBirth":"2030-01-01"}`, 422, "dateOfBirth"},
		{"bad sex", `{"name":"A","dateOfBirth":"1985-12-10","sex":"x"}`, 422, "sex"},
		{"bad mrn", `{"name":"A","dateOfBirth":"1985-12-10","mrn":"a b"}`, 422, "mrn"},
		{"control char", `{"name":"A\u0007","dateOfBirth":"1985-12-10"}`, 422, "name"},
		{"version on create", `{"name":"A","dateOfBirth":"1985-12-10","version":3}`, 422, "version"},
		{"unknown field", `{"name":"A","dateOfBirth":"1985-12-10","ssn":"1"}`, 400, ""},
		{"not json", `name=A`, 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, m := do(t, "POST", s.URL+"/api/patients", "application/json", tc.body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %v", resp.StatusCode, tc.status, m)
			}
			if tc.field != "" {
				f, _ := m["fields"].(map[string]any)
				if _, ok := f[tc.field]; !ok {
					t.Fatalf("error does not name field %s: %v", tc.field, m)
				}
			}
			if tc.status >= 400 && m["error"] == "" {
				t.Fatalf("no error message: %v", m)
			}
		})
	}
	resp, _ := do(t, "POST", s.URL+"/api/patients", "text/plain", `{}`)
	if resp.StatusCode != 415 {
		t.Fatalf("text/plain: %d, want 415", resp.StatusCode)
	}
	resp, _ = do(t, "POST", s.URL+"/api/patients", "application/json", `{"name":"`+strings.Repeat("a", api.MaxJSONBody)+`"}`)
	if resp.StatusCode != 413 {
		t.Fatalf("oversized body: %d, want 413", resp.StatusCode)
	}
}

func TestIdempotentCreate(t *testing.T) {
	s, st, _ := newAPI(t)
	body := `{"name":"Grace Hopper","dateOfBirth":"1966-12-09"}`
	r1, m1 := do(t, "POST", s.URL+"/api/patients", "application/json", body, "Idempotency-Key", "k-1")
	r2, m2 := do(t, "POST", s.URL+"/api/patients", "application/json", body, "Idempotency-Key", "k-1")
	if r1.StatusCode != 201 || r2.StatusCode != 200 || m1["id"] != m2["id"] || r2.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry: %d %v then %d %v", r1.StatusCode, m1, r2.StatusCode, m2)
	}
	r3, m3 := do(t, "POST", s.URL+"/api/patients", "application/json", `{"name":"Other","dateOfBirth":"1966-12-09"}`, "Idempotency-Key", "k-1")
	if r3.StatusCode != 422 || !strings.Contains(m3["error"].(string), "Idempotency-Key") {
		t.Fatalf("key reuse with another body: %d %v", r3.StatusCode, m3)
	}
	if _, n, _ := st.ListPatients(context.Background(), 0, 100); n != 1 {
		t.Fatalf("%d patients stored, want 1", n)
	}
	r4, _ := do(t, "POST", s.URL+"/api/patients", "application/json", body, "Idempotency-Key", "bad key!")
	if r4.StatusCode != 400 {
		t.Fatalf("invalid key: %d", r4.StatusCode)
	}
}

func TestUpdateVersionConflict(t *testing.T) {
	s, _, _ := newAPI(t)
	_, p := do(t, "POST", s.URL+"/api/patients", "application/json", `{"name":"A","dateOfBirth":"1990-01-01"}`)
	url := s.URL + "/api/patients/" + p["id"].(string)
	r, m := do(t, "PUT", url, "application/json", `{"name":"B","dateOfBirth":"1990-01-01","version":1}`)
	if r.StatusCode != 200 || m["name"] != "B" || m["version"].(float64) != 2 {
		t.Fatalf("update: %d %v", r.StatusCode, m)
	}
	r, m = do(t, "PUT", url, "application/json", `{"name":"C","dateOfBirth":"1990-01-01","version":1}`)
	if r.StatusCode != 409 {
		t.Fatalf("stale update: %d %v", r.StatusCode, m)
	}
	r, m = do(t, "PUT", url, "application/json", `{"name":"C","dateOfBirth":"1990-01-01"}`)
	if r.StatusCode != 422 {
		t.Fatalf("update without version: %d %v", r.StatusCode, m)
	}
	r, _ = do(t, "GET", s.URL+"/api/patients/p_0000000000000000", "", "")
	if r.StatusCode != 404 {
		t.Fatalf("unknown patient: %d", r.StatusCode)
	}
}

func TestScanUpload(t *testing.T) {
	s, st, fi := newAPI(t)
	_, p := do(t, "POST", s.URL+"/api/patients", "application/json", `{"name":"A","dateOfBirth":"1990-01-01"}`)
	pid := p["id"].(string)
	png, err := os.ReadFile("../../../inference-server/models/chest-scan-classifier/samples/nodule-1.png")
	if err != nil {
		t.Fatal(err)
	}
	r, m := do(t, "POST", s.URL+"/api/patients/"+pid+"/scans?title=Chest%20PA", "image/png", string(png), "Idempotency-Key", "scan-1")
	if r.StatusCode != 201 {
		t.Fatalf("upload: %d %v", r.StatusCode, m)
	}
	d := m["diagnosis"].(map[string]any)
	if d["label"] != "nodule" || d["receipt"] != "receipt-from-sidecar" || !strings.Contains(d["response"].(string), "0.900000:2:nodule") {
		t.Fatalf("diagnosis: %v", d)
	}
	r, m2 := do(t, "POST", s.URL+"/api/patients/"+pid+"/scans?title=Chest%20PA", "image/png", string(png), "Idempotency-Key", "scan-1")
	if r.StatusCode != 200 || m2["id"] != m["id"] || fi.calls != 1 {
		t.Fatalf("retried upload: %d, id %v vs %v, %d inference calls (want 1)", r.StatusCode, m2["id"], m["id"], fi.calls)
	}
	// Raw greyscale: 64x64 bytes by default; a wrong size is a clear 422.
	r, m = do(t, "POST", s.URL+"/api/patients/"+pid+"/scans", "application/octet-stream", strings.Repeat("\x80", 64*64))
	if r.StatusCode != 201 {
		t.Fatalf("raw upload: %d %v", r.StatusCode, m)
	}
	r, m = do(t, "POST", s.URL+"/api/patients/"+pid+"/scans?width=10&height=10", "application/octet-stream", "short")
	if r.StatusCode != 422 || !strings.Contains(m["error"].(string), "needs 100 bytes") {
		t.Fatalf("short raw: %d %v", r.StatusCode, m)
	}
	r, _ = do(t, "POST", s.URL+"/api/patients/"+pid+"/scans", "image/png", "not a png")
	if r.StatusCode != 422 {
		t.Fatalf("not a png: %d", r.StatusCode)
	}
	r, _ = do(t, "POST", s.URL+"/api/patients/"+pid+"/scans", "image/jpeg", "x")
	if r.StatusCode != 415 {
		t.Fatalf("jpeg: %d", r.StatusCode)
	}
	r, _ = do(t, "POST", s.URL+"/api/patients/p_0000000000000000/scans", "image/png", string(png))
	if r.StatusCode != 404 {
		t.Fatalf("scan for unknown patient: %d", r.StatusCode)
	}
	// An inference failure stores nothing and says why.
	fi.err = &inference.Error{Status: 403, Reject: "mrenclave_mismatch", Msg: "claim x-ms-sgx-mrenclave is …"}
	r, m = do(t, "POST", s.URL+"/api/patients/"+pid+"/scans", "image/png", string(png), "Idempotency-Key", "scan-2")
	if r.StatusCode != 502 || !strings.Contains(m["error"].(string), "mrenclave_mismatch") {
		t.Fatalf("inference failure: %d %v", r.StatusCode, m)
	}
	recs, _ := st.ListRecords(context.Background(), pid)
	if len(recs) != 2 {
		t.Fatalf("%d records, want 2 (the failed upload must not be stored)", len(recs))
	}
}

func TestStoreUnavailable(t *testing.T) {
	s, st, _ := newAPI(t)
	st.Err = errors.New("dial tcp 127.0.0.1:6380: connection refused")
	r, m := do(t, "POST", s.URL+"/api/patients", "application/json", `{"name":"A","dateOfBirth":"1990-01-01"}`)
	if r.StatusCode != 503 || !strings.Contains(m["error"].(string), "retry with the same Idempotency-Key") {
		t.Fatalf("store down: %d %v", r.StatusCode, m)
	}
}

func TestPortalFiles(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/index.html", []byte("<!doctype html><title>portal</title>"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := dir + "/config.json"
	if err := os.WriteFile(cfg, []byte(`{"attestationURL":"http://127.0.0.1:1/.well-known/attestation"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	s := httptest.NewServer(api.New(api.Options{Store: store.NewMemory(), Inference: &fakeInference{}, PortalDir: dir, PortalConfig: cfg}))
	defer s.Close()
	for _, tc := range []struct {
		method, path string
		status       int
		contains     string
	}{
		{"GET", "/", 200, "<title>portal</title>"},
		{"GET", "/config.json", 200, "attestationURL"},
		{"POST", "/", 405, "read-only"},
		{"GET", "/api/nope", 404, "no such endpoint"},
		{"GET", "/api/patients", 200, `"patients":[]`},
	} {
		req, _ := http.NewRequest(tc.method, s.URL+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.contains) {
			t.Errorf("%s %s: %d %s, want %d containing %q", tc.method, tc.path, resp.StatusCode, b, tc.status, tc.contains)
		}
		if tc.path == "/" && tc.method == "GET" && !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("portal served without a CSP")
		}
	}
}
