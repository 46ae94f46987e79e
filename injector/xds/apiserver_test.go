package xds_test

import (
	"net"
	"testing"

	"github.com/countersign/countersign/test/k8s/kubetest"
)

// TestXDSConformanceAPIServer runs the conformance scenario against a real kube-apiserver and
// etcd (test/k8s/kubetest; build them with test/k8s/build.sh). The API server validates
// EndpointSlices: it refuses loopback IPs and single-label host names, so the back proxies
// listen on this machine's first non-loopback IPv4 address (traffic to it stays on this
// host), and the slices list that address.
func TestXDSConformanceAPIServer(t *testing.T) {
	host := localIPv4()
	if host == "" {
		t.Skip("no non-loopback IPv4 address on this machine for EndpointSlice addresses (the API server refuses loopback)")
	}
	c := kubetest.Start(t)
	runConformance(t, c.Client, host)
}

func localIPv4() string {
	ifs, err := net.Interfaces()
	if err != nil {
		return ""
	}
	for _, i := range ifs {
		if i.Flags&net.FlagUp == 0 || i.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLinkLocalUnicast() {
				return n.IP.String()
			}
		}
	}
	return ""
}
