package config

import (
	"strings"
	"testing"
)

// TestStrictDecodingNamesFieldAndValue: members are matched exactly (not case-insensitively),
// duplicates in any case spelling are refused, and every bad value is refused with an error
// that names the field path, the value and what is expected. An http:// attestation service
// is refused (the proxy would otherwise run unready forever). YAML reaches the checker as
// JSON with its keys sorted, so of two spellings of one member the one sorting first is the
// one reported (as unknown, or as a duplicate of the other).
func TestStrictDecodingNamesFieldAndValue(t *testing.T) {
	cases := map[string]struct {
		old, new string
		want     []string
	}{
		"case variant of a member":  {"identity: records-api", "Identity: records-api", []string{"Identity", "case-sensitive", `"identity"`}},
		"duplicate in another case": {"identity: records-api", "identity: records-api\nIDENTITY: admin", []string{"IDENTITY", `"identity"`}},
		"nested case variant":       {"caFile: ca.pem}", "caFile: ca.pem, CAFile: other.pem}", []string{"attestationService.CAFile", `"caFile"`}},
		"idleTimeout":               {"identity: records-api", "identity: records-api\nlimits: {idleTimeout: soon}", []string{"limits.idleTimeout", `"soon"`, "duration"}},
		"handshakeTimeout number":   {"identity: records-api", "identity: records-api\nlimits: {handshakeTimeout: 10}", []string{"limits.handshakeTimeout", "10", "duration"}},
		"simPlatformKey number":     {"simPlatformKey: platform.pem", "simPlatformKey: 42", []string{"attester.simPlatformKey", "42", "a string"}},
		"simPlatformKey list":       {"simPlatformKey: platform.pem", "simPlatformKey: [a]", []string{"attester.simPlatformKey", `["a"]`, "a string"}},
		"mrenclave as a number":     {"simPlatformKey: platform.pem", "simPlatformKey: platform.pem, simIdentity: {mrenclave: 1234}", []string{"attester.simIdentity.mrenclave", "1234", "a string"}},
		"mrenclave not hex":         {"simPlatformKey: platform.pem", "simPlatformKey: platform.pem, simIdentity: {mrenclave: xyz}", []string{"attester.simIdentity.mrenclave", `"xyz"`, "64 hex digits"}},
		"mrsigner too short":        {"simPlatformKey: platform.pem", `simPlatformKey: platform.pem, simIdentity: {mrsigner: "00"}`, []string{"attester.simIdentity.mrsigner", `"00"`, "64 hex digits"}},
		"allow not a list":          {"allow: [portal]", "allow: {a: b}", []string{"inbound[0].allow", "an object", "a list of strings"}},
		"http attestation service":  {`url: "https://127.0.0.1:8443"`, `url: "http://127.0.0.1:8443"`, []string{"attestationService.url", "http://127.0.0.1:8443", "https://"}},
		"attestation url with path": {`url: "https://127.0.0.1:8443"`, `url: "https://127.0.0.1:8443/x"`, []string{"attestationService.url"}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			doc := strings.Replace(minimal, c.old, c.new, 1)
			if doc == minimal {
				t.Fatal("test case did not change the document")
			}
			_, err := Parse([]byte(doc), "")
			if err == nil {
				t.Fatalf("accepted:\n%s", doc)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}
