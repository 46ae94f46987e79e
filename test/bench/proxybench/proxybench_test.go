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

// TestHarnessTiny runs the whole harness with a few hundred requests per path: every path
// must answer every request with the app's payload. It asserts no performance target.
func TestHarnessTiny(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	for _, tool := range []string{"nginx", "redis-server", "redis-benchmark"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: the harness compares against it; install the packages in scripts/deps.d/proxy.txt (./scripts/install-deps.sh)", tool)
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
	rep, err := Run(ctx, Options{
		BinDir: bin, LatRate: 300, LatFor: time.Second, Rate: 300, RateFor: time.Second, RateConns: 4, Rounds: 1,
		NoWrk: true, SatRequests: 300, WrkConns: 4, RedisN: 500, RedisC: 4, Log: &log,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	var out strings.Builder
	rep.Print(&out)
	t.Logf("\n%s", out.String())
	want := []string{"direct", "direct-tls", "nginx", "go-rp", "ours-public", "ours-1hop", "relay", "ours-2hop"}
	for _, name := range want {
		p := rep.Path(name)
		if p == nil {
			t.Errorf("path %s was not measured", name)
			continue
		}
		if len(p.P50) != 1 || len(p.Achieved) != 1 || p.Achieved[0] <= 0 || len(p.SatRPS) != 1 || p.SatRPS[0] <= 0 {
			t.Errorf("path %s: latency %v, achieved rate %v, saturation %v", name, p.P50, p.Achieved, p.SatRPS)
		}
	}
	if len(rep.Redis) != 2 {
		t.Errorf("redis results: %+v", rep.Redis)
	}
	if len(rep.Verdicts()) == 0 {
		t.Error("no verdicts printed")
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
