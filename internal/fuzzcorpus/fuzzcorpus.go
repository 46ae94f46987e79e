// Package fuzzcorpus writes seed corpus files in the format `go test` replays from
// testdata/fuzz/<FuzzName>/, so seeds are committed, reviewable files rather than only f.Add
// calls. Fuzz targets call Write when run with -update-corpus.
package fuzzcorpus

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Update is set by the -update-corpus test flag.
var Update = flag.Bool("update-corpus", false, "rewrite the committed fuzz seed corpus under testdata/fuzz")

// Write writes one corpus entry per seed for the fuzz target name, under testdata/fuzz/name.
// Each seed is one argument list; supported types are []byte and string.
func Write(name string, seeds ...[]any) error {
	dir := filepath.Join("testdata", "fuzz", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, args := range seeds {
		var b strings.Builder
		b.WriteString("go test fuzz v1\n")
		for _, a := range args {
			switch v := a.(type) {
			case []byte:
				fmt.Fprintf(&b, "[]byte(%q)\n", v)
			case string:
				fmt.Fprintf(&b, "string(%q)\n", v)
			default:
				return fmt.Errorf("fuzzcorpus: unsupported seed type %T", a)
			}
		}
		sum := sha256.Sum256([]byte(b.String()))
		file := filepath.Join(dir, "seed-"+hex.EncodeToString(sum[:8]))
		if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	return nil
}
