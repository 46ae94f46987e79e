package config

import (
	"encoding/json"
	"net/netip"
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

// TestDestinationIsIPPort: a transparent route's destination decodes as ip:port, and a host
// name is refused with the field and the value.
func TestDestinationIsIPPort(t *testing.T) {
	_, err := Parse([]byte(strings.Replace(mesh, `destination: "10.0.0.7:6379"`, `destination: "redis:6379"`, 1)), "")
	if err == nil || !strings.Contains(err.Error(), "transparent.outbound[0].destination") || !strings.Contains(err.Error(), `"redis:6379"`) {
		t.Errorf("host name destination: %v", err)
	}
}

// TestDefaultPortsMatchListens: the typed default ports are those of the default addresses.
func TestDefaultPortsMatchListens(t *testing.T) {
	for addr, port := range map[string]uint16{DefaultInboundListen: DefaultInboundPort, DefaultOutboundListen: DefaultOutboundPort} {
		if ap := netip.MustParseAddrPort(addr); ap.Port() != port {
			t.Errorf("%s: port %d, want %d", addr, ap.Port(), port)
		}
	}
}
