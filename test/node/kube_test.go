//go:build cluster

package node_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/countersign/countersign/test/k8s/kubetest"
)

// node is the running one-node cluster (`make cluster-up`) the tests drive, and the tools they
// drive it with.
type node struct {
	root       string
	kubeconfig string
	client     kubernetes.Interface
	kubectl    string
	helm       string
	ctr        string // ctr, with the cluster's containerd socket
	ctrAddr    string
	registry   string // where `make push-images` put the images, e.g. 127.0.0.1:5000
	images     map[string]string
	dir        string // scratch for this run (helm's homes, keys, receipts)
	artifacts  string
	portal     portalPorts // local ports the portal, its sidecar's admin port and the attestation service are forwarded to
}

func env(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// connect finds the cluster `make cluster-up` brought up, or fails saying how to start it.
func connect(t *testing.T) *node {
	t.Helper()
	root, err := kubetest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	n := &node{
		root:       root,
		kubeconfig: env("COUNTERSIGN_KUBECONFIG", filepath.Join(root, ".cache", "cluster", "kubeconfig")),
		kubectl:    kubetest.Bin(t, "kubectl"),
		helm:       kubetest.Bin(t, "helm"),
		ctrAddr:    env("COUNTERSIGN_CONTAINERD_SOCK", filepath.Join(root, ".cache", "cluster", "run", "containerd", "containerd.sock")),
		registry:   env("COUNTERSIGN_REGISTRY", "127.0.0.1:5000"),
		dir:        t.TempDir(),
		artifacts:  filepath.Join(root, "test", "artifacts"),
	}
	if _, err := os.Stat(n.kubeconfig); err != nil {
		t.Fatalf("no cluster: %v; start one with `make cluster-up` (or run `make test-cluster`, which does)", err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", n.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if n.client, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if n.ctr, err = exec.LookPath("ctr"); err != nil {
		t.Fatalf("ctr (Debian's containerd package) not found: %v", err)
	}
	n.images = readImages(t, filepath.Join(root, ".cache", "images", "images.tsv"))
	if err := os.MkdirAll(n.artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	return n
}

// readImages reads `make images`' list: name, digest, size per line.
func readImages(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v: build the images with `make images`", err)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && strings.HasPrefix(f[1], "sha256:") {
			out[f[0]] = f[1]
		}
	}
	return out
}

// image is the pullable reference of one of our images in the cluster's registry.
func (n *node) image(t *testing.T, name string) string {
	t.Helper()
	d, ok := n.images[name]
	if !ok {
		t.Fatalf("image %s is not in .cache/images/images.tsv (have %v)", name, n.images)
	}
	return n.registry + "/countersign/" + name + "@" + d
}

// run runs a command and returns its combined output.
func run(ctx context.Context, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// kubectl runs kubectl against the cluster.
func (n *node) kubectlCmd(ctx context.Context, args ...string) (string, error) {
	return run(ctx, n.kubectl, append([]string{"--kubeconfig", n.kubeconfig}, args...)...)
}

func (n *node) mustKubectl(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := n.kubectlCmd(ctx, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// helmCmd runs helm against the cluster with its homes in the run's scratch folder.
func (n *node) helmCmd(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, n.helm, append([]string{"--kubeconfig", n.kubeconfig}, args...)...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(n.dir, "helm-cache"),
		"HELM_CONFIG_HOME="+filepath.Join(n.dir, "helm-config"), "HELM_DATA_HOME="+filepath.Join(n.dir, "helm-data"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// probeResult is what the probe binary prints (test/node/cmd/probe).
type probeResult struct {
	OK       bool              `json:"ok"`
	Status   int               `json:"status"`
	Header   map[string]string `json:"header"`
	Body     string            `json:"body"`
	Reply    string            `json:"reply"`
	Error    string            `json:"error"`
	N        int               `json:"n"`
	P50us    int64             `json:"p50_us"`
	P99us    int64             `json:"p99_us"`
	Acked    []string          `json:"acked"`
	Failed   int               `json:"failed"`
	Errors   []string          `json:"errors"`
	Attempts int               `json:"attempts"`
}

// probe runs the probe binary in a pod's probe container (`kubectl exec`): the pod's own
// network namespace and user, so its connections are those of an unmodified app there.
func (n *node) probe(t *testing.T, ns, pod string, timeout time.Duration, args ...string) probeResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := n.kubectlCmd(ctx, append([]string{"-n", ns, "exec", pod, "-c", "probe", "--", "/probe"}, args...)...)
	var r probeResult
	line := lastLine(out)
	if jerr := json.Unmarshal([]byte(line), &r); jerr != nil {
		t.Fatalf("probe %v in %s/%s: %v\n%s", args, ns, pod, err, out)
	}
	if err != nil && r.OK {
		t.Fatalf("probe %v in %s/%s: ok but %v", args, ns, pod, err)
	}
	return r
}

// lastLine is the probe's JSON line: the last line that is a JSON object (kubectl exec adds
// "command terminated with exit code N" after it when the probe fails).
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); strings.HasPrefix(l, "{") {
			return l
		}
	}
	return lines[len(lines)-1]
}

// portForward forwards 127.0.0.1:<local> (a free port when 0) to a port of a pod or Service
// until the test ends, and returns the local port. kubectl port-forward exits when a forwarded
// connection's pod side fails (a restarted container), so it is restarted whenever it exits.
func (n *node) portForward(t *testing.T, ns, target string, remote, local int) int {
	t.Helper()
	if local == 0 {
		local = freePort(t)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			cmd := exec.CommandContext(ctx, n.kubectl, "--kubeconfig", n.kubeconfig, "-n", ns, "port-forward",
				"--address", "127.0.0.1", target, fmt.Sprintf("%d:%d", local, remote))
			_ = cmd.Run()
			select {
			case <-ctx.Done():
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(local), time.Second)
		if err == nil {
			c.Close()
			return local
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("port-forward %s/%s %d: nothing listens on 127.0.0.1:%d after 30s", ns, target, remote, local)
	return 0
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// containerPID is the host PID of a container's main process, from the cluster's containerd.
func (n *node) containerPID(t *testing.T, containerID string) int {
	t.Helper()
	id := strings.TrimPrefix(containerID, "containerd://")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := run(ctx, n.ctr, "--address", n.ctrAddr, "-n", "k8s.io", "tasks", "ls")
	if err != nil {
		t.Fatalf("ctr tasks ls: %v\n%s", err, out)
	}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[0] == id && f[2] == "RUNNING" {
			pid, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatalf("ctr tasks ls: PID %q: %v", f[1], err)
			}
			return pid
		}
	}
	t.Fatalf("container %s has no running task:\n%s", id, out)
	return 0
}

// pods lists the pods of a namespace matching a label selector.
func (n *node) pods(t *testing.T, ns, selector string) []corev1.Pod {
	t.Helper()
	l, err := n.client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

// waitFor polls cond until it returns true or the timeout passes; it says what it waited for.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, last)
}

// podReady says whether every container of the pod (native sidecars included) is ready.
func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// logLines returns a container's log lines with the CRI's timestamps (kubectl logs
// --timestamps), current or previous instance.
func (n *node) logLines(t *testing.T, ns, pod, container string, previous bool) []timedLine {
	t.Helper()
	args := []string{"-n", ns, "logs", pod, "-c", container, "--timestamps"}
	if previous {
		args = append(args, "--previous")
	}
	out := n.mustKubectl(t, args...)
	var lines []timedLine
	for _, l := range strings.Split(out, "\n") {
		ts, rest, ok := strings.Cut(l, " ")
		if !ok {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			continue
		}
		lines = append(lines, timedLine{at, rest})
	}
	return lines
}

type timedLine struct {
	at   time.Time
	text string
}
