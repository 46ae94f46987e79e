package xds_test

import (
	"testing"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
)

func fakeClient() kubernetes.Interface { return fake.NewClientset() }

// TestXDSConformanceFake runs the conformance scenario against client-go's fake clientset
// (informers, watches and the translation are real; API validation is not). The same
// scenario runs against the real kube-apiserver in TestXDSConformanceAPIServer.
func TestXDSConformanceFake(t *testing.T) {
	runConformance(t, fakeClient(), "localhost")
}
