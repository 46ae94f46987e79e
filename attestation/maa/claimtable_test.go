package maa

import (
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestClaimTypesTable: the "Claim types" table of docs/protocol.md section 4 lists exactly the
// claims ParseClaims types, and each is refused with a ClaimTypeError for a value of another
// type and accepted for one of its type. If this fails, change the page or the parser, not
// the test.
func TestClaimTypesTable(t *testing.T) {
	b, err := os.ReadFile("../../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	start := strings.Index(page, "**Claim types.**")
	if start < 0 {
		t.Fatal("docs/protocol.md has no **Claim types.** table")
	}
	rest := page[start:]
	rest = rest[strings.Index(rest, "| claim |"):]
	if end := strings.Index(rest, "\n\n"); end > 0 {
		rest = rest[:end]
	}
	claimRe := regexp.MustCompile("`([a-z0-9-]+)`")
	// The JSON type column, by its first words: a value of the type and values of other types.
	kinds := []struct {
		prefix string
		good   []string
		bad    []string
	}{
		{"string", []string{`"x"`}, []string{`1`, `true`, `{}`, `null`}},
		{"number", []string{`1700000000`, `1700000000.5`}, []string{`"1700000000"`, `true`}},
		{"non-negative integer", []string{`2`}, []string{`-1`, `"2"`, `2.5`}},
		{"boolean", []string{`true`, `false`}, []string{`"true"`, `1`}},
		{"object;", []string{`{"quotehash":"ab"}`}, []string{`"x"`, `{"quotehash":1}`}},
		{"object", []string{`{}`}, []string{`"x"`, `[]`, `1`}},
		{"any", []string{`1`, `"x"`, `{}`}, nil},
	}
	listed := map[string]bool{}
	for _, row := range strings.Split(rest, "\n")[2:] {
		cells := strings.Split(row, "|")
		if len(cells) < 4 {
			t.Fatalf("table row %q", row)
		}
		typ := strings.TrimSpace(cells[2])
		var kind = -1
		for i, k := range kinds {
			if strings.HasPrefix(typ, k.prefix) {
				kind = i
				break
			}
		}
		if kind < 0 {
			t.Fatalf("row %q: type %q is none this test knows", row, typ)
		}
		k := kinds[kind]
		for _, m := range claimRe.FindAllStringSubmatch(cells[1], -1) {
			name := m[1]
			listed[name] = true
			for _, v := range k.good {
				if _, err := ParseClaims([]byte(`{"` + name + `":` + v + `}`)); err != nil {
					t.Errorf("%s = %s (%s, as the page says): %v", name, v, typ, err)
				}
			}
			for _, v := range k.bad {
				var te *ClaimTypeError
				if _, err := ParseClaims([]byte(`{"` + name + `":` + v + `}`)); !errors.As(err, &te) {
					t.Errorf("%s = %s (the page says %s): %v, want a claim type error", name, v, typ, err)
				}
			}
		}
	}
	for name := range claimSetters {
		if !listed[name] {
			t.Errorf("claim %s is typed by ParseClaims but not in the page's table", name)
		}
	}
	for name := range listed {
		if _, ok := claimSetters[name]; !ok {
			t.Errorf("claim %s is in the page's table but ParseClaims does not type it", name)
		}
	}
}
