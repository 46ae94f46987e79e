package service

import (
	"bytes"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	egoattestation "github.com/edgelesssys/ego/attestation"

	"github.com/countersign/countersign/attestation/quote"
)

// egoCreateToken replicates EGo's internal/attestation.CreateAzureAttestationToken (v1.8.0),
// which cannot be imported: the OE report and the data as unpadded base64url, dataType
// Binary, POSTed as application/json to {base}/attest/OpenEnclave?api-version=2020-10-01 by a
// client that skips TLS verification; anything but 200 is an error.
func egoCreateToken(t *testing.T, report, data []byte, baseURL string) string {
	t.Helper()
	type rtdata struct {
		Data     string `json:"data"`
		DataType string `json:"dataType"`
	}
	type attestOERequest struct {
		Report      string `json:"report"`
		RuntimeData rtdata `json:"runtimeData"`
	}
	body, err := json.Marshal(attestOERequest{
		Report:      base64.RawURLEncoding.EncodeToString(report),
		RuntimeData: rtdata{Data: base64.RawURLEncoding.EncodeToString(data), DataType: "Binary"},
	})
	if err != nil {
		t.Fatal(err)
	}
	client := http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer client.CloseIdleConnections()
	resp, err := client.Post(baseURL+"/attest/OpenEnclave?api-version=2020-10-01", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("attestation request failed, attestation provider returned status code %v", resp.StatusCode)
	}
	var out struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out.Token
}

// TestEGoVerifiesToken: EGo's own verifier accepts the service's tokens, fetched over TLS with
// the issuer being exactly the server's URL.
func TestEGoVerifiesToken(t *testing.T) {
	var handler atomic.Value
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handler.Load().(http.Handler).ServeHTTP(w, r)
	}))
	srv.StartTLS()
	defer srv.Close()

	p := newPlatform(t)
	key, cert := testSigning(t)
	s, err := New(Config{Issuer: srv.URL, SigningKey: key, SigningCert: cert, SimPlatformKeys: []ed25519.PublicKey{p.pub}})
	if err != nil {
		t.Fatal(err)
	}
	handler.Store(s.Handler())

	// EGo fetches {url}/certs with http.Get, i.e. through http.DefaultTransport.
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	tr := http.DefaultTransport.(*http.Transport)
	saved := tr.TLSClientConfig
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	defer func() {
		tr.CloseIdleConnections()
		tr.TLSClientConfig = saved
	}()

	data := []byte(`{"keys":[]} runtime data as the enclave sent it`)
	rep := testReport(data)
	rep.SVN = 5
	rep.ProductID = 0x0102
	token := egoCreateToken(t, quote.WrapOEReport(p.quote(rep)), data, srv.URL)

	report, err := egoattestation.VerifyAzureAttestationToken(token, srv.URL)
	if err != nil {
		t.Fatalf("EGo rejects the token: %v", err)
	}
	if !bytes.Equal(report.UniqueID, rep.MREnclave[:]) {
		t.Errorf("UniqueID %x, want MRENCLAVE %x", report.UniqueID, rep.MREnclave)
	}
	if !bytes.Equal(report.SignerID, rep.MRSigner[:]) {
		t.Errorf("SignerID %x, want MRSIGNER %x", report.SignerID, rep.MRSigner)
	}
	if report.SecurityVersion != 5 {
		t.Errorf("SecurityVersion %d, want 5", report.SecurityVersion)
	}
	if binary.LittleEndian.Uint16(report.ProductID) != 0x0102 || len(report.ProductID) != 16 {
		t.Errorf("ProductID %x, want 0x0102 little-endian in 16 bytes", report.ProductID)
	}
	if !report.Debug {
		t.Error("Debug is false: tokens for simulated quotes must say debuggable")
	}
	if !bytes.Equal(report.Data, data) {
		t.Errorf("Data %q, want the runtime data %q", report.Data, data)
	}

	// And EGo refuses what it should: another provider URL (issuer mismatch), a tampered token.
	if _, err := egoattestation.VerifyAzureAttestationToken(token, srv.URL+"/"); err == nil {
		t.Error("EGo accepted the token for a provider URL with a trailing slash")
	}
	parts := bytes.Split([]byte(token), []byte("."))
	claims, _ := base64.RawURLEncoding.DecodeString(string(parts[1]))
	forged := bytes.Replace(claims, []byte(hex.EncodeToString(rep.MREnclave[:])), bytes.Repeat([]byte("0"), 64), 1)
	parts[1] = []byte(base64.RawURLEncoding.EncodeToString(forged))
	if _, err := egoattestation.VerifyAzureAttestationToken(string(bytes.Join(parts, []byte("."))), srv.URL); err == nil {
		t.Error("EGo accepted a token with a forged MRENCLAVE")
	}
}
