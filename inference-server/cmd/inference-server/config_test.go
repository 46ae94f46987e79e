package main

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/countersign/countersign/inference-server/internal/testort"
)

func TestConfigPrecedence(t *testing.T) {
	repo := t.TempDir()
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		listen  string
		lib     string
		threads int
	}{
		{"defaults", []string{"--model-repository", repo}, nil, "127.0.0.1:8000", defaultConfig().ORTLib, 1},
		{"env over default", []string{"--model-repository", repo}, map[string]string{"ONNXRUNTIME_LIB": "/env/lib.so", "INFERENCE_SERVER_LISTEN": "127.0.0.1:9000"}, "127.0.0.1:9000", "/env/lib.so", 1},
		{"flag over env", []string{"--model-repository", repo, "--onnxruntime-lib", "/flag/lib.so", "--listen", ":7000", "--intra-op-threads", "2"},
			map[string]string{"ONNXRUNTIME_LIB": "/env/lib.so", "INFERENCE_SERVER_LISTEN": "127.0.0.1:9000"}, ":7000", "/flag/lib.so", 2},
		{"repository from env", nil, map[string]string{"INFERENCE_SERVER_MODEL_REPOSITORY": repo}, "127.0.0.1:8000", defaultConfig().ORTLib, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := parseConfig(c.args, env(c.env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Listen != c.listen || cfg.ORTLib != c.lib || cfg.IntraOpThreads != c.threads || cfg.ModelRepository != repo {
				t.Errorf("got listen %q lib %q threads %d repo %q", cfg.Listen, cfg.ORTLib, cfg.IntraOpThreads, cfg.ModelRepository)
			}
		})
	}
}

func TestConfigValidateNamesFlag(t *testing.T) {
	repo := t.TempDir()
	cases := map[string][]string{
		"--listen":                      {"--listen", "nope"},
		"--model-repository":            {"--model-repository", filepath.Join(repo, "missing")},
		"--intra-op-threads":            {"--intra-op-threads", "-1"},
		"--max-body-bytes":              {"--max-body-bytes", "10"},
		"--batch-max-size":              {"--batch-max-size", "-3"},
		"--batch-max-delay":             {"--batch-max-delay", "5s"},
		"--batch-queue-size":            {"--batch-queue-size", "0"},
		"--read-header-timeout":         {"--read-header-timeout", "0s"},
		"--log-level":                   {"--log-level", "loud"},
		"--grpc-listen":                 {"--grpc-listen", "127.0.0.1"},
		"--grpc-max-concurrent-streams": {"--grpc-max-concurrent-streams", "0"},
		"--grpc-keepalive-min-time":     {"--grpc-keepalive-min-time", "10ms"},
	}
	for flagName, args := range cases {
		if flagName != "--model-repository" {
			args = append(args, "--model-repository", repo)
		}
		_, err := parseConfig(args, func(string) string { return "" }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), flagName+":") {
			t.Errorf("%v: err = %v, want one naming %s", args, err, flagName)
		}
	}
	if _, err := parseConfig(nil, func(string) string { return "" }, io.Discard); err == nil || !strings.Contains(err.Error(), "--model-repository: required") {
		t.Errorf("missing repository: %v", err)
	}
}

// The built binary: usage errors exit 2, SIGTERM drains and exits 0.
func TestBinaryExitCodes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	lib := testort.Lib(t)
	bin := filepath.Join(t.TempDir(), "inference-server")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "--batch-max-size", "-1", "--model-repository", testort.ModelRepository()).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "--batch-max-size") {
		t.Fatalf("bad flag: %v %s", err, out)
	}
	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--model-repository", testort.ModelRepository(), "--onnxruntime-lib", lib)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, 4096)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(string(buf), "msg=serving") && time.Now().Before(deadline) {
		tmp := make([]byte, 512)
		n, err := stderr.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if err != nil {
			break
		}
	}
	if !strings.Contains(string(buf), "msg=serving") {
		_ = cmd.Process.Kill()
		t.Fatalf("binary did not start: %s", buf)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGTERM: %v", err)
	}
}
