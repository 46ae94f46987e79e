package config

import (
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/countersign/countersign/attestation/attester"
)

// Measurement is an MRENCLAVE or MRSIGNER, written as 64 hex digits. Decoding checks it, so
// nothing downstream parses it again; the zero value is "not set" and is omitted (omitzero).
type Measurement [32]byte

// IsZero reports whether the measurement is unset.
func (m Measurement) IsZero() bool { return m == Measurement{} }

// ParseMeasurement parses 64 hex digits.
func ParseMeasurement(s string) (Measurement, error) {
	v, err := attester.ParseMeasurement(s)
	return Measurement(v), err
}

// UnmarshalJSON accepts a string of 64 hex digits.
func (m *Measurement) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("expected a string of 64 hex digits, got %s", b)
	}
	v, err := ParseMeasurement(s)
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// MarshalJSON writes the hex digits.
func (m Measurement) MarshalJSON() ([]byte, error) { return json.Marshal(m.String()) }

// String is the hex digits.
func (m Measurement) String() string { return hex.EncodeToString(m[:]) }
