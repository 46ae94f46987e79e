package demomodel

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The generator reproduces the committed model repository folder bit for bit.
func TestGenerateReproducesCommittedFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("trains the model (seconds; longer under -race)")
	}
	files, _, err := BuildOnce()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join("..", "models")
	var names []string
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		got, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(n)))
		if err != nil {
			t.Errorf("%s: %v (run `make model`)", n, err)
			continue
		}
		if !bytes.Equal(got, files[n]) {
			t.Errorf("%s: committed file (%d bytes) differs from the generator's output (%d bytes); run `make model` and review", n, len(got), len(files[n]))
		}
	}
	// Nothing stale: every committed file in the model folder is generated.
	err = filepath.WalkDir(filepath.Join(root, Name), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if _, ok := files[filepath.ToSlash(rel)]; !ok {
			t.Errorf("%s is committed but not generated", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestPNGRoundTrip(t *testing.T) {
	img := Scan(&rng{s: 1}, 2)
	b, err := EncodePNG(img)
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodePNG(b)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(img, back) {
		t.Fatal("PNG round trip changed the scan")
	}
}

func TestExpNeg(t *testing.T) {
	for _, x := range []float64{0, -1e-9, -0.3, -1, -5.5, -20, -79} {
		got := expNeg(x)
		want := expRef(x)
		if d := (got - want) / want; d > 1e-12 || d < -1e-12 {
			t.Errorf("expNeg(%v) = %v, want %v", x, got, want)
		}
	}
}
