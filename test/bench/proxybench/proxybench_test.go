package proxybench

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if ok, err := RunRole(); ok {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestHarnessQuick runs the whole harness in its quick mode: every path and every peer must
// answer every request with the app's payload (and redis-benchmark every command), and every
// target must get a verdict. It asserts no performance target.
func TestHarnessQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	for _, tool := range []string{"nginx", "haproxy", "stunnel4", "redis-server", "redis-benchmark"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: the harness compares against it; install the packages in scripts/deps.d/proxy.txt and bench.txt (./scripts/install-deps.sh)", tool)
		}
	}
	bin := t.TempDir()
	for name, pkg := range map[string]string{"proxy": "./proxy/cmd/proxy", "attestation-service": "./attestation/cmd/attestation-service"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(bin, name), pkg)
		cmd.Dir = "../../.."
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v: %s", name, err, out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var log strings.Builder
	o := Quick(bin)
	o.Log = &log
	rep, err := Run(ctx, o)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	out := rep.String()
	t.Logf("\n%s", out)
	for _, name := range []string{"direct", "go-pair", "nginx-pair", "haproxy-pair", "ours-1hop", "relay", "ours-2hop"} {
		p := rep.Path(name)
		if p == nil {
			t.Errorf("path %s was not measured", name)
			continue
		}
		if len(p.P50) != 1 || len(p.Achieved) != 1 || p.Achieved[0] <= 0 || len(p.SatRPS) != 1 || p.SatRPS[0] <= 0 {
			t.Errorf("path %s: latency %v, achieved rate %v, saturation %v", name, p.P50, p.Achieved, p.SatRPS)
		}
		for _, n := range p.Procs {
			if len(p.RSSKiB[n]) != 1 || p.RSSKiB[n][0] <= 0 || len(p.CPURate[n]) != 1 {
				t.Errorf("path %s, process %s: RSS %v KiB, CPU %v", name, n, p.RSSKiB[n], p.CPURate[n])
			}
		}
	}
	if len(rep.Redis) != 4 {
		t.Errorf("redis results: %d, want SET and GET at -P 1 and -P 16", len(rep.Redis))
	}
	for _, rr := range rep.Redis {
		for _, p := range redisPaths {
			if len(rr.RPS[p]) != 1 || rr.RPS[p][0] <= 0 {
				t.Errorf("redis %s -P %d through %s: %v", rr.Test, rr.Pipeline, p, rr.RPS[p])
			}
		}
	}
	// The attested hop carries a chain entry one way and a countersignature back: more bytes
	// than plain mTLS, whatever their number.
	if b, ok := rep.WireAdded(); !ok || b <= 0 {
		t.Errorf("bytes added by the attested hop: %.0f (measured: %v), want > 0", b, ok)
	}
	for _, w := range rep.Wire {
		if w.NewConns != 0 {
			t.Errorf("%s opened %d connections while its bytes were counted", w.Path, w.NewConns)
		}
	}
	vs := rep.Verdicts()
	if len(vs) < 17 {
		t.Errorf("%d verdicts, want every target of issue #13 judged:\n%s", len(vs), out)
	}
	for _, want := range []string{"load average:", "targets met", "saturation ≥ 0.8× the Go mTLS pair", "RSS at"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

// TestBrokenPathFails: a path that answers anything but the payload fails the run.
func TestBrokenPathFails(t *testing.T) {
	for name, h := range map[string]http.HandlerFunc{
		"status": func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "refused", http.StatusForbidden) },
		"short":  func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(payload[:10]) },
	} {
		t.Run(name, func(t *testing.T) {
			s := httptest.NewServer(h)
			defer s.Close()
			c := newClient(nil, 2)
			if _, _, err := fixedRate(context.Background(), c, s.URL, 200, 100*time.Millisecond, 2); err == nil {
				t.Error("fixedRate accepted a broken path")
			}
			if _, err := closedLoop(context.Background(), c, s.URL, 20, 2); err == nil {
				t.Error("closedLoop accepted a broken path")
			}
		})
	}
	s := httptest.NewServer(appHandler())
	defer s.Close()
	lat, _, err := fixedRate(context.Background(), newClient(nil, 2), s.URL, 200, 200*time.Millisecond, 2)
	if err != nil || len(lat) < 30 {
		t.Fatalf("a working path: %d latencies, %v", len(lat), err)
	}
}
