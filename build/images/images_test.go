package images

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestReproducibleAndPinned builds every image twice from this checkout (two builders, two
// scratch folders; the Go build cache and the downloaded .debs are shared, as they are between
// two `make images` runs) and checks that both builds give the same digests, that the charts
// pin exactly those digests, and that every image runs as the nonroot user with no shell.
// It fails when a change to the code reaches an image and `make images pin-images` was not run.
func TestReproducibleAndPinned(t *testing.T) {
	root, err := FindRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	cache := DefaultCache(root)
	build := func() map[string]Result {
		b, err := NewBuilder(root, cache, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := b.Build(nil)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]Result{}
		for _, r := range rs {
			out[r.Name] = r
		}
		return out
	}
	first, second := build(), build()
	digest := func(r Result) v1.Hash {
		d, err := r.Image.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for name, r := range first {
		d1, d2 := digest(r), digest(second[name])
		if d1 != d2 {
			t.Errorf("image %s: two builds of one checkout differ: %s and %s", name, d1, d2)
		}
	}
	pinned, err := ChartDigests(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range Pins {
		r, ok := first[p.Image]
		if !ok {
			t.Errorf("%s pins %s, which make images does not build", p.Chart, p.Image)
			continue
		}
		if got := digest(r).String(); pinned[p.Image] != got {
			t.Errorf("%s/values.yaml %s.digest = %q, a fresh build gives %s: run `make images pin-images` and commit the charts",
				p.Chart, strings.Join(p.Path, "."), pinned[p.Image], got)
		}
	}
	for name, r := range first {
		cf, err := r.Image.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Config.User != fmt.Sprintf("%d:%d", NonRoot, NonRoot) {
			t.Errorf("image %s runs as %q, want the nonroot user %d:%d", name, cf.Config.User, NonRoot, NonRoot)
		}
		if err := noShell(r.Image); err != nil {
			t.Errorf("image %s: %v", name, err)
		}
	}
}

// noShell walks the image's layers (not the builder's own check) for a shell or a busybox.
func noShell(img v1.Image) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	shells := map[string]bool{
		"bin/sh":          true,
		"bin/bash":        true,
		"bin/dash":        true,
		"bin/busybox":     true,
		"usr/bin/sh":      true,
		"usr/bin/bash":    true,
		"usr/bin/dash":    true,
		"usr/bin/busybox": true,
	}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			return err
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				rc.Close()
				return err
			}
			if shells[strings.TrimPrefix(filepath.Clean("/"+h.Name), "/")] {
				rc.Close()
				return fmt.Errorf("holds a shell: /%s", strings.TrimPrefix(h.Name, "./"))
			}
		}
		rc.Close()
	}
	return nil
}
