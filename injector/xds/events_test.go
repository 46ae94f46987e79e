package xds

import (
	"context"
	"crypto/tls"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/prototext"
)

// TestPodEventsCutSnapshotsOnlyWhenTheyMatter: a Service without an identity annotation gets
// its identity from the pods its EndpointSlice points at. Creating that pod (even after the
// slice) and changing its identity cut new snapshots; pods no slice points at, and updates
// that leave the identity alone, cut none (the injector hosts the control plane, and every
// pod created in the cluster would otherwise cost a translation).
func TestPodEventsCutSnapshotsOnlyWhenTheyMatter(t *testing.T) {
	const nsName = "mesh"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := fake.NewClientset()
	var mu sync.Mutex
	var versions []string
	s, err := New(Config{
		Listen:     "127.0.0.1:0",
		TLS:        &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert},
		Client:     client,
		Namespace:  nsName,
		Debounce:   5 * time.Millisecond,
		OnSnapshot: func(v string) { mu.Lock(); versions = append(versions, v); mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	snapshots := func() int { mu.Lock(); defer mu.Unlock(); return len(versions) }
	clusterText := func() string {
		s.mu.Lock()
		defer s.mu.Unlock()
		var b strings.Builder
		for _, r := range s.res[resource.ClusterType] {
			b.WriteString(prototext.Format(r))
		}
		return b.String()
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; clusters:\n%s", what, clusterText())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// settled: no new translation for a while (many debounce periods); returns the count.
	settled := func() uint64 {
		for {
			n := s.rebuilds.Load()
			time.Sleep(100 * time.Millisecond)
			if s.rebuilds.Load() == n {
				return n
			}
		}
	}
	create := func(obj any) {
		t.Helper()
		var err error
		switch o := obj.(type) {
		case *corev1.Service:
			_, err = client.CoreV1().Services(nsName).Create(ctx, o, metav1.CreateOptions{})
		case *discoveryv1.EndpointSlice:
			_, err = client.DiscoveryV1().EndpointSlices(nsName).Create(ctx, o, metav1.CreateOptions{})
		case *corev1.Pod:
			_, err = client.CoreV1().Pods(nsName).Create(ctx, o, metav1.CreateOptions{})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	pod := func(name, identity string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: nsName,
			Annotations: map[string]string{AnnotationPodIdentity: identity}}}
	}
	waitFor("the first snapshot", func() bool { return snapshots() > 0 })

	create(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "records", Namespace: nsName},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}})
	port, ready := int32(8443), true
	create(&discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "records-1", Namespace: nsName, Labels: map[string]string{discoveryv1.LabelServiceName: "records"}},
		AddressType: discoveryv1.AddressTypeFQDN,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"localhost"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "records-a"}}},
		Ports: []discoveryv1.EndpointPort{{Name: ptrTo("http"), Port: &port}},
	})
	base := settled()
	if strings.Contains(clusterText(), "records") {
		t.Fatal("the Service is in the mesh before any of its pods has an identity")
	}

	// A pod no slice points at: no snapshot.
	for i := range 20 {
		create(pod("unrelated-"+string(rune('a'+i)), "someone"))
	}
	if n := settled(); n != base {
		t.Errorf("%d translations for pods no EndpointSlice points at, want 0", n-base)
	}

	// The slice's pod arrives after the slice: its identity puts the Service in the mesh.
	create(pod("records-a", "records-api"))
	waitFor("the Service's cluster with the pod's identity", func() bool { return strings.Contains(clusterText(), "records-api") })
	base = settled()

	// An update that leaves the identity alone: no snapshot; one that changes it: a new one.
	p, err := client.CoreV1().Pods(nsName).Get(ctx, "records-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Labels = map[string]string{"touched": "yes"}
	if p, err = client.CoreV1().Pods(nsName).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := settled(); n != base {
		t.Errorf("%d translations for a pod update that left its identity alone, want 0", n-base)
	}
	p.Annotations[AnnotationPodIdentity] = "records-v2"
	if _, err := client.CoreV1().Pods(nsName).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("the new identity", func() bool { return strings.Contains(clusterText(), "records-v2") })

	// Deleting the pod takes the Service out of the mesh again.
	if err := client.CoreV1().Pods(nsName).Delete(ctx, "records-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("the Service to leave the mesh", func() bool { return !strings.Contains(clusterText(), "records") })
}

// TestSettle: a burst settles one debounce period after its last change; continuous churn
// (a change every fifth of a period, forever) still settles within the ceiling.
func TestSettle(t *testing.T) {
	const debounce = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kick := make(chan struct{}, 1)
	send := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}

	start := time.Now()
	for range 3 {
		send()
		time.Sleep(debounce / 5)
	}
	if !settle(ctx, kick, debounce) {
		t.Fatal("settle returned false with ctx alive")
	}
	if d := time.Since(start); d < debounce {
		t.Errorf("a burst settled after %s, before one quiet debounce period (%s)", d, debounce)
	}

	churn, stop := context.WithCancel(ctx)
	go func() {
		for churn.Err() == nil {
			send()
			time.Sleep(debounce / 5)
		}
	}()
	start = time.Now()
	got := make(chan bool, 1)
	go func() { got <- settle(ctx, kick, debounce) }()
	ceiling := (maxSettle + 1) * debounce
	select {
	case ok := <-got:
		stop()
		if !ok {
			t.Fatal("settle returned false with ctx alive")
		}
		t.Logf("continuous churn settled after %s (ceiling %s)", time.Since(start), ceiling)
	case <-time.After(ceiling + 2*time.Second):
		stop()
		t.Fatalf("continuous churn never settled (ceiling %s)", ceiling)
	}

	cancel()
	if settle(ctx, kick, time.Hour) {
		t.Error("settle returned true after ctx ended")
	}
}

func ptrTo[T any](v T) *T { return &v }
