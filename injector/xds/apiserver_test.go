package xds_test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/countersign/countersign/test/k8s/kubetest"
)

// The API server validates EndpointSlices: it refuses loopback IPs and single-label host names,
// so the back proxies need a non-loopback address. Servers in tests listen on loopback only, so
// the scenario runs in a network namespace of its own: the test re-executes itself there, with
// the namespace's loopback up and a private address (xdsTestAddr) on it. Everything the run
// starts (etcd, the API server, the attestation service, the proxies) lives and dies inside
// that namespace.
const (
	xdsTestAddr   = "10.200.250.1"
	envInNetns    = "COUNTERSIGN_XDS_IN_NETNS"
	xdsNetnsTitle = "cs-xds"
)

// TestXDSConformanceAPIServer runs the conformance scenario against a real kube-apiserver and
// etcd (test/k8s/kubetest; build them with test/k8s/build.sh) inside a private network
// namespace.
func TestXDSConformanceAPIServer(t *testing.T) {
	if os.Getenv(envInNetns) == "1" {
		c := kubetest.Start(t)
		runConformance(t, c.Client, xdsTestAddr)
		return
	}
	if testing.Short() {
		t.Skip("-short: skipping the real API server scenario")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace for the EndpointSlice addresses (CI runs as root)")
	}
	for _, b := range []string{"kube-apiserver", "etcd"} {
		kubetest.Bin(t, b) // fails here, with how to build them, rather than inside the namespace
	}
	ns := fmt.Sprintf("%s-%d", xdsNetnsTitle, os.Getpid())
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", ns)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", ns, err, out)
		}
	})
	ip("-n", ns, "link", "set", "lo", "up")
	ip("-n", ns, "addr", "add", xdsTestAddr+"/32", "dev", "lo")

	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run", "^TestXDSConformanceAPIServer$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), envInNetns+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("scenario inside network namespace %s:\n%s", ns, out)
	if err != nil {
		t.Fatalf("the scenario failed inside the network namespace: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: TestXDSConformanceAPIServer") {
		t.Fatal("the scenario did not report a pass inside the network namespace")
	}
}
