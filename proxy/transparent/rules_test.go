package transparent

import (
	"context"
	"errors"
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
			ProxyUID:             1337,
			InboundPort:          15006,
			OutboundPort:         15001,
			ExcludeInboundPorts:  []int{9901, 22, 9901},
			ExcludeOutboundPorts: []int{53, 443},
			ExcludeOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.1/32"), netip.MustParsePrefix("169.254.169.254/32")},
		},
		"ipv6.rules": {
			ProxyUID:             1337,
			InboundPort:          15006,
			OutboundPort:         15001,
			IPv6:                 true,
			ExcludeOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("fd00::/8")},
		},
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
	r := Rules{
		ProxyUID:             42,
		InboundPort:          15006,
		OutboundPort:         15001,
		ExcludeInboundPorts:  []int{9901},
		ExcludeOutboundPorts: []int{53},
	}
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

// fakeTables is a Runner standing in for iptables: `-t nat -S` prints listing (or fails
// with listErr), every other command is recorded and succeeds.
type fakeTables struct {
	listing  string
	listErr  error
	cmds     []string
	restored string
}

func (f *fakeTables) run(_ context.Context, stdin, name string, args ...string) ([]byte, error) {
	cmd := name + " " + strings.Join(args, " ")
	if strings.HasSuffix(cmd, " -t nat -S") {
		if f.listErr != nil {
			return []byte("can't initialize ip6tables table `nat': Table does not exist"), f.listErr
		}
		return []byte(f.listing), nil
	}
	f.cmds = append(f.cmds, cmd)
	if strings.HasSuffix(name, "-restore") {
		f.restored = stdin
	}
	return nil, nil
}

const installedListing = `-P PREROUTING ACCEPT
-P OUTPUT ACCEPT
-N CS_INBOUND
-N CS_IN_REDIRECT
-N CS_OUTBOUND
-N CS_OUT_REDIRECT
-N OTHER
-A PREROUTING -p tcp -j CS_INBOUND
-A OUTPUT -p tcp -j CS_OUTBOUND
-A OUTPUT -p tcp -j OTHER
-A CS_INBOUND -p tcp -j CS_IN_REDIRECT
`

// TestApplyCommands checks what Apply runs, with a fake runner: removal of what is installed
// first (idempotent), then one iptables-restore --noflush with the rendered rules.
func TestApplyCommands(t *testing.T) {
	r := Rules{ProxyUID: 1337, InboundPort: 15006, OutboundPort: 15001}
	f := &fakeTables{listing: installedListing}
	if err := r.Apply(context.Background(), f.run); err != nil {
		t.Fatal(err)
	}
	if last := f.cmds[len(f.cmds)-1]; last != "iptables-restore --noflush" {
		t.Errorf("last command %q", last)
	}
	if f.cmds[0] != "iptables -t nat -D PREROUTING -p tcp -j CS_INBOUND" {
		t.Errorf("first command %q", f.cmds[0])
	}
	if f.restored != r.Render() {
		t.Error("iptables-restore was not given the rendered rules")
	}
	// Nothing installed yet: straight to iptables-restore.
	f = &fakeTables{}
	if err := r.Apply(context.Background(), f.run); err != nil || len(f.cmds) != 1 {
		t.Errorf("fresh install ran %q (%v)", f.cmds, err)
	}
	// A nat table that cannot be read fails the install (fail closed).
	f = &fakeTables{listErr: errors.New("exit status 3")}
	if err := r.Apply(context.Background(), f.run); err == nil || len(f.cmds) != 0 {
		t.Errorf("install over an unreadable table: %v, ran %q", err, f.cmds)
	}
}

// TestRemove: only what exists is deleted (each jump, then each chain flushed and deleted);
// absent rules are not an error; an unreadable table is.
func TestRemove(t *testing.T) {
	ctx := context.Background()
	r := Rules{ProxyUID: 1337, InboundPort: 15006, OutboundPort: 15001, IPv6: true}
	f := &fakeTables{listing: installedListing}
	found, err := r.Remove(ctx, f.run)
	want := []string{
		"ip6tables -t nat -D PREROUTING -p tcp -j CS_INBOUND",
		"ip6tables -t nat -D OUTPUT -p tcp -j CS_OUTBOUND",
		"ip6tables -t nat -F CS_INBOUND", "ip6tables -t nat -F CS_IN_REDIRECT", "ip6tables -t nat -F CS_OUTBOUND", "ip6tables -t nat -F CS_OUT_REDIRECT",
		"ip6tables -t nat -X CS_INBOUND", "ip6tables -t nat -X CS_IN_REDIRECT", "ip6tables -t nat -X CS_OUTBOUND", "ip6tables -t nat -X CS_OUT_REDIRECT",
	}
	if err != nil || !found || strings.Join(f.cmds, "\n") != strings.Join(want, "\n") {
		t.Errorf("remove: found %v, %v, ran\n%s", found, err, strings.Join(f.cmds, "\n"))
	}
	// Partly removed (chains left, jumps gone).
	f = &fakeTables{listing: "-N CS_OUTBOUND\n-A CS_OUTBOUND -j RETURN\n"}
	if found, err := r.Remove(ctx, f.run); err != nil || !found || len(f.cmds) != 2 {
		t.Errorf("partial: found %v, %v, ran %q", found, err, f.cmds)
	}
	// Absent (never installed for this family, or removed already): nothing run, no error.
	f = &fakeTables{listing: "-P PREROUTING ACCEPT\n-N OTHER\n-A OUTPUT -p tcp -j OTHER\n"}
	if found, err := r.Remove(ctx, f.run); err != nil || found || len(f.cmds) != 0 {
		t.Errorf("absent: found %v, %v, ran %q", found, err, f.cmds)
	}
	f = &fakeTables{listErr: errors.New("exit status 3")}
	if _, err := r.Remove(ctx, f.run); err == nil || !strings.Contains(err.Error(), "ip6tables -t nat -S") {
		t.Errorf("unreadable table: %v", err)
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
