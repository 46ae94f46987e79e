package transparent

import (
	"context"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (run with -update if the change is intended):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestRenderGolden(t *testing.T) {
	cases := map[string]Rules{
		"minimal.rules": {ProxyUID: 1337, InboundPort: 15006, OutboundPort: 15001},
		"excludes.rules": {
			ProxyUID: 1337, InboundPort: 15006, OutboundPort: 15001,
			ExcludeInboundPorts:  []int{9901, 22, 9901},
			ExcludeOutboundPorts: []int{53, 443},
			ExcludeOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.1/32"), netip.MustParsePrefix("169.254.169.254/32")},
		},
		"ipv6.rules": {ProxyUID: 1337, InboundPort: 15006, OutboundPort: 15001, IPv6: true, ExcludeOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("fd00::/8")}},
	}
	for name, r := range cases {
		t.Run(name, func(t *testing.T) {
			if err := r.Validate(); err != nil {
				t.Fatal(err)
			}
			golden(t, name, r.Render())
		})
	}
}

// TestRenderOrder checks the properties the golden files are meant to show: the proxy's own
// UID and loopback return before the redirect, and every excluded port returns.
func TestRenderOrder(t *testing.T) {
	r := Rules{ProxyUID: 42, InboundPort: 15006, OutboundPort: 15001, ExcludeInboundPorts: []int{9901}, ExcludeOutboundPorts: []int{53}}
	out := r.Render()
	idx := func(s string) int {
		i := strings.Index(out, s)
		if i < 0 {
			t.Fatalf("rules lack %q:\n%s", s, out)
		}
		return i
	}
	redirect := idx("-A CS_OUTBOUND -j CS_OUT_REDIRECT")
	for _, s := range []string{"--uid-owner 42 -j RETURN", "-A CS_OUTBOUND -o lo -j RETURN", "-d 127.0.0.0/8 -j RETURN", "--dport 53 -j RETURN"} {
		if idx(s) > redirect {
			t.Errorf("%q comes after the outbound redirect", s)
		}
	}
	if idx("-A CS_INBOUND -p tcp --dport 9901 -j RETURN") > idx("-A CS_INBOUND -p tcp -j CS_IN_REDIRECT") {
		t.Error("the excluded inbound port comes after the inbound redirect")
	}
}

func TestValidate(t *testing.T) {
	bad := map[string]Rules{
		"inbound port":  {ProxyUID: 1, InboundPort: 0, OutboundPort: 15001},
		"same ports":    {ProxyUID: 1, InboundPort: 15001, OutboundPort: 15001},
		"excluded port": {ProxyUID: 1, InboundPort: 15006, OutboundPort: 15001, ExcludeOutboundPorts: []int{70000}},
		"cidr family":   {ProxyUID: 1, InboundPort: 15006, OutboundPort: 15001, ExcludeOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("fd00::/8")}},
		"uid":           {ProxyUID: -1, InboundPort: 15006, OutboundPort: 15001},
	}
	for name, r := range bad {
		if err := r.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if err := r.Apply(context.Background(), func(context.Context, string, string, ...string) ([]byte, error) {
			t.Fatalf("%s: Apply ran a command with invalid rules", name)
			return nil, nil
		}); err == nil {
			t.Errorf("%s: Apply accepted", name)
		}
	}
}

// TestApplyCommands checks what Apply runs, with a fake runner: removal first (idempotent),
// then one iptables-restore --noflush with the rendered rules.
func TestApplyCommands(t *testing.T) {
	r := Rules{ProxyUID: 1337, InboundPort: 15006, OutboundPort: 15001}
	var cmds []string
	var restored string
	err := r.Apply(context.Background(), func(_ context.Context, stdin, name string, args ...string) ([]byte, error) {
		cmds = append(cmds, name+" "+strings.Join(args, " "))
		if name == "iptables-restore" {
			restored = stdin
		}
		return nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if last := cmds[len(cmds)-1]; last != "iptables-restore --noflush" {
		t.Errorf("last command %q", last)
	}
	if cmds[0] != "iptables -t nat -D PREROUTING -p tcp -j CS_INBOUND" {
		t.Errorf("first command %q", cmds[0])
	}
	if restored != r.Render() {
		t.Error("iptables-restore was not given the rendered rules")
	}
}

func TestParseLists(t *testing.T) {
	if p, err := ParsePorts(" 22, 9901,"); err != nil || len(p) != 2 || p[1] != 9901 {
		t.Errorf("ports %v %v", p, err)
	}
	if _, err := ParsePorts("80,http"); err == nil {
		t.Error("accepted a port name")
	}
	if c, err := ParseCIDRs("10.0.0.0/8"); err != nil || len(c) != 1 {
		t.Errorf("cidrs %v %v", c, err)
	}
	if _, err := ParseCIDRs("10.0.0.1"); err == nil {
		t.Error("accepted an address as a CIDR")
	}
}
