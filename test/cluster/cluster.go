// Package cluster brings the one-node cluster of `make cluster-up` up and down from Go tests
// (docs/cluster.md). The work is done by test/cluster/cluster.sh, the same script the make
// targets run, so a test and a developer get the same cluster: Up starts it (or returns the
// running one fast), Reuse finds a running one, Down removes it.
package cluster

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/countersign/countersign/test/k8s/kubetest"
)

// Cluster describes a running cluster: what `cluster.sh status --env` prints.
type Cluster struct {
	Kubeconfig     string // admin kubeconfig
	Dir            string // .cache/cluster
	ContainerdSock string // the cluster's own containerd (use with ctr --address)
	Registry       string // where the node pulls from, e.g. 127.0.0.1:5000
	Node           string // the node's name
	NodeIP         string // the node's address on the pod bridge
	PodCIDR        string
	ServiceCIDR    string
	DNSIP          string // the kube-dns Service
	K8sBin         string // kubectl, helm and the rest
}

// Script is the path of cluster.sh in the repository holding the working directory.
func Script() (string, error) {
	root, err := kubetest.RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "test", "cluster", "cluster.sh"), nil
}

func script(ctx context.Context, out io.Writer, args ...string) ([]byte, error) {
	s, err := Script()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, s, args...)
	var buf bytes.Buffer
	if out != nil {
		cmd.Stdout, cmd.Stderr = io.MultiWriter(&buf, out), io.MultiWriter(&buf, out)
	} else {
		cmd.Stdout, cmd.Stderr = &buf, &buf
	}
	if err := cmd.Run(); err != nil {
		return buf.Bytes(), fmt.Errorf("cluster.sh %s: %w\n%s", strings.Join(args, " "), err, tailLines(buf.String(), 30))
	}
	return buf.Bytes(), nil
}

// Up brings the cluster up (a no-op of a few seconds when it is already up and healthy),
// writing cluster.sh's progress lines to progress (nil: discard), and describes it.
// The registry address comes from $REGISTRY (default 127.0.0.1:5000), as for make.
func Up(ctx context.Context, progress io.Writer) (*Cluster, error) {
	if _, err := script(ctx, progress, "up"); err != nil {
		return nil, err
	}
	return describe(ctx)
}

// Reuse describes the running cluster, or says it is not up and healthy.
func Reuse(ctx context.Context) (*Cluster, error) {
	if _, err := script(ctx, nil, "status"); err != nil {
		return nil, fmt.Errorf("no healthy cluster (make cluster-up): %w", err)
	}
	return describe(ctx)
}

// Down takes the cluster down, removing everything Up made.
func Down(ctx context.Context, progress io.Writer) error {
	_, err := script(ctx, progress, "down")
	return err
}

func describe(ctx context.Context) (*Cluster, error) {
	out, err := script(ctx, nil, "status", "--env")
	if err != nil {
		return nil, err
	}
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = v
		}
	}
	c := &Cluster{
		Kubeconfig:     env["KUBECONFIG"],
		Dir:            env["CLUSTER_DIR"],
		ContainerdSock: env["CONTAINERD_SOCK"],
		Registry:       env["REGISTRY"],
		Node:           env["NODE"],
		NodeIP:         env["NODE_IP"],
		PodCIDR:        env["POD_CIDR"],
		ServiceCIDR:    env["SERVICE_CIDR"],
		DNSIP:          env["DNS_IP"],
		K8sBin:         env["K8S_BIN"],
	}
	if c.Kubeconfig == "" || c.K8sBin == "" {
		return nil, fmt.Errorf("cluster.sh status --env printed no KUBECONFIG or K8S_BIN:\n%s", out)
	}
	if _, err := os.Stat(c.Kubeconfig); err != nil {
		return nil, fmt.Errorf("cluster is not up: %w", err)
	}
	return c, nil
}

// Kubectl runs kubectl against the cluster and returns its combined output.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.K8sBin, "kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
