// Package kubetest starts a real etcd and kube-apiserver on loopback for tests, and on request
// kube-controller-manager: the binaries test/k8s/build.sh builds from the Go module proxy into
// .cache/k8s/bin (or $K8S_BIN). No scheduler and no kubelet: pods are stored, never run.
package kubetest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"github.com/countersign/countersign/internal/testnet"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// RepoRoot finds the repository root (the directory holding the root go.mod).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module github.com/countersign/countersign\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("repository root not found above the working directory")
		}
		dir = parent
	}
}

// Bin returns the path of a test binary (kube-apiserver, kube-controller-manager, etcd, helm),
// or fails the test with
// how to build it. Under -short the test is skipped instead.
func Bin(t testing.TB, name string) string {
	t.Helper()
	dir := os.Getenv("K8S_BIN")
	if dir == "" {
		root, err := RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(root, ".cache", "k8s", "bin")
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		if testing.Short() {
			t.Skipf("%s not built (-short)", name)
		}
		t.Fatalf("%s not found at %s: build kube-apiserver, kube-controller-manager, etcd and helm with "+
			"`make kube-deps` (runs test/k8s/build.sh; about 13 minutes the first time), or set K8S_BIN", name, p)
	}
	return p
}

// Cluster is a running etcd + kube-apiserver (+ kube-controller-manager).
type Cluster struct {
	URL        string
	Kubeconfig string
	Token      string
	CAPEM      []byte
	Config     *rest.Config
	Client     kubernetes.Interface
	Dir        string
	// ControllerManager is nil unless started by StartWithControllerManager.
	ControllerManager *Proc
}

// Start starts etcd and kube-apiserver on loopback; both are stopped when the test ends.
// extraArgs are added to kube-apiserver's command line. Nothing creates service accounts, so
// the ServiceAccount admission plugin is off; nothing turns Deployments into pods.
func Start(t testing.TB, extraArgs ...string) *Cluster {
	t.Helper()
	return start(t, false, extraArgs)
}

// Controllers are the kube-controller-manager controllers StartWithControllerManager runs:
// Deployments, ReplicaSets and StatefulSets create pods (through admission, as in a real
// cluster), namespaces get their default service account and kube-root-ca.crt and can finish
// deleting, owned objects are garbage-collected. No node, volume or endpoint controllers: there
// are no nodes.
var Controllers = []string{
	"deployment-controller", "replicaset-controller", "statefulset-controller",
	"serviceaccount-controller", "serviceaccount-token-controller", "root-ca-certificate-publisher-controller",
	"namespace-controller", "garbage-collector-controller",
}

// StartWithControllerManager is Start plus kube-controller-manager (Controllers) on loopback,
// with the ServiceAccount admission plugin on. It returns once the controller-manager has
// created the default namespace's service account.
func StartWithControllerManager(t testing.TB, extraArgs ...string) *Cluster {
	t.Helper()
	return start(t, true, extraArgs)
}

func start(t testing.TB, withCM bool, extraArgs []string) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver (-short)")
	}
	etcdBin, apiBin := Bin(t, "etcd"), Bin(t, "kube-apiserver")
	cmBin := ""
	if withCM {
		cmBin = Bin(t, "kube-controller-manager")
	}
	dir := t.TempDir()
	c := &Cluster{Dir: dir, Token: "countersign-test-admin-token"}

	clientPort, peerPort := testnet.FreePort(t), testnet.FreePort(t)
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(clientPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	startProc(t, dir, "etcd", etcdBin,
		"--name=test", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=test="+peerURL, "--unsafe-no-fsync", "--log-level=warn")

	caPEM, certPEM, keyPEM := servingCert(t)
	c.CAPEM = caPEM
	saKey := ecKeyPEM(t)
	files := map[string][]byte{
		"ca.crt":        caPEM,
		"apiserver.crt": certPEM,
		"apiserver.key": keyPEM,
		"sa.key":        saKey,
		"tokens.csv":    []byte(c.Token + ",admin,admin-uid,system:masters\n"),
	}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	port := testnet.FreePort(t)
	c.URL = "https://127.0.0.1:" + strconv.Itoa(port)
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port=" + strconv.Itoa(port),
		"--tls-cert-file=" + filepath.Join(dir, "apiserver.crt"), "--tls-private-key-file=" + filepath.Join(dir, "apiserver.key"),
		"--token-auth-file=" + filepath.Join(dir, "tokens.csv"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + filepath.Join(dir, "sa.key"),
		"--service-account-signing-key-file=" + filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=RBAC",
		"--endpoint-reconciler-type=none",
		"--cert-dir=" + filepath.Join(dir, "certs"),
	}
	if !withCM {
		// No controller-manager creates default service accounts.
		args = append(args, "--disable-admission-plugins=ServiceAccount")
	}
	startProc(t, dir, "kube-apiserver", apiBin, append(args, extraArgs...)...)

	c.Config = &rest.Config{
		Host:            c.URL,
		BearerToken:     c.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: caPEM},
		QPS:             1000,
		Burst:           1000,
	}
	var err error
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		t.Fatal(err)
	}
	c.Kubeconfig = filepath.Join(dir, "kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: %q, certificate-authority: %q}
users:
- name: admin
  user: {token: %q}
contexts:
- name: test
  context: {cluster: test, user: admin, namespace: default}
current-context: test
`, c.URL, filepath.Join(dir, "ca.crt"), c.Token)
	if err := os.WriteFile(c.Kubeconfig, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	c.waitReady(t)
	if withCM {
		c.startControllerManager(t, cmBin)
	}
	return c
}

// startControllerManager runs kube-controller-manager against the API server with the admin
// kubeconfig, signing service-account tokens with the API server's key, without serving
// (--secure-port=0) and without leader election.
func (c *Cluster) startControllerManager(t testing.TB, bin string) {
	t.Helper()
	c.ControllerManager = startProc(t, c.Dir, "kube-controller-manager", bin,
		"--kubeconfig="+c.Kubeconfig,
		"--bind-address=127.0.0.1", "--secure-port=0",
		"--leader-elect=false",
		"--controllers="+strings.Join(Controllers, ","),
		"--use-service-account-credentials=false",
		"--service-account-private-key-file="+filepath.Join(c.Dir, "sa.key"),
		"--root-ca-file="+filepath.Join(c.Dir, "ca.crt"),
	)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := c.Client.CoreV1().ServiceAccounts("default").Get(context.Background(), "default", metav1.GetOptions{}); err == nil {
			return
		}
		select {
		case <-c.ControllerManager.done:
			t.Fatalf("kube-controller-manager exited (logs in %s)\n%s", c.Dir, tail(c.ControllerManager.Log))
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Fatalf("kube-controller-manager created no default service account in 60s (logs in %s)\n%s", c.Dir, tail(c.ControllerManager.Log))
}

func (c *Cluster) waitReady(t testing.TB) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.CAPEM)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest("GET", c.URL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+c.Token)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("kube-apiserver not ready after 60s: %s (logs in %s)\n%s", last, c.Dir, tail(filepath.Join(c.Dir, "kube-apiserver.log")))
}

// Proc is a started process with its log file.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	Log  string
	done chan struct{}
}

// Stop sends SIGTERM and waits (SIGKILL after 10s). Safe to call twice.
func (p *Proc) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.Cmd.Process.Kill()
		<-p.done
	}
}

// StartProc starts a process logging to dir/name.log, stopped when the test ends.
func StartProc(t testing.TB, dir, name, bin string, args ...string) *Proc {
	return startProc(t, dir, name, bin, args...)
}

func startProc(t testing.TB, dir, name, bin string, args ...string) *Proc {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Proc{Name: name, Cmd: cmd, Log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("--- %s log (last lines) ---\n%s", name, tail(logPath))
		}
	})
	return p
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(string(b), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}

// Helm runs the helm binary against the cluster and returns its combined output.
func (c *Cluster) Helm(ctx context.Context, t testing.TB, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(ctx, Bin(t, "helm"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(c.Dir, "helm-cache"),
		"HELM_CONFIG_HOME="+filepath.Join(c.Dir, "helm-config"), "HELM_DATA_HOME="+filepath.Join(c.Dir, "helm-data"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func servingCert(t testing.TB) (caPEM, certPEM, keyPEM []byte) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kubetest-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

func ecKeyPEM(t testing.TB) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}
