package cli

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestMainExitCodes: the command table dispatches, and errors map to the documented exit
// codes (0 ok or -h, 2 usage, configuration or I/O).
func TestMainExitCodes(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		args []string
		code int
		err  string // in stderr
	}{
		{"no command", nil, ExitUsage, ""},
		{"help", []string{"help"}, ExitOK, ""},
		{"version", []string{"version"}, ExitOK, ""},
		{"unknown command", []string{"serve"}, ExitUsage, `unknown command "serve"`},
		{"command help", []string{"verify", "-h"}, ExitOK, ""},
		{"bad flag", []string{"run", "--nope"}, ExitUsage, "flag provided but not defined"},
		{"run without config", []string{"run"}, ExitUsage, "proxy run: --config FILE is required"},
		{"run with a missing config", []string{"run", "--config", filepath.Join(dir, "none.yaml")}, ExitUsage, "proxy run: "},
		{"verify without policy", []string{"verify"}, ExitUsage, "proxy verify: --policy FILE is required"},
		{"sim key", []string{"sim-platform-key", "--out", filepath.Join(dir, "p.pem")}, ExitOK, ""},
		{"stray argument", []string{"sim-platform-key", "--out", filepath.Join(dir, "q.pem"), "x"}, ExitUsage, "unexpected arguments: x"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out, errw bytes.Buffer
			if code := Main(context.Background(), c.args, strings.NewReader(""), &out, &errw); code != c.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, c.code, errw.String())
			}
			if !strings.Contains(errw.String(), c.err) {
				t.Errorf("stderr %q does not say %q", errw.String(), c.err)
			}
		})
	}
}

// TestUsageListsEveryCommand: help lists the whole table.
func TestUsageListsEveryCommand(t *testing.T) {
	var out bytes.Buffer
	Main(context.Background(), []string{"help"}, nil, &out, &out)
	for name := range commands {
		if !strings.Contains(out.String(), "  "+name+" ") {
			t.Errorf("help does not list %s:\n%s", name, out.String())
		}
	}
	if len(commands) != 5 {
		t.Errorf("%d commands, want attest, iptables, run, sim-platform-key and verify", len(commands))
	}
}
