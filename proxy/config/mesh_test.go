package config

import (
	"strings"
	"testing"
)

const mesh = minimal + `
transparent:
  inbound:
    - {name: t-api, port: 8080, protocol: http, allow: [portal]}
  outbound:
    - {name: t-redis, destination: "10.0.0.7:6379", protocol: tcp, upstreamIdentity: [redis]}
  excludeInboundPorts: [9901]
xds:
  server: "cp.countersign.svc:15010"
  caFile: ca.pem
  certFile: xds.crt
  keyFile: xds.key
  upstreamIdentities: [redis, inference]
`

func TestMeshDefaults(t *testing.T) {
	c, err := Parse([]byte(mesh), "/etc/cs")
	if err != nil {
		t.Fatal(err)
	}
	tr, x := c.Transparent, c.XDS
	if tr.InboundListen != DefaultInboundListen || tr.OutboundListen != DefaultOutboundListen || tr.ProxyUID != DefaultProxyUID {
		t.Errorf("transparent defaults: %+v", tr)
	}
	if x.NodeID != "records-api" || x.ServerName != "cp.countersign.svc" || x.CAFile != "/etc/cs/ca.pem" || x.KeyFile != "/etc/cs/xds.key" {
		t.Errorf("xds defaults: %+v", x)
	}
	// Without upstreamIdentities the control plane can only narrow and move endpoints.
	if _, err := Parse([]byte(strings.Replace(mesh, "  upstreamIdentities: [redis, inference]\n", "", 1)), ""); err != nil {
		t.Errorf("xds without upstreamIdentities: %v", err)
	}
	// Existing configurations (no mesh sections) stay valid.
	if _, err := Parse([]byte(minimal), ""); err != nil {
		t.Fatal(err)
	}
}

func TestMeshValidateNamesFields(t *testing.T) {
	cases := map[string]struct{ old, new, field string }{
		"inbound port":       {"port: 8080", "port: 0", "transparent.inbound[0].port"},
		"inbound allow":      {"allow: [portal]}\n  outbound", "allow: []}\n  outbound", "transparent.inbound[0].allow"},
		"destination":        {`destination: "10.0.0.7:6379"`, `destination: "redis:6379"`, "transparent.outbound[0].destination"},
		"outbound not local": {"excludeInboundPorts: [9901]", "excludeInboundPorts: [9901]\n  outboundListen: \"0.0.0.0:15001\"", "transparent.outboundListen"},
		"cidr":               {"excludeInboundPorts: [9901]", "excludeInboundPorts: [9901]\n  excludeOutboundCidrs: [10.0.0.0]", "transparent.excludeOutboundCidrs[0]"},
		"exclude port":       {"excludeInboundPorts: [9901]", "excludeInboundPorts: [99999]", "transparent.excludeInboundPorts[0]"},
		"xds no mtls":        {"certFile: xds.crt\n  ", "", "xds.certFile"},
		"xds no ca":          {"caFile: ca.pem\n  certFile", "certFile", "xds.caFile"},
		"xds floor":          {"upstreamIdentities: [redis, inference]", "upstreamIdentities: [redis, Inference]", "xds.upstreamIdentities[1]"},
		"xds server":         {`server: "cp.countersign.svc:15010"`, `server: "cp"`, "xds.server"},
		"cluster and upstr":  {`upstream: "redis.svc:7443"`, `upstream: "redis.svc:7443", cluster: "redis"`, "outbound[0].cluster"},
		"duplicate name":     {"name: t-api", "name: api", "transparent.inbound[0].name"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			doc := strings.Replace(mesh, c.old, c.new, 1)
			if doc == mesh {
				t.Fatal("test case did not change the document")
			}
			_, err := Parse([]byte(doc), "")
			if err == nil || !strings.Contains(err.Error(), c.field) {
				t.Errorf("error %v, want one naming %s", err, c.field)
			}
		})
	}
	// A cluster without a control plane.
	doc := strings.Replace(minimal, `upstream: "redis.svc:7443"`, `cluster: "redis"`, 1)
	if _, err := Parse([]byte(doc), ""); err == nil || !strings.Contains(err.Error(), "outbound[0].cluster") {
		t.Errorf("cluster without xds: %v", err)
	}
}
