// Package quote parses SGX quotes, Open Enclave report wrappers and Countersign's simulated
// quotes. All parsing is of untrusted bytes: every length is checked before it is used, and
// every error says which field was wrong.
//
// A simulated ("sim") quote has the shape of an SGX ECDSA quote so that one report-body parser
// serves both: a 48-byte header whose version is SimVersion, the 384-byte SGX report body, then a
// little-endian u32 signature length and the signature data: the SHA-256 of the platform's
// Ed25519 public key (SPKI DER), then an Ed25519 signature over header||body. docs/protocol.md
// describes the layout byte by byte.
package quote

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
)

// Layout constants of the SGX quote (v3/v4 ECDSA) and report body.
const (
	HeaderSize     = 48
	ReportBodySize = 384
	// MaxQuoteSize bounds what Parse accepts; real ECDSA quotes with certification data are a
	// few KiB.
	MaxQuoteSize = 64 << 10

	// SimVersion marks a simulated quote (an SGX quote is version 3, 4 or 5).
	SimVersion uint16 = 0x5349 // "IS" little-endian: "sim"
	// SimKeyType is the attestation key type of a simulated quote (SGX ECDSA P-256 is 2).
	SimKeyType uint16 = 0x5345

	simSigDataSize = sha256.Size + ed25519.SignatureSize

	// oeReportHeaderSize is the Open Enclave report header: u32 version, u32 type, u64 size.
	oeReportHeaderSize = 16
	oeReportVersion    = 1
	oeReportTypeRemote = 2

	attrDebug = 0x2 // SGX_FLAGS_DEBUG in the attributes' flags word
)

// Report is the part of an SGX report body that attestation uses.
type Report struct {
	CPUSVN     [16]byte
	Attributes [16]byte
	MREnclave  [32]byte
	MRSigner   [32]byte
	ConfigID   [64]byte
	ProductID  uint16
	SVN        uint16
	ReportData [64]byte
}

// Debug reports whether the enclave was launched in debug mode.
func (r *Report) Debug() bool {
	return binary.LittleEndian.Uint64(r.Attributes[:8])&attrDebug != 0
}

// SetDebug sets or clears the debug flag in the attributes.
func (r *Report) SetDebug(debug bool) {
	flags := binary.LittleEndian.Uint64(r.Attributes[:8])
	if debug {
		flags |= attrDebug
	} else {
		flags &^= attrDebug
	}
	binary.LittleEndian.PutUint64(r.Attributes[:8], flags)
}

// Quote is a parsed quote.
type Quote struct {
	Version uint16
	KeyType uint16
	Report  Report
	// Signed is header||report body: the bytes the quote's signature covers.
	Signed []byte
	// SigData is the signature section after its length prefix.
	SigData []byte
}

// IsSim reports whether q is a simulated quote.
func (q *Quote) IsSim() bool { return q.Version == SimVersion }

// Error is a parse or verification failure with the field it concerns.
type Error struct {
	Field string
	Msg   string
}

func (e *Error) Error() string { return e.Field + ": " + e.Msg }

func errf(field, format string, args ...any) error {
	return &Error{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// UnwrapOEReport strips an Open Enclave remote-report header (as EGo's GetRemoteReport returns)
// and returns the SGX quote inside. Bytes that do not start with an OE header are returned
// unchanged, so callers may pass either form.
func UnwrapOEReport(b []byte) ([]byte, error) {
	if len(b) < oeReportHeaderSize {
		return b, nil
	}
	version := binary.LittleEndian.Uint32(b[0:4])
	typ := binary.LittleEndian.Uint32(b[4:8])
	if version != oeReportVersion || typ != oeReportTypeRemote {
		return b, nil
	}
	size := binary.LittleEndian.Uint64(b[8:16])
	if size != uint64(len(b)-oeReportHeaderSize) {
		return nil, errf("report.size", "Open Enclave header says %d quote bytes, %d follow", size, len(b)-oeReportHeaderSize)
	}
	return b[oeReportHeaderSize:], nil
}

// WrapOEReport puts an Open Enclave remote-report header in front of a quote.
func WrapOEReport(quote []byte) []byte {
	out := make([]byte, oeReportHeaderSize+len(quote))
	binary.LittleEndian.PutUint32(out[0:4], oeReportVersion)
	binary.LittleEndian.PutUint32(out[4:8], oeReportTypeRemote)
	binary.LittleEndian.PutUint64(out[8:16], uint64(len(quote)))
	copy(out[oeReportHeaderSize:], quote)
	return out
}

// Parse parses an SGX ECDSA quote (version 3 or 4) or a simulated quote, optionally wrapped in
// an Open Enclave report header. It checks structure only; signatures are checked by VerifySim
// (simulated quotes) or by DCAP collateral (real quotes, not done here).
func Parse(b []byte) (*Quote, error) {
	if len(b) > MaxQuoteSize {
		return nil, errf("quote", "%d bytes, more than the %d allowed", len(b), MaxQuoteSize)
	}
	b, err := UnwrapOEReport(b)
	if err != nil {
		return nil, err
	}
	if len(b) < HeaderSize+ReportBodySize+4 {
		return nil, errf("quote", "truncated: %d bytes, a quote has at least %d", len(b), HeaderSize+ReportBodySize+4)
	}
	q := &Quote{
		Version: binary.LittleEndian.Uint16(b[0:2]),
		KeyType: binary.LittleEndian.Uint16(b[2:4]),
	}
	switch {
	case q.Version == SimVersion:
		if q.KeyType != SimKeyType {
			return nil, errf("quote.header.attestationKeyType", "%#x in a simulated quote, expected %#x", q.KeyType, SimKeyType)
		}
	case q.Version == 3 || q.Version == 4:
		if q.KeyType != 2 && q.KeyType != 3 {
			return nil, errf("quote.header.attestationKeyType", "%d, expected 2 (ECDSA P-256) or 3 (ECDSA P-384)", q.KeyType)
		}
		if q.Version == 4 && binary.LittleEndian.Uint32(b[4:8]) != 0 {
			return nil, errf("quote.header.teeType", "%#x, expected 0 (SGX)", binary.LittleEndian.Uint32(b[4:8]))
		}
	default:
		return nil, errf("quote.header.version", "%d, expected 3 or 4 (SGX ECDSA) or %#x (simulated)", q.Version, SimVersion)
	}
	body := b[HeaderSize : HeaderSize+ReportBodySize]
	parseReportBody(body, &q.Report)
	sigLen := binary.LittleEndian.Uint32(b[HeaderSize+ReportBodySize:])
	rest := b[HeaderSize+ReportBodySize+4:]
	if uint64(sigLen) != uint64(len(rest)) {
		return nil, errf("quote.signatureDataLength", "says %d bytes, %d follow", sigLen, len(rest))
	}
	if q.IsSim() && len(rest) != simSigDataSize {
		return nil, errf("quote.signatureData", "%d bytes in a simulated quote, expected %d", len(rest), simSigDataSize)
	}
	q.Signed = b[:HeaderSize+ReportBodySize]
	q.SigData = rest
	return q, nil
}

// Report body offsets (Intel SGX DCAP quote library, sgx_report_body_t).
const (
	offCPUSVN     = 0
	offAttributes = 48
	offMREnclave  = 64
	offMRSigner   = 128
	offConfigID   = 192
	offProductID  = 256
	offSVN        = 258
	offReportData = 320
)

func parseReportBody(body []byte, r *Report) {
	copy(r.CPUSVN[:], body[offCPUSVN:])
	copy(r.Attributes[:], body[offAttributes:])
	copy(r.MREnclave[:], body[offMREnclave:])
	copy(r.MRSigner[:], body[offMRSigner:])
	copy(r.ConfigID[:], body[offConfigID:])
	r.ProductID = binary.LittleEndian.Uint16(body[offProductID:])
	r.SVN = binary.LittleEndian.Uint16(body[offSVN:])
	copy(r.ReportData[:], body[offReportData:])
}

func marshalReportBody(r *Report) []byte {
	body := make([]byte, ReportBodySize)
	copy(body[offCPUSVN:], r.CPUSVN[:])
	copy(body[offAttributes:], r.Attributes[:])
	copy(body[offMREnclave:], r.MREnclave[:])
	copy(body[offMRSigner:], r.MRSigner[:])
	copy(body[offConfigID:], r.ConfigID[:])
	binary.LittleEndian.PutUint16(body[offProductID:], r.ProductID)
	binary.LittleEndian.PutUint16(body[offSVN:], r.SVN)
	copy(body[offReportData:], r.ReportData[:])
	return body
}

// PlatformKeyID is the SHA-256 of a simulated platform's public key in SPKI DER form.
func PlatformKeyID(pub ed25519.PublicKey) [32]byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		// Marshalling a well-formed Ed25519 key cannot fail.
		panic("quote: marshal ed25519 public key: " + err.Error())
	}
	return sha256.Sum256(der)
}

// NewSim builds a simulated quote over r, signed by a simulated platform key.
func NewSim(r *Report, platform ed25519.PrivateKey) []byte {
	out := make([]byte, HeaderSize, HeaderSize+ReportBodySize+4+simSigDataSize)
	binary.LittleEndian.PutUint16(out[0:2], SimVersion)
	binary.LittleEndian.PutUint16(out[2:4], SimKeyType)
	copy(out[12:28], "countersign-sim\x00") // qe_vendor_id: names the simulator
	out = append(out, marshalReportBody(r)...)
	sig := ed25519.Sign(platform, out)
	out = binary.LittleEndian.AppendUint32(out, simSigDataSize)
	id := PlatformKeyID(platform.Public().(ed25519.PublicKey))
	out = append(out, id[:]...)
	return append(out, sig...)
}

// ErrUntrustedPlatform is returned by VerifySim when the quote names a platform key that is
// not among the trusted ones.
var ErrUntrustedPlatform = errors.New("quote signed by a simulated platform key that is not trusted")

// VerifySim checks a simulated quote's signature against the trusted platform keys, indexed by
// PlatformKeyID.
func (q *Quote) VerifySim(trusted map[[32]byte]ed25519.PublicKey) error {
	if !q.IsSim() {
		return errf("quote.header.version", "%d is not a simulated quote", q.Version)
	}
	var id [32]byte
	copy(id[:], q.SigData[:sha256.Size])
	pub, ok := trusted[id]
	if !ok {
		return fmt.Errorf("%w (key id %x)", ErrUntrustedPlatform, id[:8])
	}
	if !ed25519.Verify(pub, q.Signed, q.SigData[sha256.Size:]) {
		return errf("quote.signature", "Ed25519 signature does not verify under platform key %x", id[:8])
	}
	return nil
}
