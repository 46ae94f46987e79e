package images

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// The Debian package list (groups of packages, one group per kind of base layer) and its lock
// (name=version for every package), both committed in build/images.
const (
	ListFile = "build/images/debian.txt"
	LockFile = "build/images/debian.lock"
)

// PackageList maps a group ("static", "cc", "iptables", "redis") to its packages.
type PackageList map[string][]string

// ReadPackageList parses lines "group: pkg pkg ..." ('#' starts a comment; a group may span
// several lines).
func ReadPackageList(file string) (PackageList, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	out := PackageList{}
	for i, line := range strings.Split(string(b), "\n") {
		line, _, _ = strings.Cut(line, "#")
		if strings.TrimSpace(line) == "" {
			continue
		}
		group, pkgs, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(group) == "" {
			return nil, fmt.Errorf("%s:%d: want \"group: package package ...\"", file, i+1)
		}
		out[strings.TrimSpace(group)] = append(out[strings.TrimSpace(group)], strings.Fields(pkgs)...)
	}
	return out, nil
}

// All returns every package of the list once, sorted.
func (l PackageList) All() []string {
	seen := map[string]bool{}
	var out []string
	for _, pkgs := range l {
		for _, p := range pkgs {
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	sort.Strings(out)
	return out
}

var lockLine = regexp.MustCompile(`^([a-z0-9][a-z0-9+.-]+)=([0-9][A-Za-z0-9.+~:-]*)$`)

// ReadLock parses name=version lines.
func ReadLock(file string) (map[string]string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%w (run make pin-debian to create it)", err)
	}
	out := map[string]string{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := lockLine.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("%s:%d: %q is not name=version", file, i+1, line)
		}
		out[m[1]] = m[2]
	}
	return out, nil
}

// WriteLock writes name=version lines, sorted, with a header.
func WriteLock(file string, lock map[string]string) error {
	var b bytes.Buffer
	b.WriteString("# Debian package versions the images are built from (make pin-debian writes this file from\n")
	b.WriteString("# build/images/debian.txt and the archive's current candidates; make images fails when one is gone).\n")
	names := make([]string, 0, len(lock))
	for n := range lock {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "%s=%s\n", n, lock[n])
	}
	return os.WriteFile(file, b.Bytes(), 0o644)
}

// Candidate returns the version apt would install now (apt-cache policy's Candidate).
func Candidate(pkg string) (string, error) {
	out, err := exec.Command("apt-cache", "policy", pkg).Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache policy %s: %w", pkg, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "Candidate:"); ok {
			v = strings.TrimSpace(v)
			if v == "" || v == "(none)" {
				break
			}
			return v, nil
		}
	}
	return "", fmt.Errorf("apt-cache policy %s: the archive has no candidate version (run apt-get update; is the name right?)", pkg)
}

// PinDebian writes the lock with the current candidate of every listed package.
func PinDebian(root string) (map[string]string, error) {
	list, err := ReadPackageList(filepath.Join(root, ListFile))
	if err != nil {
		return nil, err
	}
	lock := map[string]string{}
	for _, p := range list.All() {
		v, err := Candidate(p)
		if err != nil {
			return nil, err
		}
		lock[p] = v
	}
	return lock, WriteLock(filepath.Join(root, LockFile), lock)
}

// debFile is the file apt-get download writes for name=version (':' of an epoch as %3a).
func debFile(dir, name, version string) (string, bool) {
	matches, _ := filepath.Glob(filepath.Join(dir, name+"_"+strings.ReplaceAll(version, ":", "%3a")+"_*.deb"))
	if len(matches) == 1 {
		return matches[0], true
	}
	return "", false
}

// FetchDeb returns the .deb of name=version from dir, downloading it with apt-get download
// (which checks it against the archive's signed index) when it is not there yet. A version
// the archive no longer has fails with the package, the versions, and the re-pin command.
func FetchDeb(dir, name, version string) (string, error) {
	if f, ok := debFile(dir, name, version); ok {
		return f, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	cmd := exec.Command("apt-get", "download", "-q", name+"="+version)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		now, cerr := Candidate(name)
		if cerr != nil {
			now = "none (" + cerr.Error() + ")"
		}
		return "", fmt.Errorf("debian package %s moved: %s pins %s=%s, which apt-get download cannot fetch (%s); "+
			"the archive's candidate now is %s. Re-pin: apt-get update && make pin-debian, then make images pin-images "+
			"and commit %s with the charts' values",
			name, LockFile, name, version, strings.TrimSpace(lastLine(out)), now, LockFile)
	}
	f, ok := debFile(dir, name, version)
	if !ok {
		return "", fmt.Errorf("apt-get download %s=%s succeeded but wrote no %s_%s_*.deb in %s", name, version, name, version, dir)
	}
	return f, nil
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// docDrop leaves out what an image never reads: manuals, info pages, lintian overrides,
// translations, documentation other than the copyright files (kept for their licences), and
// maintainer shell scripts.
func docDrop(rel string) bool {
	switch {
	case strings.HasPrefix(rel, "usr/share/man"), strings.HasPrefix(rel, "usr/share/info"),
		strings.HasPrefix(rel, "usr/share/lintian"), strings.HasPrefix(rel, "usr/share/locale"),
		strings.HasPrefix(rel, "usr/share/bug"), strings.HasPrefix(rel, "usr/share/bash-completion"),
		strings.HasPrefix(rel, "usr/share/zsh"), strings.HasPrefix(rel, "etc/init.d"),
		strings.HasPrefix(rel, "etc/logrotate.d"), strings.HasPrefix(rel, "lib/systemd"),
		strings.HasPrefix(rel, "usr/lib/systemd"), strings.HasPrefix(rel, "etc/default"),
		strings.HasPrefix(rel, "etc/cron"), strings.HasPrefix(rel, "etc/profile.d"):
		return true
	case strings.HasPrefix(rel, "usr/share/doc/"):
		parts := strings.Split(rel, "/")
		return len(parts) >= 5 && parts[4] != "copyright"
	}
	return false
}

// AddDeb extracts a .deb (dpkg-deb -x) into the tree, plus its control file under
// /var/lib/dpkg/status.d/<name>, where image scanners look for the packages of a distroless-style
// image (there is no dpkg database in it). drop adds paths to leave out.
func (t *Tree) AddDeb(deb, scratch string, drop func(string) bool) error {
	name, err := exec.Command("dpkg-deb", "-f", deb, "Package").Output()
	if err != nil {
		return fmt.Errorf("dpkg-deb -f %s: %w", deb, err)
	}
	pkg := strings.TrimSpace(string(name))
	dir, err := os.MkdirTemp(scratch, pkg+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if out, err := exec.Command("dpkg-deb", "-x", deb, dir).CombinedOutput(); err != nil {
		return fmt.Errorf("dpkg-deb -x %s: %v: %s", deb, err, out)
	}
	if err := t.AddDir(dir, "", pkg, func(rel string) bool { return docDrop(rel) || (drop != nil && drop(rel)) }); err != nil {
		return err
	}
	control, err := exec.Command("dpkg-deb", "-f", deb, "Package", "Version", "Architecture", "Source", "Maintainer", "Homepage").Output()
	if err != nil {
		return fmt.Errorf("dpkg-deb -f %s: %w", deb, err)
	}
	return t.File("var/lib/dpkg/status.d/"+pkg, 0o644, control, pkg)
}
