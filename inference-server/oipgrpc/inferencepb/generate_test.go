package inferencepb_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// protocLine is the header line naming the protoc version; a developer's protoc may differ from
// the Debian one CI installs without changing a byte of the code, so it is not compared.
var protocLine = regexp.MustCompile(`(?m)^// \tprotoc +v.*$`)

// TestGeneratedCodeIsFresh regenerates the code with scripts/gen-proto.sh (the script `make
// proto` runs) into a temporary folder and compares it with the committed files. protoc is one
// of the packages `make deps` installs, so its absence fails the test; only -short skips it.
func TestGeneratedCodeIsFresh(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		if testing.Short() {
			t.Skip("protoc not installed (make deps installs it); skipped in -short mode")
		}
		t.Fatal("protoc not installed: run make deps (Debian protobuf-compiler) so that the generated code can be checked")
	}
	out := t.TempDir()
	cmd := exec.Command("../../../scripts/gen-proto.sh", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gen-proto.sh: %v\n%s", err, b)
	}
	for _, name := range []string{"grpc_predict_v2.pb.go", "grpc_predict_v2_grpc.pb.go"} {
		fresh, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		committed, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		fresh, committed = protocLine.ReplaceAll(fresh, nil), protocLine.ReplaceAll(committed, nil)
		if !bytes.Equal(fresh, committed) {
			t.Errorf("%s is stale: run make proto and commit the result", name)
		}
	}
}
