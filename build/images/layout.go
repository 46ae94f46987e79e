package images

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// RefName is the OCI layout annotation naming each image.
const RefName = "org.opencontainers.image.ref.name"

// Listed is one line of images.tsv.
type Listed struct {
	Name   string
	Digest v1.Hash
	Size   int64
}

// WriteLayout writes the images as an OCI image layout at dir (replacing it) and the list
// (name, digest, size; tab-separated) at tsv.
func WriteLayout(dir, tsv string, rs []Result) ([]Listed, error) {
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	p, err := layout.Write(dir, idx)
	if err != nil {
		return nil, err
	}
	var out []Listed
	for _, r := range rs {
		if err := p.AppendImage(r.Image, layout.WithAnnotations(map[string]string{RefName: r.Name})); err != nil {
			return nil, fmt.Errorf("%s: %w", r.Name, err)
		}
		d, err := r.Image.Digest()
		if err != nil {
			return nil, err
		}
		out = append(out, Listed{Name: r.Name, Digest: d, Size: r.Size})
	}
	var b strings.Builder
	b.WriteString("# name\tdigest\tsize (bytes: manifest, config and compressed layers)\n")
	for _, l := range out {
		fmt.Fprintf(&b, "%s\t%s\t%d\n", l.Name, l.Digest, l.Size)
	}
	if err := os.MkdirAll(filepath.Dir(tsv), 0o755); err != nil {
		return nil, err
	}
	return out, os.WriteFile(tsv, []byte(b.String()), 0o644)
}

// ReadList parses images.tsv.
func ReadList(tsv string) ([]Listed, error) {
	f, err := os.Open(tsv)
	if err != nil {
		return nil, fmt.Errorf("%w (run make images)", err)
	}
	defer f.Close()
	var out []Listed
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fs := strings.Split(line, "\t")
		if len(fs) != 3 {
			return nil, fmt.Errorf("%s:%d: want name, digest, size", tsv, n)
		}
		d, err := v1.NewHash(fs[1])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", tsv, n, err)
		}
		size, err := strconv.ParseInt(fs[2], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", tsv, n, err)
		}
		out = append(out, Listed{Name: fs[0], Digest: d, Size: size})
	}
	return out, sc.Err()
}

// LayoutImages returns the layout's images by their ref name.
func LayoutImages(dir string) (map[string]v1.Image, []string, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (run make images)", err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, nil, err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, nil, err
	}
	out := map[string]v1.Image{}
	var names []string
	for _, d := range m.Manifests {
		n := d.Annotations[RefName]
		if n == "" {
			return nil, nil, fmt.Errorf("%s: manifest %s has no %s annotation", dir, d.Digest, RefName)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, nil, err
		}
		out[n] = img
		names = append(names, n)
	}
	return out, names, nil
}

// Push writes every image of the layout to <registry>/<name> (registry is host[:port][/path],
// e.g. 127.0.0.1:5000/countersign): the manifest by its digest, then the tag. Loopback and
// private-address registries are spoken to over plain HTTP (go-containerregistry's rule, as
// containerd's); insecure forces it for others.
func Push(ctx context.Context, dir, registry, tag string, insecure bool, log io.Writer) ([]string, error) {
	imgs, names, err := LayoutImages(dir)
	if err != nil {
		return nil, err
	}
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	var refs []string
	for _, n := range names {
		img := imgs[n]
		d, err := img.Digest()
		if err != nil {
			return nil, err
		}
		repo := strings.TrimSuffix(registry, "/") + "/" + n
		byDigest, err := name.NewDigest(repo+"@"+d.String(), opts...)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", repo, err)
		}
		if err := remote.Write(byDigest, img, remote.WithContext(ctx)); err != nil {
			return nil, fmt.Errorf("push %s: %w", byDigest, err)
		}
		tagged, err := name.NewTag(repo+":"+tag, opts...)
		if err != nil {
			return nil, err
		}
		if err := remote.Tag(tagged, img, remote.WithContext(ctx)); err != nil {
			return nil, fmt.Errorf("tag %s: %w", tagged, err)
		}
		fmt.Fprintf(log, "  pushed %s (tag %s)\n", byDigest, tag)
		refs = append(refs, byDigest.String())
	}
	return refs, nil
}
