// Package transparent is transparent interception: the iptables rules the injected init
// container installs (shared with `proxy iptables`), recovery of a redirected connection's
// original destination (SO_ORIGINAL_DST), and a listener that hands each redirected
// connection, with its original destination, to a router.
package transparent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
)

// Chains the rules create in the nat table. Removing them removes every rule this package
// installed, and nothing else.
const (
	ChainInbound     = "CS_INBOUND"
	ChainInRedirect  = "CS_IN_REDIRECT"
	ChainOutbound    = "CS_OUTBOUND"
	ChainOutRedirect = "CS_OUT_REDIRECT"
)

// Rules describe the interception of one pod (network namespace).
type Rules struct {
	// ProxyUID is the proxy's UID: its own outbound connections are not redirected.
	ProxyUID int
	// InboundPort is the proxy's inbound listener (0.0.0.0:InboundPort); OutboundPort its
	// outbound listener (127.0.0.1:OutboundPort).
	InboundPort, OutboundPort int
	// ExcludeInboundPorts reach the pod without the proxy (e.g. probes on the admin port).
	ExcludeInboundPorts []int
	// ExcludeOutboundPorts and ExcludeOutboundCIDRs are reached without the proxy.
	ExcludeOutboundPorts []int
	ExcludeOutboundCIDRs []netip.Prefix
	// IPv6 renders ip6tables rules instead of iptables rules.
	IPv6 bool
}

// Validate checks ports and UID.
func (r Rules) Validate() error {
	var errs []error
	port := func(name string, p int) {
		if p < 1 || p > 65535 {
			errs = append(errs, fmt.Errorf("%s: %d, expected 1 to 65535", name, p))
		}
	}
	if r.ProxyUID < 0 {
		errs = append(errs, fmt.Errorf("proxy UID: %d, expected a UID", r.ProxyUID))
	}
	port("inbound port", r.InboundPort)
	port("outbound port", r.OutboundPort)
	if r.InboundPort == r.OutboundPort {
		errs = append(errs, fmt.Errorf("inbound and outbound ports are both %d", r.InboundPort))
	}
	for _, p := range r.ExcludeInboundPorts {
		port("excluded inbound port", p)
	}
	for _, p := range r.ExcludeOutboundPorts {
		port("excluded outbound port", p)
	}
	for _, c := range r.ExcludeOutboundCIDRs {
		if !c.IsValid() || c.Addr().Is4() == r.IPv6 {
			errs = append(errs, fmt.Errorf("excluded outbound CIDR %s is not an IPv%s prefix", c, map[bool]string{false: "4", true: "6"}[r.IPv6]))
		}
	}
	return errors.Join(errs...)
}

// Render returns the rules as iptables-restore input for the nat table (use with --noflush).
// The order matters: the proxy's own traffic and loopback are excluded before anything is
// redirected.
func (r Rules) Render() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	loop := "127.0.0.0/8"
	if r.IPv6 {
		loop = "::1/128"
	}
	w("# Countersign transparent interception (generated; see docs/transparent.md)")
	w("*nat")
	for _, c := range []string{ChainInbound, ChainInRedirect, ChainOutbound, ChainOutRedirect} {
		w(":%s - [0:0]", c)
	}
	w("-A %s -p tcp -j REDIRECT --to-ports %d", ChainInRedirect, r.InboundPort)
	w("-A %s -p tcp -j REDIRECT --to-ports %d", ChainOutRedirect, r.OutboundPort)
	// Inbound: everything that arrives for the pod over TCP, except excluded ports.
	w("-A PREROUTING -p tcp -j %s", ChainInbound)
	for _, p := range sortedUnique(r.ExcludeInboundPorts) {
		w("-A %s -p tcp --dport %d -j RETURN", ChainInbound, p)
	}
	w("-A %s -p tcp -j %s", ChainInbound, ChainInRedirect)
	// Outbound: what the app sends, except the proxy's own connections, loopback and
	// excluded destinations.
	w("-A OUTPUT -p tcp -j %s", ChainOutbound)
	w("-A %s -m owner --uid-owner %d -j RETURN", ChainOutbound, r.ProxyUID)
	w("-A %s -o lo -j RETURN", ChainOutbound)
	w("-A %s -d %s -j RETURN", ChainOutbound, loop)
	for _, p := range sortedUnique(r.ExcludeOutboundPorts) {
		w("-A %s -p tcp --dport %d -j RETURN", ChainOutbound, p)
	}
	for _, c := range r.ExcludeOutboundCIDRs {
		w("-A %s -d %s -j RETURN", ChainOutbound, c.Masked())
	}
	w("-A %s -j %s", ChainOutbound, ChainOutRedirect)
	w("COMMIT")
	return b.String()
}

func sortedUnique(ps []int) []int {
	out := slices.Clone(ps)
	slices.Sort(out)
	return slices.Compact(out)
}

// Runner runs a command with stdin and returns its combined output; exec by default.
type Runner func(ctx context.Context, stdin string, name string, args ...string) ([]byte, error)

// ExecRunner runs the command with os/exec.
func ExecRunner(ctx context.Context, stdin string, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

func (r Rules) tools() (iptables, restore string) {
	if r.IPv6 {
		return "ip6tables", "ip6tables-restore"
	}
	return "iptables", "iptables-restore"
}

// Apply installs the rules: it first removes any earlier Countersign chains (so that running
// it twice, as a restarted init container does, leaves one copy), then loads the rules with
// iptables-restore --noflush, which leaves other rules alone.
func (r Rules) Apply(ctx context.Context, run Runner) error {
	if err := r.Validate(); err != nil {
		return err
	}
	if run == nil {
		run = ExecRunner
	}
	// Absent chains are fine; a table that cannot be read fails the install (fail closed).
	if _, err := r.Remove(ctx, run); err != nil {
		return err
	}
	_, restore := r.tools()
	if out, err := run(ctx, r.Render(), restore, "--noflush"); err != nil {
		return fmt.Errorf("%s: %w: %s", restore, err, bytes.TrimSpace(out))
	}
	return nil
}

// Remove deletes the jumps to the Countersign chains and the chains themselves, those of
// them that exist in the nat table: it is idempotent, and rules that are absent (never
// installed for this address family, or already removed) are not an error. found reports
// whether there was anything to remove. It fails when the nat table cannot be listed, and
// reports the first failing deletion (after attempting every one).
func (r Rules) Remove(ctx context.Context, run Runner) (found bool, err error) {
	if run == nil {
		run = ExecRunner
	}
	ipt, _ := r.tools()
	list := []string{"-t", "nat", "-S"}
	out, err := run(ctx, "", ipt, list...)
	if err != nil {
		return false, fmt.Errorf("%s %s: %w: %s", ipt, strings.Join(list, " "), err, bytes.TrimSpace(out))
	}
	jumps, chains := installed(string(out))
	var steps [][]string
	for _, j := range jumps {
		steps = append(steps, append([]string{"-t", "nat", "-D"}, j...))
	}
	for _, c := range chains {
		steps = append(steps, []string{"-t", "nat", "-F", c})
	}
	for _, c := range chains {
		steps = append(steps, []string{"-t", "nat", "-X", c})
	}
	for _, s := range steps {
		if out, e := run(ctx, "", ipt, s...); e != nil && err == nil {
			err = fmt.Errorf("%s %s: %w: %s", ipt, strings.Join(s, " "), e, bytes.TrimSpace(out))
		}
	}
	return len(steps) > 0, err
}

// installed reads `iptables -t nat -S` output: the jumps from the built-in chains to ours (as
// rule specifications, one per copy) and our chains that exist, in the order Render creates
// them.
func installed(listing string) (jumps [][]string, chains []string) {
	ours := []string{ChainInbound, ChainInRedirect, ChainOutbound, ChainOutRedirect}
	have := map[string]bool{}
	for _, l := range strings.Split(listing, "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) == 2 && f[0] == "-N" && slices.Contains(ours, f[1]):
			have[f[1]] = true
		case len(f) >= 3 && f[0] == "-A" && (f[1] == "PREROUTING" || f[1] == "OUTPUT") &&
			f[len(f)-2] == "-j" && slices.Contains(ours, f[len(f)-1]):
			jumps = append(jumps, f[1:])
		}
	}
	for _, c := range ours {
		if have[c] {
			chains = append(chains, c)
		}
	}
	return jumps, chains
}

// HasIPv6 reports whether the current network namespace has IPv6 (an interface with an IPv6
// address, which loopback has unless IPv6 is disabled).
func HasIPv6() bool {
	b, err := os.ReadFile("/proc/net/if_inet6")
	return err == nil && len(bytes.TrimSpace(b)) > 0
}

// OfFamily returns the prefixes of one address family (IPv6 or IPv4).
func OfFamily(ps []netip.Prefix, ipv6 bool) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.IsValid() && p.Addr().Is4() != ipv6 {
			out = append(out, p)
		}
	}
	return out
}

// ParsePorts parses a comma-separated list of ports ("" is none).
func ParsePorts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := strconv.Atoi(f)
		if err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("%q is not a port (1 to 65535)", f)
		}
		out = append(out, p)
	}
	return out, nil
}

// ParseCIDRs parses a comma-separated list of CIDRs ("" is none).
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR", f)
		}
		out = append(out, p)
	}
	return out, nil
}
