// Package e2e runs the built binaries the way the README tells a user to: real processes on
// loopback, real files, real exit codes.
package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/testbin"
)

var binDir string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "countersign-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	fmt.Println("e2e: building attestation-service and proxy")
	if err := testbin.Link(dir, map[string]string{
		"attestation-service": "./attestation/cmd/attestation-service",
		"proxy":               "./proxy/cmd/proxy",
	}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// result is a finished command.
type result struct {
	code           int
	stdout, stderr string
}

func runBin(t *testing.T, dir, name string, stdin io.Reader, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, name), args...)
	cmd.Dir = dir
	cmd.Stdin = stdin
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

var listeningRE = regexp.MustCompile(`listening on (\S+) issuer=(\S+)`)

// startService starts the attestation-service binary on a free port and returns its issuer.
func startService(t *testing.T, dir string, args ...string) (issuer string, stop func()) {
	t.Helper()
	base := []string{"--listen", "127.0.0.1:0", "--signing-key", "signing.pem", "--signing-cert", "signing-cert.pem", "--tls-ca-out", "ca.pem"}
	cmd := exec.Command(filepath.Join(binDir, "attestation-service"), append(base, args...)...)
	cmd.Dir = dir
	stdout, _ := cmd.StdoutPipe()
	var errb strings.Builder
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
				lines <- m[2]
			}
		}
	}()
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			t.Error("attestation-service did not stop on SIGTERM")
		}
	}
	select {
	case issuer = <-lines:
	case <-time.After(30 * time.Second):
		stop()
		t.Fatalf("attestation-service did not start: %s", errb.String())
	}
	t.Cleanup(stop)
	return issuer, stop
}
