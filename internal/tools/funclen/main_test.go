package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLongFunctionNeedsAllowlist: a function over the limit fails unless the allowlist holds
// it at its length or more; one that grew past its entry fails.
func TestLongFunctionNeedsAllowlist(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "a.go")
	body := "package a\n\nfunc (s *T) long() {\n" + strings.Repeat("\t_ = 1\n", 10) + "}\n\nfunc short() {}\n"
	if err := os.WriteFile(src, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	allow := filepath.Join(dir, "allow.txt")
	for _, c := range []struct {
		allow   string
		wantErr string
	}{
		{"", "T.long is 12 lines, more than 5"},
		{src + " T.long 12\n", ""},
		{src + " T.long 11\n", "has grown to 12 lines"},
	} {
		if err := os.WriteFile(allow, []byte(c.allow), 0o600); err != nil {
			t.Fatal(err)
		}
		err := run([]string{"-max", "5", "-allow", allow, src}, io.Discard)
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("allowlist %q: %v", c.allow, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("allowlist %q: error %v, want %q", c.allow, err, c.wantErr)
		}
	}
}
