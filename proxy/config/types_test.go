package config

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestMeasurementRoundTrip: a measurement decodes from hex in any case, writes back as
// lowercase hex, and an unset one is omitted.
func TestMeasurementRoundTrip(t *testing.T) {
	var si SimIdentity
	if err := json.Unmarshal([]byte(`{"mrenclave":"`+strings.Repeat("A1", 32)+`"}`), &si); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(si)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"mrenclave":"` + strings.Repeat("a1", 32) + `"}`; string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
}
