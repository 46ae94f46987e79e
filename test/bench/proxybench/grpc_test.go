package proxybench

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHarnessGRPCQuick runs the gRPC part alone (-only grpc) in quick mode: every path must
// answer every call with the payload and every target of issue 16 must get a verdict. It
// asserts no performance target.
func TestHarnessGRPCQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bin := t.TempDir()
	for name, pkg := range map[string]string{"proxy": "./proxy/cmd/proxy", "attestation-service": "./attestation/cmd/attestation-service"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(bin, name), pkg)
		cmd.Dir = "../../.."
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v: %s", name, err, out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var log strings.Builder
	o := Quick(bin)
	o.Only = map[string]bool{"grpc": true}
	o.Log = &log
	rep, err := Run(ctx, o)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Logf("\n%s", rep.String())
	if rep.GRPC == nil {
		t.Fatal("no gRPC part in the report")
	}
	for _, name := range []string{"grpc-direct", "grpc-go-pair", "grpc-ours"} {
		p := rep.GRPC.Path(name)
		if p == nil || len(p.P50) != 1 || len(p.SatRPS) != 1 || p.SatRPS[0] <= 0 {
			t.Errorf("path %s: %+v", name, p)
		}
	}
	vs := rep.GRPC.Verdicts(rep.Options)
	if len(vs) != 3 {
		t.Errorf("%d gRPC verdicts, want 3", len(vs))
	}
	for _, v := range vs {
		if v.Value == "" || strings.HasPrefix(v.Value, "0.00") {
			t.Errorf("verdict %q: no figure (%q)", v.Target, v.Value)
		}
	}
}
