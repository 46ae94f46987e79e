package policy

import (
	"strings"
	"testing"
)

// TestPolicyMembersExact: `allowDebug: false` followed by `allowdebug: true` once decoded as
// true (case-insensitive member matching, the later key winning) and let a debuggable token
// through. Member names are now exact and each appears once in any case spelling; bad values
// name the field, the value and what is expected.
func TestPolicyMembersExact(t *testing.T) {
	id := func(body string) string {
		return "issuers: [{url: 'https://a.example'}]\nidentities:\n  svc:\n    mrenclave: [" + hexA + "]\n" + body
	}
	cases := map[string]struct {
		doc  string
		want []string
	}{
		"allowDebug twice, other case": {id("    allowDebug: false\n    allowdebug: true\n"), []string{"identities.svc.allowdebug", "duplicate", `"allowDebug"`}},
		"allowdebug alone":             {id("    allowdebug: true\n"), []string{"identities.svc.allowdebug", "case-sensitive", `"allowDebug"`}},
		"MRENCLAVE":                    {"issuers: [{url: 'https://a.example'}]\nidentities:\n  svc:\n    MRENCLAVE: [" + hexA + "]\n", []string{"identities.svc.MRENCLAVE", "case-sensitive"}},
		"top-level case":               {strings.Replace(id(""), "issuers:", "Issuers:", 1), []string{"Issuers", "case-sensitive"}},
		"identity twice in case":       {id("  SVC: {mrenclave: [" + hexA + "]}\n"), []string{"identities.svc", "duplicate", `"SVC"`}},
		"mrenclave as a number":        {"issuers: [{url: 'https://a.example'}]\nidentities:\n  svc:\n    mrenclave: 1234\n", []string{"identities.svc.mrenclave", "1234", "list of strings"}},
		"maxTokenAge":                  {id("    maxTokenAge: forever\n"), []string{"identities.svc.maxTokenAge", "forever", "duration"}},
		"productId negative":           {"issuers: [{url: 'https://a.example'}]\nidentities:\n  svc:\n    mrsigner: [" + hexA + "]\n    productId: -1\n    minSvn: 0\n", []string{"identities.svc.productId", "-1", "non-negative integer"}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(c.doc), "")
			if err == nil {
				t.Fatalf("accepted:\n%s", c.doc)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}
