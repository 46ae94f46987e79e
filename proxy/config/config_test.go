package config

import (
	"strings"
	"testing"
)

const minimal = `
attester: {type: sim, simPlatformKey: platform.pem}
attestationService: {url: "https://127.0.0.1:8443", caFile: ca.pem}
policyFile: policy.yaml
identity: records-api
inbound:
  - {name: api, listen: "0.0.0.0:8443", protocol: http, forwardTo: "127.0.0.1:8080", allow: [portal]}
outbound:
  - {name: redis, listen: "127.0.0.1:6380", protocol: tcp, upstream: "redis.svc:7443", upstreamIdentity: [redis]}
admin: {listen: "127.0.0.1:9901"}
`

func TestParseDefaultsAndPaths(t *testing.T) {
	c, err := Parse([]byte(minimal), "/etc/cs")
	if err != nil {
		t.Fatal(err)
	}
	if c.PolicyFile != "/etc/cs/policy.yaml" || c.Attester.SimPlatformKey != "/etc/cs/platform.pem" {
		t.Errorf("paths not resolved: %q %q", c.PolicyFile, c.Attester.SimPlatformKey)
	}
	if c.Refresh.At != 0.5 || c.Chain.MaxHops != 8 || c.Limits.MaxConnections != 1024 {
		t.Errorf("defaults: %+v %+v", c.Refresh, c.Chain)
	}
}

func TestValidateNamesFields(t *testing.T) {
	cases := map[string]struct{ old, new, field string }{
		"unknown field":     {"identity: records-api", "identity: records-api\nidentiy: x", "unknown field"},
		"attester type":     {"type: sim", "type: tpm", "attester.type"},
		"forward not local": {`forwardTo: "127.0.0.1:8080"`, `forwardTo: "10.0.0.1:8080"`, "inbound[0].forwardTo"},
		"outbound public":   {`listen: "127.0.0.1:6380"`, `listen: "0.0.0.0:6380"`, "outbound[0].listen"},
		"no allow":          {"allow: [portal]", "allow: []", "inbound[0].allow"},
		"protocol":          {"protocol: tcp", "protocol: udp", "outbound[0].protocol"},
		"no upstream id":    {"upstreamIdentity: [redis]", "upstreamIdentity: []", "outbound[0].upstreamIdentity"},
		"refresh":           {"identity: records-api", "identity: records-api\nrefresh: {at: 1.5}", "refresh.at"},
		"duplicate name":    {"name: redis", "name: api", "outbound[0].name"},
		"public no cert":    {"allow: [portal]", "public: true", "inbound[0].certFile"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			doc := strings.Replace(minimal, c.old, c.new, 1)
			if doc == minimal {
				t.Fatal("test case did not change the document")
			}
			_, err := Parse([]byte(doc), "")
			if err == nil || !strings.Contains(err.Error(), c.field) {
				t.Errorf("error %v, want one naming %s", err, c.field)
			}
		})
	}
}
