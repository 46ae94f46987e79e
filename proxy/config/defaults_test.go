package config

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// TestDefaultsGolden: the configuration after SetDefaults, for a document that sets only
// what is required (every section present), is testdata/defaults.golden.json, so a changed
// default shows in review. Regenerate with go test ./proxy/config/ -run Golden -update.
func TestDefaultsGolden(t *testing.T) {
	c, err := Parse([]byte(mesh), "/etc/countersign")
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	golden := filepath.Join("testdata", "defaults.golden.json")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("defaulted configuration changed; if intended, run with -update and review the diff.\ngot:\n%s\nwant:\n%s", got, want)
	}
}
