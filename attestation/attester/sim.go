package attester

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"

	"github.com/countersign/countersign/attestation/maa"
	"github.com/countersign/countersign/attestation/quote"
)

// SimIdentity is what a simulated enclave claims to be. A zero MREnclave defaults to the
// SHA-256 of the running executable, a zero MRSigner to SHA-256("countersign-sim-signer").
type SimIdentity struct {
	MREnclave [32]byte
	MRSigner  [32]byte
	ProductID uint16
	SVN       uint16
}

// DefaultSimMRSigner is the MRSIGNER a simulated enclave claims unless told otherwise.
var DefaultSimMRSigner = sha256.Sum256([]byte("countersign-sim-signer"))

// ParseMeasurement parses a 64-hex-digit MRENCLAVE or MRSIGNER.
func ParseMeasurement(s string) ([32]byte, error) {
	var m [32]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		return m, fmt.Errorf("%q is not a measurement: expected 64 hex digits", s)
	}
	copy(m[:], b)
	return m, nil
}

// Sim is the simulated attester: its quotes have the SGX layout, always carry the debug flag,
// and are signed by a simulated platform key that only the local attestation service trusts.
// Tokens for them say the enclave is debuggable, so any production policy rejects them.
type Sim struct {
	platform ed25519.PrivateKey
	id       SimIdentity
}

// NewSim returns a simulated attester signing with platform.
func NewSim(platform ed25519.PrivateKey, id SimIdentity) (*Sim, error) {
	if id.MRSigner == ([32]byte{}) {
		id.MRSigner = DefaultSimMRSigner
	}
	if id.MREnclave == ([32]byte{}) {
		m, err := executableDigest()
		if err != nil {
			return nil, fmt.Errorf("sim: measure the executable for MRENCLAVE: %w", err)
		}
		id.MREnclave = m
	}
	return &Sim{platform: platform, id: id}, nil
}

// NewSimFromFile loads the platform key from a PEM file.
func NewSimFromFile(path string, id SimIdentity) (*Sim, error) {
	k, err := quote.LoadPlatformKey(path)
	if err != nil {
		return nil, fmt.Errorf("sim platform key: %w", err)
	}
	return NewSim(k, id)
}

// Identity returns the measurements this attester claims.
func (s *Sim) Identity() SimIdentity { return s.id }

// Name implements Attester.
func (*Sim) Name() string { return NameSim }

// Quote implements Attester.
func (s *Sim) Quote(ctx context.Context, runtimeData []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r := quote.Report{
		MREnclave:  s.id.MREnclave,
		MRSigner:   s.id.MRSigner,
		ProductID:  s.id.ProductID,
		SVN:        s.id.SVN,
		ReportData: maa.ReportDataFor(runtimeData),
	}
	r.SetDebug(true)
	return quote.NewSim(&r, s.platform), nil
}

func executableDigest() ([32]byte, error) {
	var m [32]byte
	path, err := os.Executable()
	if err != nil {
		return m, err
	}
	f, err := os.Open(path)
	if err != nil {
		return m, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return m, err
	}
	copy(m[:], h.Sum(nil))
	return m, nil
}
