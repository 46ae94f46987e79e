package attester

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/countersign/countersign/attestation/maa"
	"github.com/countersign/countersign/attestation/quote"
)

// TestSGXOutsideEnclave calls the real EGo runtime entry point: outside an enclave it must
// fail with ErrNotInEnclave, never return a quote.
func TestSGXOutsideEnclave(t *testing.T) {
	a, err := New(NameSGX, Options{})
	if err != nil {
		t.Fatal(err)
	}
	q, err := a.Quote(context.Background(), []byte(`{"keys":[]}`))
	if !errors.Is(err, ErrNotInEnclave) || q != nil {
		t.Fatalf("got quote %x, err %v; want ErrNotInEnclave", q, err)
	}
	if !strings.Contains(err.Error(), "ego run") {
		t.Errorf("error does not tell how to run in an enclave: %v", err)
	}
}

func TestSGXUnwrapsReport(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	var gotData []byte
	inner := quote.NewSim(&quote.Report{}, priv)
	orig := getRemoteReport
	getRemoteReport = func(d []byte) ([]byte, error) { gotData = d; return quote.WrapOEReport(inner), nil }
	defer func() { getRemoteReport = orig }()
	q, err := SGX{}.Quote(context.Background(), []byte("rd"))
	if err != nil || string(q) != string(inner) {
		t.Fatalf("quote not unwrapped: %v", err)
	}
	want := maa.ReportDataFor([]byte("rd"))
	if string(gotData) != string(want[:32]) {
		t.Fatalf("report data %x, want SHA-256 of the runtime data", gotData)
	}
}

func TestSimQuoteCommitsToRuntimeData(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	id := SimIdentity{ProductID: 4, SVN: 9}
	id.MRSigner[0] = 0xaa
	s, err := NewSim(priv, id)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s.Quote(context.Background(), []byte("runtime"))
	if err != nil {
		t.Fatal(err)
	}
	q, err := quote.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.VerifySim(map[[32]byte]ed25519.PublicKey{quote.PlatformKeyID(pub): pub}); err != nil {
		t.Fatal(err)
	}
	if q.Report.ReportData != maa.ReportDataFor([]byte("runtime")) || !q.Report.Debug() ||
		q.Report.ProductID != 4 || q.Report.SVN != 9 || q.Report.MRSigner != id.MRSigner {
		t.Fatalf("quote does not carry the identity and runtime data: %+v", q.Report)
	}
	if q.Report.MREnclave == ([32]byte{}) {
		t.Fatal("default MRENCLAVE not set from the executable")
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New("tpm", Options{}); err == nil || !strings.Contains(err.Error(), `"sgx" or "sim"`) {
		t.Errorf("unknown attester: %v", err)
	}
	if _, err := New(NameSim, Options{}); err == nil || !strings.Contains(err.Error(), "sim-platform-key") {
		t.Errorf("sim without key: %v", err)
	}
	if _, err := New(NameSim, Options{SimPlatformKey: filepath.Join(t.TempDir(), "missing.pem")}); err == nil {
		t.Error("missing key file accepted")
	}
	if _, err := ParseMeasurement("abc"); err == nil {
		t.Error("short measurement accepted")
	}
}
