package k8s_test

import (
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/injector/certs"
	"github.com/countersign/countersign/internal/testnet"
	"github.com/countersign/countersign/test/k8s/kubetest"
)

// TestWebhookClientAuth: with --client-ca-file the injector admits only callers presenting a
// certificate from that CA with a pinned name. The API server is configured, as an operator
// would, to present one to webhooks (AdmissionConfiguration with a kubeConfigFile): opted-in
// pods are injected through it, while a caller without the certificate cannot even finish the
// TLS handshake.
func TestWebhookClientAuth(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	ca, err := certs.NewCA("apiserver-client-ca", now.Add(-time.Minute), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "client-ca.crt")
	writeFile(t, caFile, ca.CertPEM)
	certPEM, keyPEM := clientCertPEM(t, ca, "kube-apiserver")

	// The API server presents this certificate to every webhook ("*"): kubeConfigFile of the
	// webhook admission plugins.
	kubeconfig := filepath.Join(dir, "webhook-client.kubeconfig")
	writeFile(t, kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
users:
- name: "*"
  user:
    client-certificate-data: %s
    client-key-data: %s
`, base64.StdEncoding.EncodeToString(certPEM), base64.StdEncoding.EncodeToString(keyPEM))))
	admission := filepath.Join(dir, "admission.yaml")
	var plugins strings.Builder
	for _, p := range []string{"MutatingAdmissionWebhook", "ValidatingAdmissionWebhook"} {
		fmt.Fprintf(&plugins, "- name: %s\n  configuration:\n    apiVersion: apiserver.config.k8s.io/v1\n    kind: WebhookAdmissionConfiguration\n    kubeConfigFile: %q\n", p, kubeconfig)
	}
	writeFile(t, admission, []byte("apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n"+plugins.String()))

	c := kubetest.Start(t, "--admission-control-config-file="+admission)
	e := &env{
		t:        t,
		c:        c,
		injector: buildInjector(t),
		port:     testnet.FreePort(t),
		admin:    testnet.FreePort(t),
	}
	e.namespace(csNS, nil)
	e.namespace("apps", nil)
	e.helmCountersign("install")
	e.startInjector("--client-ca-file="+caFile, "--client-names=kube-apiserver")

	p, err := e.create("apps", optedInPod(podName("mtls"), nil))
	if err != nil {
		t.Fatalf("opted-in pod through an API server presenting its client certificate: %v", err)
	}
	checkInjected(t, p)

	// Anyone else who reaches the port: no review.
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", e.port),
		&tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the server is not what is tested
	if err == nil {
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(conn, "POST /inject HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
		_, err = io.ReadAll(conn)
		conn.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a caller without a client certificate: %v, want the handshake refused for want of a certificate", err)
	}
	// A certificate from the right CA with another name is refused too.
	otherPEM, otherKey := clientCertPEM(t, ca, "someone-else")
	other, err := tls.X509KeyPair(otherPEM, otherKey)
	if err != nil {
		t.Fatal(err)
	}
	conn, err = tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", e.port),
		&tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{other}}) //nolint:gosec // as above
	if err == nil {
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadAll(conn)
		conn.Close()
	}
	if err == nil {
		t.Error("a client certificate with a name not in --client-names was accepted")
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// clientCertPEM issues a client-authentication certificate with common name cn from ca.
func clientCertPEM(t *testing.T, ca certs.Pair, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	p, err := certs.NewClientLeaf(ca, cn, nil, time.Now(), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return p.CertPEM, p.KeyPEM
}
