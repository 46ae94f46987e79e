package server_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/injector/inject"
	"github.com/countersign/countersign/proxy/server"
)

// section returns the part of a markdown page from the heading that starts with title to
// the next heading of the same level.
func section(t *testing.T, page, title string) string {
	t.Helper()
	i := strings.Index(page, "\n"+title)
	if i < 0 {
		t.Fatalf("no section %q", title)
	}
	rest := page[i+1:]
	level := strings.Index(title, " ")
	if j := strings.Index(rest[1:], "\n"+title[:level]+" "); j >= 0 {
		return rest[:j+1]
	}
	return rest
}

// tableCodes are the backticked names in the first column of a markdown table's rows.
func tableCodes(sec string) []string {
	var out []string
	code := regexp.MustCompile("`([a-z0-9_]+)`")
	for _, line := range strings.Split(sec, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		first := strings.SplitN(line[1:], "|", 2)[0]
		for _, m := range code.FindAllStringSubmatch(first, -1) {
			out = append(out, m[1])
		}
	}
	return out
}

// TestReasonCodesDocumented: rejections are an operator-facing protocol. Every reason code a
// package declares is in that package's Codes list (so nothing emits an unlisted code), every
// listed code is in docs/protocol.md's reason-code table, every code in that table exists, and
// the same holds for the injector's reasons and docs/injection.md. A proxy's rejection metric
// starts every code at zero on every listener.
func TestReasonCodesDocumented(t *testing.T) {
	listed := map[string]bool{}
	for _, c := range server.Codes() {
		listed[string(c)] = true
	}
	// Every declared code is listed: scan the sources for code constants.
	decl := regexp.MustCompile(`(?:attestation\.Code|\bCode) = "([a-z0-9_]+)"`)
	for _, root := range []string{"../../attestation", "../../proxy"} {
		err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range decl.FindAllStringSubmatch(string(b), -1) {
				// The lean build (-tags noxds) links no proxy/mesh: its codes are the xDS
				// build's, listed there.
				if !server.HasXDS && strings.Contains(filepath.ToSlash(path), "proxy/mesh/") {
					listed[m[1]] = true
					continue
				}
				if !listed[m[1]] {
					t.Errorf("%s declares reason code %q, which no package's Codes lists", path, m[1])
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	page, err := os.ReadFile("../../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	table := map[string]bool{}
	for _, c := range tableCodes(section(t, string(page), "## 6. Reason codes")) {
		table[c] = true
		if !listed[c] {
			t.Errorf("docs/protocol.md section 6 documents %q, which no package emits", c)
		}
	}
	for c := range listed {
		if !table[c] {
			t.Errorf("reason code %q is not in docs/protocol.md section 6's table", c)
		}
	}
	// The injector's reasons and docs/injection.md.
	ipage, err := os.ReadFile("../../docs/injection.md")
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]bool{}
	for _, r := range inject.Reasons {
		reasons[string(r)] = true
	}
	documented := map[string]bool{}
	for _, r := range tableCodes(section(t, string(ipage), "## Reasons")) {
		documented[r] = true
		if !reasons[r] {
			t.Errorf("docs/injection.md documents reason %q, which inject.Reasons does not list", r)
		}
	}
	for r := range reasons {
		if !documented[r] {
			t.Errorf("injector reason %q is not in docs/injection.md's table", r)
		}
	}

	// Pre-registered at zero.
	e := newEnv(t, time.Hour)
	_, back, _ := pair(t, e)
	resp, err := http.Get("http://" + back.Addr("admin") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, c := range server.Codes() {
		if want := `countersign_rejections_total{listener="api",reason="` + string(c) + `"} 0`; !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
