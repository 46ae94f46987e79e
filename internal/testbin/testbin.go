// Package testbin builds the repository's binaries for tests that start the real processes:
// each main package once per test process (sync.Once per package), into one temporary
// directory, however many tests ask for it.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

type build struct {
	once sync.Once
	bin  string
	err  error
}

var (
	builds sync.Map // main package -> *build
	dirMu  sync.Mutex
	dir    string
)

// Build returns the binary of the main package pkg ("./proxy/cmd/proxy", relative to the
// repository root), building it on the first call; a failed build fails t.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	bin, err := Path(pkg)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// Path is Build for callers without a testing.TB (a TestMain).
func Path(pkg string) (string, error) {
	v, _ := builds.LoadOrStore(pkg, &build{})
	b := v.(*build)
	b.once.Do(func() { b.bin, b.err = goBuild(pkg) })
	return b.bin, b.err
}

func goBuild(pkg string) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	dirMu.Lock()
	if dir == "" {
		dir, err = os.MkdirTemp("", "countersign-testbin-")
	}
	d := dir
	dirMu.Unlock()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(d, path.Base(pkg))
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin, nil
}

// repoRoot is the directory of the module's go.mod, as the go command finds it.
func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if gomod := strings.TrimSpace(string(out)); err == nil && gomod != "" && gomod != os.DevNull {
		return filepath.Dir(gomod), nil
	}
	return "", fmt.Errorf("testbin: no go.mod above the working directory (%v)", err)
}

// Link builds the main packages of bins (name -> package) and links each into dir by its name.
func Link(dir string, bins map[string]string) error {
	for name, pkg := range bins {
		bin, err := Path(pkg)
		if err == nil {
			err = os.Symlink(bin, filepath.Join(dir, name))
		}
		if err != nil {
			return fmt.Errorf("build %s: %w", name, err)
		}
	}
	return nil
}
