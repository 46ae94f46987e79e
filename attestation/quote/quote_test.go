package quote

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"path/filepath"
	"testing"

	"github.com/countersign/countersign/internal/fuzzcorpus"
)

func testReport() *Report {
	r := &Report{ProductID: 7, SVN: 3}
	for i := range r.MREnclave {
		r.MREnclave[i], r.MRSigner[i], r.ReportData[i] = 0xe1, 0x51, byte(i)
	}
	r.SetDebug(true)
	return r
}

func TestSimRoundTrip(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	r := testReport()
	raw := NewSim(r, priv)
	trusted := map[[32]byte]ed25519.PublicKey{PlatformKeyID(pub): pub}
	for name, b := range map[string][]byte{"bare": raw, "OE-wrapped": WrapOEReport(raw)} {
		q, err := Parse(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !q.IsSim() || q.Report != *r || !q.Report.Debug() {
			t.Fatalf("%s: round trip changed the report: %+v", name, q.Report)
		}
		if err := q.VerifySim(trusted); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

func TestSimRejections(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	raw := NewSim(testReport(), priv)
	trusted := map[[32]byte]ed25519.PublicKey{PlatformKeyID(pub): pub}

	q, _ := Parse(raw)
	if err := q.VerifySim(map[[32]byte]ed25519.PublicKey{PlatformKeyID(otherPub): otherPub}); !errors.Is(err, ErrUntrustedPlatform) {
		t.Fatalf("untrusted platform: %v", err)
	}
	tampered := bytes.Clone(raw)
	tampered[HeaderSize+offSVN] ^= 1 // raise the SVN after signing
	q, err := Parse(tampered)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.VerifySim(trusted); err == nil {
		t.Fatal("tampered report body verified")
	}
	// A key id that names a trusted key over someone else's signature.
	forged := bytes.Clone(raw)
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	copy(forged[len(forged)-ed25519.SignatureSize:], ed25519.Sign(otherPriv, forged[:HeaderSize+ReportBodySize]))
	q, _ = Parse(forged)
	if err := q.VerifySim(trusted); err == nil {
		t.Fatal("signature by another key under a trusted key id verified")
	}
}

func sgxShaped(version, keyType uint16, sigData []byte) []byte {
	b := make([]byte, HeaderSize+ReportBodySize)
	binary.LittleEndian.PutUint16(b[0:], version)
	binary.LittleEndian.PutUint16(b[2:], keyType)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(sigData)))
	return append(b, sigData...)
}

func TestParseErrors(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	sim := NewSim(testReport(), priv)
	badOE := WrapOEReport(sim)
	binary.LittleEndian.PutUint64(badOE[8:], 5)
	cases := map[string]struct {
		in    []byte
		field string
	}{
		"empty":                  {nil, "quote"},
		"truncated":              {sim[:HeaderSize+10], "quote"},
		"truncated signature":    {sim[:len(sim)-1], "quote.signatureDataLength"},
		"trailing byte":          {append(bytes.Clone(sim), 0), "quote.signatureDataLength"},
		"unknown version":        {sgxShaped(9, 2, nil), "quote.header.version"},
		"sgx bad key type":       {sgxShaped(3, 7, nil), "quote.header.attestationKeyType"},
		"sim bad key type":       {sgxShaped(SimVersion, 2, make([]byte, simSigDataSize)), "quote.header.attestationKeyType"},
		"sim short signature":    {sgxShaped(SimVersion, SimKeyType, make([]byte, 10)), "quote.signatureData"},
		"OE header size lies":    {badOE, "report.size"},
		"oversize":               {make([]byte, MaxQuoteSize+1), "quote"},
		"v4 quote for TDX (tee)": {func() []byte { b := sgxShaped(4, 2, nil); b[4] = 0x81; return b }(), "quote.header.teeType"},
	}
	for name, tc := range cases {
		_, err := Parse(tc.in)
		var qe *Error
		if !errors.As(err, &qe) || qe.Field != tc.field {
			t.Errorf("%s: got %v, want an error on field %s", name, err, tc.field)
		}
	}
	// A real-SGX-shaped quote parses (its signature is DCAP's business, not ours).
	q, err := Parse(sgxShaped(3, 2, []byte{1, 2, 3}))
	if err != nil || q.IsSim() {
		t.Fatalf("SGX-shaped quote: %v", err)
	}
}

func TestPlatformKeyFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "platform.pem")
	priv, err := GeneratePlatformKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := GeneratePlatformKey(path); err == nil {
		t.Fatal("an existing platform key was overwritten")
	}
	got, err := LoadPlatformKey(path)
	if err != nil || !got.Equal(priv) {
		t.Fatalf("load private: %v", err)
	}
	pub, err := LoadPlatformPublicKey(path + ".pub")
	if err != nil || !pub.Equal(priv.Public()) {
		t.Fatalf("load public: %v", err)
	}
	if _, err := LoadPlatformPublicKey(path); err == nil {
		t.Fatal("private key file accepted as a public key")
	}
}

func FuzzParse(f *testing.F) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	sim := NewSim(testReport(), priv)
	seeds := [][]any{
		{sim}, {WrapOEReport(sim)}, {sgxShaped(3, 2, []byte{1, 2, 3})}, {sgxShaped(4, 2, nil)},
		{sim[:100]}, {[]byte{1, 0, 0, 0, 2, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255}}, {[]byte{}},
	}
	if *fuzzcorpus.Update {
		if err := fuzzcorpus.Write("FuzzParse", seeds...); err != nil {
			f.Fatal(err)
		}
	}
	for _, s := range seeds {
		f.Add(s[0].([]byte))
	}
	trusted := map[[32]byte]ed25519.PublicKey{PlatformKeyID(pub): pub}
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := Parse(b)
		if err != nil {
			var qe *Error
			if !errors.As(err, &qe) || qe.Field == "" {
				t.Fatalf("error without a field: %v", err)
			}
			return
		}
		if len(q.Signed) != HeaderSize+ReportBodySize {
			t.Fatalf("signed part of %d bytes", len(q.Signed))
		}
		if q.IsSim() {
			_ = q.VerifySim(trusted)
		}
	})
}
