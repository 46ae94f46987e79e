// Package images builds the container images the charts reference, without a Docker engine:
// Go binaries built with -trimpath, Debian packages taken apart (apt-get download, dpkg-deb -x),
// assembled into reproducible tar layers and written as an OCI image layout with
// go-containerregistry; then pushed to a registry and pinned into the charts (docs/images.md).
package images

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Epoch is every file's mtime and the images' creation time: a constant, so that a build
// depends only on its inputs (SOURCE_DATE_EPOCH's role; 2026-01-01T00:00:00Z).
var Epoch = time.Unix(1767225600, 0).UTC()

// NonRoot is the uid and gid images run as (distroless's "nonroot").
const NonRoot = 65532

// Entry is one file system object of a layer.
type Entry struct {
	Type     byte   // tar.TypeReg, tar.TypeDir or tar.TypeSymlink
	Mode     int64  // permission bits (setuid and setgid are dropped)
	Data     []byte // TypeReg
	Link     string // TypeSymlink target, as written
	UID, GID int    // 0 unless set (home directories)
	Origin   string // the package or source it came from, for conflict messages
}

// Tree is a file system being assembled: slash paths without a leading slash ("usr/bin/x").
type Tree struct {
	entries map[string]*Entry
}

// NewTree returns an empty tree.
func NewTree() *Tree { return &Tree{entries: map[string]*Entry{}} }

// clean returns p relative to the root, or an error when it escapes it.
func clean(p string) (string, error) {
	c := path.Clean("/" + p)
	if c == "/" {
		return "", fmt.Errorf("path %q is the root", p)
	}
	return c[1:], nil
}

// usrMerge maps /bin, /sbin and /lib* onto /usr, as Debian's merged-/usr layout does: the base
// layer holds the compatibility symlinks, so packages that still ship files under /lib land
// where the symlinks point.
func usrMerge(p string) string {
	first, rest, _ := strings.Cut(p, "/")
	switch first {
	case "bin", "sbin", "lib", "lib32", "lib64", "libx32":
		if rest == "" {
			return p // the symlink itself
		}
		return "usr/" + first + "/" + rest
	}
	return p
}

// UsrMergeLinks are the merged-/usr compatibility symlinks.
var UsrMergeLinks = map[string]string{"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}

func (t *Tree) put(p string, e *Entry) error {
	p, err := clean(p)
	if err != nil {
		return err
	}
	if old, ok := t.entries[p]; ok {
		switch {
		case old.Type == tar.TypeDir && e.Type == tar.TypeDir:
			return nil // directories merge; the first one's mode and owner stay
		case old.Type == e.Type && old.Link == e.Link && bytes.Equal(old.Data, e.Data) && old.Mode == e.Mode:
			return nil // the same file from two packages
		default:
			return fmt.Errorf("/%s: %s and %s both provide it, differently", p, old.Origin, e.Origin)
		}
	}
	t.entries[p] = e
	return nil
}

// File adds a regular file.
func (t *Tree) File(p string, mode int64, data []byte, origin string) error {
	return t.put(p, &Entry{Type: tar.TypeReg, Mode: mode &^ 0o6000, Data: data, Origin: origin})
}

// Dir adds a directory owned by uid:gid.
func (t *Tree) Dir(p string, mode int64, uid, gid int, origin string) error {
	return t.put(p, &Entry{
		Type:   tar.TypeDir,
		Mode:   mode &^ 0o6000,
		UID:    uid,
		GID:    gid,
		Origin: origin,
	})
}

// Symlink adds a symbolic link.
func (t *Tree) Symlink(p, target, origin string) error {
	return t.put(p, &Entry{Type: tar.TypeSymlink, Mode: 0o777, Link: target, Origin: origin})
}

// AddDir copies a directory of the host (e.g. dpkg-deb -x output) into the tree under prefix,
// with merged /usr; drop returns true for paths (relative, slash) to leave out.
func (t *Tree) AddDir(src, prefix, origin string, drop func(string) bool) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if drop != nil && drop(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		dst := usrMerge(path.Join(prefix, rel))
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if _, isLink := UsrMergeLinks[dst]; isLink {
				return nil
			}
			return t.Dir(dst, int64(info.Mode().Perm()), 0, 0, origin)
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return t.Symlink(dst, target, origin)
		case info.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return t.File(dst, int64(info.Mode().Perm()), data, origin)
		default:
			return fmt.Errorf("%s: %v files are not supported in images", p, info.Mode().Type())
		}
	})
}

// Paths returns every path, sorted.
func (t *Tree) Paths() []string {
	out := make([]string, 0, len(t.entries))
	for p := range t.entries {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// Resolve follows symlinks (within the tree) in every component of p and returns the final
// path, or ok=false when a component is missing or the links loop.
func (t *Tree) Resolve(p string) (string, bool) {
	parts := strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/")
	cur := ""
	for hops := 0; len(parts) > 0; {
		next := parts[0]
		parts = parts[1:]
		switch next {
		case "", ".":
			continue
		case "..":
			cur = path.Dir(cur)
			if cur == "." {
				cur = ""
			}
			continue
		}
		cand := path.Join(cur, next)
		e, ok := t.entries[cand]
		if !ok {
			if _, link := UsrMergeLinks[cand]; !link {
				return "", false
			}
			e = &Entry{Type: tar.TypeSymlink, Link: UsrMergeLinks[cand]}
		}
		if e.Type != tar.TypeSymlink {
			cur = cand
			continue
		}
		if hops++; hops > 40 {
			return "", false
		}
		target := e.Link
		if strings.HasPrefix(target, "/") {
			cur = ""
		}
		parts = append(strings.Split(strings.Trim(target, "/"), "/"), parts...)
	}
	return cur, true
}

// Layer writes the tree as a tar stream: entries sorted by path, every parent directory
// present, fixed mtimes, numeric owners only. The same tree always gives the same bytes.
func (t *Tree) Layer(w io.Writer) error {
	// Parents first: implied directories are 0755 root.
	for _, p := range t.Paths() {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if _, ok := t.entries[d]; !ok {
				t.entries[d] = &Entry{Type: tar.TypeDir, Mode: 0o755, Origin: "implied"}
			}
		}
	}
	tw := tar.NewWriter(w)
	for _, p := range t.Paths() {
		e := t.entries[p]
		h := &tar.Header{
			Typeflag: e.Type,
			Name:     p,
			Mode:     e.Mode,
			Uid:      e.UID,
			Gid:      e.GID,
			ModTime:  Epoch,
			Format:   tar.FormatPAX,
		}
		switch e.Type {
		case tar.TypeDir:
			h.Name += "/"
		case tar.TypeSymlink:
			h.Linkname = e.Link
		case tar.TypeReg:
			h.Size = int64(len(e.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if e.Type == tar.TypeReg {
			if _, err := tw.Write(e.Data); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}
