package config

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/attestation/maa"
)

// TestValidateRules has one row per validation rule: a change to a valid, defaulted
// configuration (the mesh document: every section set) and the field path and message the
// error must carry. A row with an empty field is a change that must stay valid.
func TestValidateRules(t *testing.T) {
	cases := []struct {
		name   string
		change func(c *Config)
		field  string
		msg    string
	}{
		// attester
		{"sim without key", func(c *Config) { c.Attester.SimPlatformKey = "" }, "attester.simPlatformKey", "required with type sim"},
		{"sgx with sim settings", func(c *Config) { c.Attester.Type = "sgx" }, "attester.simPlatformKey", "sim settings given with type sgx"},
		{"sgx with sim identity", func(c *Config) {
			c.Attester = Attester{Type: "sgx", SimIdentity: SimIdentity{SVN: 1}}
		}, "attester.simPlatformKey", "sim settings given with type sgx"},
		{"sgx alone", func(c *Config) { c.Attester = Attester{Type: "sgx"} }, "", ""},
		{"no attester type", func(c *Config) { c.Attester.Type = "" }, "attester.type", "required: sgx or sim"},
		{"unknown attester type", func(c *Config) { c.Attester.Type = "tpm" }, "attester.type", `"tpm", expected sgx or sim`},
		// attestationService
		{"no url", func(c *Config) { c.AttestationService.URL = "" }, "attestationService.url", "required"},
		{"http url", func(c *Config) { c.AttestationService.URL = "http://a:1" }, "attestationService.url", "TLS is required"},
		{"bad endpoint", func(c *Config) { c.AttestationService.Endpoint = "Tdx" }, "attestationService.endpoint", `"Tdx", expected SgxEnclave or OpenEnclave`},
		{"open enclave endpoint", func(c *Config) { c.AttestationService.Endpoint = string(maa.EndpointOpenEnclave) }, "", ""},
		// top level
		{"no policy file", func(c *Config) { c.PolicyFile = "" }, "policyFile", "required"},
		{"no identity", func(c *Config) { c.Identity = "" }, "identity", "required"},
		{"bad identity", func(c *Config) { c.Identity = "Records API" }, "identity", "is not an identity name"},
		{"too many claimed", func(c *Config) {
			c.Claimed = map[string]string{}
			for i := 0; i <= maa.MaxClaimedEntries; i++ {
				c.Claimed[fmt.Sprint(i)] = "v"
			}
		}, "claimed", fmt.Sprintf("at most %d allowed", maa.MaxClaimedEntries)},
		// refresh
		{"refresh.at zero", func(c *Config) { c.Refresh.At = 0 }, "refresh.at", "between 0 and 1"},
		{"refresh.at one", func(c *Config) { c.Refresh.At = 1 }, "refresh.at", "between 0 and 1"},
		{"negative jitter", func(c *Config) { c.Refresh.Jitter = -0.1 }, "refresh.jitter", "0 <= jitter"},
		{"jitter not below at", func(c *Config) { c.Refresh.At, c.Refresh.Jitter = 0.3, 0.3 }, "refresh.jitter", "jitter < at"},
		{"at+jitter reaches 1", func(c *Config) { c.Refresh.At, c.Refresh.Jitter = 0.6, 0.45 }, "refresh.jitter", "at+jitter < 1"},
		{"maxBackoff below minBackoff", func(c *Config) { c.Refresh.MaxBackoff = Duration(time.Millisecond) }, "refresh.maxBackoff", "is less than minBackoff"},
		// listeners
		{"no listeners", func(c *Config) { c.Inbound, c.Outbound, c.Transparent = nil, nil, nil }, "inbound", "no listeners"},
		{"transparent only", func(c *Config) { c.Inbound, c.Outbound = nil, nil }, "", ""},
		{"bad listener name", func(c *Config) { c.Inbound[0].Name = "API" }, "inbound[0].name", `"API", expected lowercase`},
		{"duplicate listener name", func(c *Config) { c.Outbound[0].Name = "api" }, "outbound[0].name", `"api" is also the name of inbound[0]`},
		{"listen not host:port", func(c *Config) { c.Inbound[0].Listen = "8443" }, "inbound[0].listen", "is not host:port"},
		{"duplicate listen", func(c *Config) { c.Inbound[0].Listen = "127.0.0.1:6380" }, "outbound[0].listen", "is also the address of inbound[0]"},
		{"port 0 may repeat", func(c *Config) { c.Inbound[0].Listen, c.Outbound[0].Listen = "127.0.0.1:0", "127.0.0.1:0" }, "", ""},
		{"bad protocol", func(c *Config) { c.Inbound[0].Protocol = "h2" }, "inbound[0].protocol", `"h2", expected http, http2, grpc or tcp`},
		{"route grpc", func(c *Config) { c.Transparent.Inbound[0].Protocol = "grpc" }, "transparent.inbound[0].protocol", "explicit inbound and outbound listeners"},
		{"peer signatures", func(c *Config) { c.Chain.PeerSignatures = "none" }, "chain.peerSignatures", `"none", expected verify or channel`},
		{"streams", func(c *Config) { c.Limits.MaxConcurrentStreams = -1 }, "limits.maxConcurrentStreams", "expected 1 to 10000"},
		{"frame size", func(c *Config) { c.Limits.MaxFrameBytes = 1000 }, "limits.maxFrameBytes", "16384 to 16777215"},
		{"forwardTo not loopback", func(c *Config) { c.Inbound[0].ForwardTo = "10.0.0.1:8080" }, "inbound[0].forwardTo", "not a loopback address"},
		{"forwardTo not host:port", func(c *Config) { c.Inbound[0].ForwardTo = "localhost" }, "inbound[0].forwardTo", "is not host:port"},
		{"forwardTo localhost", func(c *Config) { c.Inbound[0].ForwardTo = "localhost:8080" }, "", ""},
		{"public without cert", func(c *Config) { c.Inbound[0].Public, c.Inbound[0].Allow = true, nil }, "inbound[0].certFile", "needs certFile and keyFile"},
		{"public with allow", func(c *Config) { c.Inbound[0].Public, c.Inbound[0].CertFile, c.Inbound[0].KeyFile = true, "c", "k" }, "inbound[0].allow", "does not authenticate callers"},
		{"public tcp", func(c *Config) {
			in := &c.Inbound[0]
			in.Public, in.Allow, in.CertFile, in.KeyFile, in.Protocol = true, nil, "c", "k", ProtocolTCP
		}, "inbound[0].public", "not tcp"},
		{"public http", func(c *Config) {
			in := &c.Inbound[0]
			in.Public, in.Allow, in.CertFile, in.KeyFile = true, nil, "c", "k"
		}, "", ""},
		{"attested without allow", func(c *Config) { c.Inbound[0].Allow = nil }, "inbound[0].allow", "required"},
		{"attested with cert", func(c *Config) { c.Inbound[0].KeyFile = "k" }, "inbound[0].certFile", "only public listeners"},
		{"bad allow name", func(c *Config) { c.Inbound[0].Allow = []string{"portal", "-x"} }, "inbound[0].allow[1]", `"-x" is not an identity name`},
		{"outbound not loopback", func(c *Config) { c.Outbound[0].Listen = "0.0.0.0:6380" }, "outbound[0].listen", "the app dials outbound listeners in plaintext"},
		{"cluster and upstream", func(c *Config) { c.Outbound[0].Cluster = "redis" }, "outbound[0].cluster", "use one or the other"},
		{"cluster without xds", func(c *Config) { c.Outbound[0].Cluster, c.Outbound[0].Upstream, c.XDS = "redis", "", nil }, "outbound[0].cluster", "needs a control plane"},
		{"cluster with xds", func(c *Config) { c.Outbound[0].Cluster, c.Outbound[0].Upstream = "redis", "" }, "", ""},
		{"upstream not host:port", func(c *Config) { c.Outbound[0].Upstream = "redis" }, "outbound[0].upstream", "is not host:port"},
		{"no upstreamIdentity", func(c *Config) { c.Outbound[0].UpstreamIdentity = nil }, "outbound[0].upstreamIdentity", "required"},
		{"bad upstreamIdentity", func(c *Config) { c.Outbound[0].UpstreamIdentity = []string{"A"} }, "outbound[0].upstreamIdentity[0]", "is not an identity name"},
		// admin
		{"admin not host:port", func(c *Config) { c.Admin.Listen = "9901" }, "admin.listen", "is not host:port"},
		{"admin shares a listener's address", func(c *Config) { c.Admin.Listen = "0.0.0.0:8443" }, "admin.listen", "is also the address of inbound[0]"},
		{"no admin", func(c *Config) { c.Admin.Listen = "" }, "", ""},
		// limits
		{"maxConnections", func(c *Config) { c.Limits.MaxConnections = 0 }, "limits.maxConnections", "expected at least 1"},
		{"maxHeaderBytes", func(c *Config) { c.Limits.MaxHeaderBytes, c.Chain.MaxBytes = 4095, 4096 }, "limits.maxHeaderBytes", "expected at least 4096"},
		{"maxBodyBytes", func(c *Config) { c.Limits.MaxBodyBytes = -1 }, "limits.maxBodyBytes", "expected at least 1"},
		{"maxResponseBytes", func(c *Config) { c.Limits.MaxResponseBytes = 0 }, "limits.maxResponseBytes", "expected at least 1"},
		// chain
		{"maxHops zero", func(c *Config) { c.Chain.MaxHops = 0 }, "chain.maxHops", "expected 1 to 32"},
		{"maxHops 33", func(c *Config) { c.Chain.MaxHops = 33 }, "chain.maxHops", "expected 1 to 32"},
		{"chain maxBytes small", func(c *Config) { c.Chain.MaxBytes = 4095 }, "chain.maxBytes", "expected at least 4096"},
		{"chain maxBytes over header limit", func(c *Config) { c.Chain.MaxBytes = c.Limits.MaxHeaderBytes + 1 }, "chain.maxBytes", "at most limits.maxHeaderBytes"},
		{"maxAge below window", func(c *Config) { c.Chain.MaxAge = Duration(time.Second) }, "chain.maxAge", "is shorter than chain.window"},
		{"bad chain identity", func(c *Config) { c.Chain.Identities = []string{"ok", "NO"} }, "chain.identities[1]", "is not an identity name"},
		// transparent
		{"inboundListen not host:port", func(c *Config) { c.Transparent.InboundListen = "15006" }, "transparent.inboundListen", "is not host:port"},
		{"inboundListen shares a listener's address", func(c *Config) { c.Transparent.InboundListen = "0.0.0.0:8443" }, "transparent.inboundListen", "is also the address of inbound[0]"},
		{"outboundListen shares a listener's address", func(c *Config) { c.Transparent.OutboundListen = "127.0.0.1:6380" }, "transparent.outboundListen", "is also the address of outbound[0]"},
		{"outboundListen not loopback", func(c *Config) { c.Transparent.OutboundListen = "0.0.0.0:15001" }, "transparent.outboundListen", "iptables redirects"},
		{"negative proxyUid", func(c *Config) { c.Transparent.ProxyUID = -1 }, "transparent.proxyUid", "expected a UID"},
		{"no transparent routes", func(c *Config) { c.Transparent.Inbound, c.Transparent.Outbound, c.XDS = nil, nil, nil }, "transparent.inbound", "no routes"},
		{"no transparent routes with xds", func(c *Config) { c.Transparent.Inbound, c.Transparent.Outbound = nil, nil }, "", ""},
		{"bad route name", func(c *Config) { c.Transparent.Inbound[0].Name = "T" }, "transparent.inbound[0].name", `"T", expected lowercase`},
		{"route name of a listener", func(c *Config) { c.Transparent.Outbound[0].Name = "redis" }, "transparent.outbound[0].name", `"redis" is also the name of outbound[0]`},
		{"route name twice", func(c *Config) { c.Transparent.Outbound[0].Name = "t-api" }, "transparent.outbound[0].name", `"t-api" is also the name of transparent.inbound[0]`},
		{"port zero", func(c *Config) { c.Transparent.Inbound[0].Port = 0 }, "transparent.inbound[0].port", "expected 1 to 65535"},
		{"port too big", func(c *Config) { c.Transparent.Inbound[0].Port = 65536 }, "transparent.inbound[0].port", "expected 1 to 65535"},
		{"port twice", func(c *Config) {
			c.Transparent.Inbound = append(c.Transparent.Inbound, TransparentInbound{Name: "t-2", Port: 8080, Protocol: "tcp", Allow: []string{"a"}})
		}, "transparent.inbound[1].port", "8080 is listed twice"},
		{"route protocol", func(c *Config) { c.Transparent.Inbound[0].Protocol = "udp" }, "transparent.inbound[0].protocol", `"udp", expected http or tcp`},
		{"route without allow", func(c *Config) { c.Transparent.Inbound[0].Allow = nil }, "transparent.inbound[0].allow", "required: the policy identities allowed to call"},
		{"route bad allow", func(c *Config) { c.Transparent.Inbound[0].Allow = []string{"P"} }, "transparent.inbound[0].allow[0]", "is not an identity name"},
		{"no destination", func(c *Config) { c.Transparent.Outbound[0].Destination = netip.AddrPort{} }, "transparent.outbound[0].destination", "required: ip:port"},
		{"destination twice", func(c *Config) {
			c.Transparent.Outbound = append(c.Transparent.Outbound, TransparentOutbound{Name: "t-2", Destination: netip.MustParseAddrPort("10.0.0.7:6379"), Protocol: "tcp", UpstreamIdentity: []string{"a"}})
		}, "transparent.outbound[1].destination", "is listed twice"},
		{"outbound route protocol", func(c *Config) { c.Transparent.Outbound[0].Protocol = "" }, "transparent.outbound[0].protocol", `"", expected http or tcp`},
		{"outbound route without identity", func(c *Config) { c.Transparent.Outbound[0].UpstreamIdentity = nil }, "transparent.outbound[0].upstreamIdentity", "required: the policy identities the upstream must prove"},
		{"excluded inbound port", func(c *Config) { c.Transparent.ExcludeInboundPorts = []int{9901, 0} }, "transparent.excludeInboundPorts[1]", "expected 1 to 65535"},
		{"excluded outbound port", func(c *Config) { c.Transparent.ExcludeOutboundPorts = []int{70000} }, "transparent.excludeOutboundPorts[0]", "expected 1 to 65535"},
		{"excluded CIDR", func(c *Config) { c.Transparent.ExcludeOutboundCIDRs = []string{"10.0.0.0/8", "10.0.0.0"} }, "transparent.excludeOutboundCidrs[1]", "is not a CIDR"},
		// xds
		{"xds server", func(c *Config) { c.XDS.Server = "cp" }, "xds.server", "is not host:port"},
		{"empty nodeId", func(c *Config) { c.XDS.NodeID = "" }, "xds.nodeId", "printable ASCII"},
		{"nodeId with a space", func(c *Config) { c.XDS.NodeID = "a b" }, "xds.nodeId", "printable ASCII"},
		{"long nodeId", func(c *Config) { c.XDS.NodeID = strings.Repeat("a", 254) }, "xds.nodeId", "1 to 253"},
		{"no xds CA", func(c *Config) { c.XDS.CAFile = "" }, "xds.caFile", "required"},
		{"no xds key", func(c *Config) { c.XDS.KeyFile = "" }, "xds.certFile", "certFile and keyFile are required"},
		{"bad xds upstreamIdentities", func(c *Config) { c.XDS.UpstreamIdentities = []string{"X"} }, "xds.upstreamIdentities[0]", "is not an identity name"},
		{"xds maxBackoff", func(c *Config) { c.XDS.MaxBackoff = Duration(time.Millisecond) }, "xds.maxBackoff", "is less than minBackoff"},
	}
	if _, err := Parse([]byte(mesh), ""); err != nil {
		t.Fatalf("the base document is not valid: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(mesh), "")
			if err != nil {
				t.Fatal(err)
			}
			tc.change(c)
			err = c.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, want an error for %s", tc.field)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if strings.HasPrefix(line, tc.field+": ") && strings.Contains(line, tc.msg) {
					return
				}
			}
			t.Errorf("error %q has no line %q with %q", err, tc.field+": ...", tc.msg)
		})
	}
}
