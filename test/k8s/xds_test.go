package k8s_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/countersign/countersign/injector/certs"
	"github.com/countersign/countersign/injector/inject"
	ixds "github.com/countersign/countersign/injector/xds"
	"github.com/countersign/countersign/internal/testnet"
	"github.com/countersign/countersign/proxy/config"
	"github.com/countersign/countersign/proxy/xdsmeta"
)

const initImg = "registry.example/countersign/proxy-init@sha256:3333333333333333333333333333333333333333333333333333333333333333"

// xdsPKI is the control plane's CA, serving certificate and a proxy's client certificate.
type xdsPKI struct {
	port                      int
	caFile, certFile, keyFile string
	roots                     *x509.CertPool
	client                    tls.Certificate
}

func newXDSPKI(t *testing.T) *xdsPKI {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	ca, err := certs.NewCA("countersign-xds-test-ca", now, now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := certs.NewLeaf(ca, []string{"127.0.0.1"}, now, now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	p := &xdsPKI{
		port:     testnet.FreePort(t),
		caFile:   filepath.Join(dir, "ca.crt"),
		certFile: filepath.Join(dir, "tls.crt"),
		keyFile:  filepath.Join(dir, "tls.key"),
		roots:    x509.NewCertPool(),
	}
	for f, b := range map[string][]byte{p.caFile: ca.CertPEM, p.certFile: leaf.CertPEM, p.keyFile: leaf.KeyPEM} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p.roots.AppendCertsFromPEM(ca.CertPEM)
	client, err := certs.NewClientLeaf(ca, "proxy", nil, now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if p.client, err = tls.X509KeyPair(client.CertPEM, client.KeyPEM); err != nil {
		t.Fatal(err)
	}
	return p
}

// flags of the injector for its control plane and transparent injection.
func (p *xdsPKI) flags() []string {
	return []string{"--xds-listen=127.0.0.1:" + strconv.Itoa(p.port), "--xds-tls-cert-file=" + p.certFile, "--xds-tls-key-file=" + p.keyFile,
		"--xds-client-ca-file=" + p.caFile, "--xds-debounce=5ms", "--proxy-init-image=" + initImg,
		"--proxy-sim-xds-image=" + simXDSImg}
}

// ads opens an ADS stream to the injector's control plane as the described node.
func (p *xdsPKI) ads(t *testing.T, ctx context.Context, id string, info xdsmeta.NodeInfo, withCert bool) (discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient, *corev3.Node, error) {
	t.Helper()
	tc := &tls.Config{RootCAs: p.roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
	if withCert {
		tc.Certificates = []tls.Certificate{p.client}
	}
	conn, err := grpc.NewClient("127.0.0.1:"+strconv.Itoa(p.port), grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	md, err := xdsmeta.EncodeNode(info)
	if err != nil {
		t.Fatal(err)
	}
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	return st, &corev3.Node{Id: id, Metadata: md}, err
}

// recvNames waits for a response of the type that holds want and returns it.
func recvUntil(t *testing.T, st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient, typeURL string, ok func(*discoveryv3.DiscoveryResponse) bool) *discoveryv3.DiscoveryResponse {
	t.Helper()
	for {
		resp, err := st.Recv()
		if err != nil {
			t.Fatalf("waiting for %s: %v", typeURL, err)
		}
		if resp.GetTypeUrl() == typeURL && ok(resp) {
			return resp
		}
		// ACK whatever else arrives, so the stream moves on.
		if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resp.GetTypeUrl(), VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
			t.Fatal(err)
		}
	}
}

func clusterNames(resp *discoveryv3.DiscoveryResponse) []string {
	var out []string
	for _, a := range resp.GetResources() {
		var c clusterv3.Cluster
		if a.UnmarshalTo(&c) == nil {
			out = append(out, c.GetName())
		}
	}
	return out
}

func listenerNames(resp *discoveryv3.DiscoveryResponse) []string {
	var out []string
	for _, a := range resp.GetResources() {
		var l listenerv3.Listener
		if a.UnmarshalTo(&l) == nil {
			out = append(out, l.GetName())
		}
	}
	return out
}

// controlPlane: the injector binary serves xDS from the real API server's state over mTLS:
// a Service with its EndpointSlice reaches a proxy that may call it, its allow annotation
// reaches (only) the proxies that back it, a NACK is counted, a client without a
// certificate is refused; and pods are injected with the control plane's address and, in
// transparent mode, the iptables init container.
func controlPlane(t *testing.T, e *env, p *xdsPKI) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "records", Namespace: "apps", Annotations: map[string]string{
			ixds.AnnotationUpstreamIdentity: "records-api", ixds.AnnotationAllow: "portal"}},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
	}
	created, err := e.c.Client.CoreV1().Services("apps").Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tcp, ready, port := corev1.ProtocolTCP, true, int32(8443)
	name := "http"
	// Data only: nothing dials this address.
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "records-a", Namespace: "apps", Labels: map[string]string{discoveryv1.LabelServiceName: "records"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.200.0.5"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &tcp}},
	}
	if _, err := e.c.Client.DiscoveryV1().EndpointSlices("apps").Create(ctx, sl, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cluster := "apps/records:http"

	// A portal proxy (may call records-api) gets the cluster and its VIP listener.
	st, node, err := p.ads(t, ctx, "portal", xdsmeta.NodeInfo{Identity: "portal", UpstreamIdentities: []string{"records-api"}}, true)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	resp := recvUntil(t, st, resource.ClusterType, func(r *discoveryv3.DiscoveryResponse) bool { return slices.Contains(clusterNames(r), cluster) })
	t.Logf("control plane: cluster %s served %v after the request (version %s)", cluster, time.Since(t0), resp.GetVersionInfo())
	// A NACK is counted by type.
	if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: resp.GetNonce(),
		ErrorDetail: &statuspb.Status{Code: 3, Message: "test: rejected on purpose"}}); err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}
	lresp := recvUntil(t, st, resource.ListenerType, func(r *discoveryv3.DiscoveryResponse) bool { return slices.Contains(listenerNames(r), cluster) })
	if in := ixds.InboundName(cluster, port); slices.Contains(listenerNames(lresp), in) {
		t.Errorf("the portal proxy was sent %s, the inbound listener of a Service it does not back", in)
	}
	var l listenerv3.Listener
	for _, a := range lresp.GetResources() {
		if a.UnmarshalTo(&l) == nil && l.GetName() == cluster {
			break
		}
	}
	if got := l.GetAddress().GetSocketAddress().GetAddress(); got != created.Spec.ClusterIP {
		t.Errorf("VIP listener at %s, want the cluster IP %s", got, created.Spec.ClusterIP)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(metricsText(t, e), `countersign_injector_xds_nacks_total{type="Cluster"} 1`) {
		if time.Now().After(deadline) {
			t.Fatal("the NACK was not counted in countersign_injector_xds_nacks_total")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A records-api proxy (backs the Service, calls nobody) gets only the inbound listener.
	st2, node2, err := p.ads(t, ctx, "records-api", xdsmeta.NodeInfo{Identity: "records-api"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := st2.Send(&discoveryv3.DiscoveryRequest{Node: node2, TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}
	want := ixds.InboundName(cluster, port)
	lr := recvUntil(t, st2, resource.ListenerType, func(r *discoveryv3.DiscoveryResponse) bool { return len(r.GetResources()) > 0 })
	if got := listenerNames(lr); !slices.Equal(got, []string{want}) {
		t.Errorf("records-api proxy got listeners %v, want only %s", got, want)
	}

	// Without a client certificate: refused.
	st3, node3, err := p.ads(t, ctx, "intruder", xdsmeta.NodeInfo{Identity: "portal"}, false)
	if err == nil {
		if err = st3.Send(&discoveryv3.DiscoveryRequest{Node: node3, TypeUrl: resource.ClusterType}); err == nil {
			_, err = st3.Recv()
		}
	}
	// The TLS alert ("certificate required") or the closed connection, depending on timing.
	if err == nil {
		t.Error("a client without a certificate got a response")
	} else {
		t.Logf("a client without a certificate: %v", err)
	}

	// Injection: the control plane's address in every proxy; transparent mode adds the
	// iptables init container first.
	pod := optedInPod(podName("mesh"), map[string]string{
		inject.AnnotationTransparent:            "enabled",
		inject.TransparentInboundPrefix + "web": "port=8080 protocol=http allow=portal",
		inject.AnnotationXDSUpstreamIdentities:  "redis",
		inject.AnnotationExcludeOutboundCIDRs:   "10.96.0.1/32",
	})
	got, err := e.create("apps", pod)
	if err != nil {
		t.Fatal(err)
	}
	checkInjected(t, &corev1.Pod{ObjectMeta: got.ObjectMeta, Spec: corev1.PodSpec{InitContainers: got.Spec.InitContainers[1:]}})
	if ic := got.Spec.InitContainers[0]; ic.Name != inject.IptablesContainerName || ic.Image != initImg ||
		!slices.Equal(ic.SecurityContext.Capabilities.Add, []corev1.Capability{"NET_ADMIN"}) {
		t.Errorf("first init container %s %s %+v, want the iptables container with NET_ADMIN", ic.Name, ic.Image, ic.SecurityContext)
	}
	pc, err := config.Parse([]byte(got.Annotations[inject.AnnotationProxyConfig]), "")
	if err != nil {
		t.Fatal(err)
	}
	if pc.XDS == nil || pc.XDS.Server != webhookCf+"."+csNS+".svc:"+strconv.Itoa(p.port) || pc.Transparent == nil || len(pc.Transparent.Inbound) != 1 {
		t.Errorf("injected config: xds %+v transparent %+v", pc.XDS, pc.Transparent)
	}
}

func metricsText(t *testing.T, e *env) string {
	resp, err := plainHTTP.Get("http://127.0.0.1:" + strconv.Itoa(e.admin) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
