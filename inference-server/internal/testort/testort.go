// Package testort finds the ONNX Runtime library and the demo model repository for tests.
package testort

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/countersign/countersign/inference-server/ortsession"
)

// RepoRoot returns the repository root (found from this file's location).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// ModelRepository returns the committed demo model repository.
func ModelRepository() string {
	return filepath.Join(RepoRoot(), "inference-server", "models")
}

// Lib returns the ONNX Runtime library path and initialises the runtime. Without the library the
// test fails and says how to fetch it, except under -short, where it skips.
func Lib(t testing.TB) string {
	t.Helper()
	p := ortsession.LibraryPath(RepoRoot())
	if _, err := os.Stat(p); err != nil {
		if testing.Short() {
			t.Skipf("ONNX Runtime library not found at %s (-short)", p)
		}
		t.Fatalf("ONNX Runtime library not found at %s: run `make onnxruntime` (or set ONNXRUNTIME_LIB)", p)
	}
	if err := ortsession.Init(p); err != nil {
		t.Fatal(err)
	}
	return p
}
