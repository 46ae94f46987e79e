package images

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"fmt"
	"os/exec"
	"path"
	"sort"
	"strings"
)

// libDirs is where Debian's glibc (amd64, merged /usr) looks for libraries without an
// ld.so.cache: its multiarch and default system directories.
var libDirs = []string{"lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib", "usr/lib"}

// Missing is one shared library an ELF file of the tree needs and the tree lacks.
type Missing struct {
	File   string // the ELF file, /usr/sbin/xtables-nft-multi
	Needed string // the soname or interpreter, libmnl.so.0
}

// CheckLibraries reads every ELF file of the tree (DT_NEEDED, DT_RUNPATH/DT_RPATH and the
// program interpreter, what objdump -p and ldd read) and returns what none of the tree's
// library directories provide, so an image is never shipped with a binary that cannot load.
// extraDirs are searched too (LD_LIBRARY_PATH of the image).
func (t *Tree) CheckLibraries(extraDirs []string) ([]Missing, error) {
	var out []Missing
	for _, p := range t.Paths() {
		e := t.entries[p]
		if e.Type != tar.TypeReg || len(e.Data) < 4 || !bytes.Equal(e.Data[:4], []byte(elf.ELFMAG)) {
			continue
		}
		f, err := elf.NewFile(bytes.NewReader(e.Data))
		if err != nil {
			return nil, fmt.Errorf("/%s: %w", p, err)
		}
		needed, err := f.DynString(elf.DT_NEEDED)
		if err != nil {
			needed = nil // static: no dynamic section
		}
		var runpath []string
		for _, tag := range []elf.DynTag{elf.DT_RUNPATH, elf.DT_RPATH} {
			rp, _ := f.DynString(tag)
			for _, r := range rp {
				for _, d := range strings.Split(r, ":") {
					runpath = append(runpath, strings.ReplaceAll(d, "$ORIGIN", "/"+path.Dir(p)))
				}
			}
		}
		for _, prog := range f.Progs {
			if prog.Type != elf.PT_INTERP {
				continue
			}
			b := make([]byte, prog.Filesz)
			if _, err := prog.ReadAt(b, 0); err != nil {
				return nil, fmt.Errorf("/%s: interpreter: %w", p, err)
			}
			interp := strings.TrimRight(string(b), "\x00")
			if r, ok := t.Resolve(interp); !ok || t.entries[r] == nil || t.entries[r].Type != tar.TypeReg {
				out = append(out, Missing{File: "/" + p, Needed: interp})
			}
		}
		f.Close()
		dirs := append(append(runpath, extraDirs...), libDirs...)
		for _, lib := range needed {
			if !t.findLib(lib, dirs) {
				out = append(out, Missing{File: "/" + p, Needed: lib})
			}
		}
	}
	return out, nil
}

func (t *Tree) findLib(soname string, dirs []string) bool {
	if strings.Contains(soname, "/") {
		r, ok := t.Resolve(soname)
		return ok && t.entries[r] != nil && t.entries[r].Type == tar.TypeReg
	}
	for _, d := range dirs {
		if r, ok := t.Resolve(path.Join(d, soname)); ok && t.entries[r] != nil && t.entries[r].Type == tar.TypeReg {
			return true
		}
	}
	return false
}

// MissingError explains missing libraries and which host packages provide them (dpkg -S),
// so the fix is one line in build/images/debian.txt.
func MissingError(image string, missing []Missing) error {
	var b strings.Builder
	fmt.Fprintf(&b, "image %s: %d shared libraries are needed and not in the image:\n", image, len(missing))
	seen := map[string]bool{}
	var libs []string
	for _, m := range missing {
		fmt.Fprintf(&b, "  %s needs %s\n", m.File, m.Needed)
		if !seen[m.Needed] {
			seen[m.Needed] = true
			libs = append(libs, m.Needed)
		}
	}
	sort.Strings(libs)
	for _, l := range libs {
		pattern := "*/" + path.Base(l)
		out, err := exec.Command("dpkg", "-S", pattern).Output()
		if err != nil {
			fmt.Fprintf(&b, "  %s: no installed package of this machine provides it (dpkg -S %s)\n", l, pattern)
			continue
		}
		pkgs := map[string]bool{}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			name, _, _ := strings.Cut(line, ":")
			for _, n := range strings.Split(name, ",") {
				pkgs[strings.TrimSpace(n)] = true
			}
		}
		names := make([]string, 0, len(pkgs))
		for n := range pkgs {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(&b, "  %s is in the Debian package %s: add it to build/images/debian.txt, then run make pin-debian\n", l, strings.Join(names, " or "))
	}
	return fmt.Errorf("%s", strings.TrimRight(b.String(), "\n"))
}
