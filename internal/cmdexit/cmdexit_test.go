package cmdexit

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"testing"
)

func TestCode(t *testing.T) {
	base := errors.New("boom")
	cases := []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, OK},
		{"help", flag.ErrHelp, OK},
		{"wrapped help", fmt.Errorf("x: %w", flag.ErrHelp), OK},
		{"plain error", base, Failure},
		{"usage", UsageError(base), Usage},
		{"usagef", Usagef("--x: %v", base), Usage},
		{"wrapped usage", fmt.Errorf("config: %w", UsageError(base)), Usage},
		{"explicit code", WithCode(1, base), 1},
		{"explicit code over usage", WithCode(1, UsageError(base)), 1},
		{"explicit 3", WithCode(3, base), 3},
	}
	for _, c := range cases {
		if got := Code(c.err); got != c.want {
			t.Errorf("%s: Code = %d, want %d", c.name, got, c.want)
		}
	}
	if UsageError(nil) != nil || WithCode(2, nil) != nil {
		t.Error("nil must stay nil")
	}
	if !HasCode(UsageError(base)) || !HasCode(WithCode(1, base)) || HasCode(base) {
		t.Error("HasCode")
	}
}

func TestReport(t *testing.T) {
	var b bytes.Buffer
	if code := Report("tool", nil, &b); code != OK || b.Len() != 0 {
		t.Errorf("nil: %d %q", code, b.String())
	}
	if code := Report("tool", flag.ErrHelp, &b); code != OK || b.Len() != 0 {
		t.Errorf("help: %d %q", code, b.String())
	}
	if code := Report("tool", Usagef("--port: %q", "x"), &b); code != Usage || b.String() != "tool: --port: \"x\"\n" {
		t.Errorf("usage: %d %q", code, b.String())
	}
}
