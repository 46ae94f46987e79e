package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"strconv"

	"github.com/countersign/countersign/internal/cmdexit"
	"github.com/countersign/countersign/proxy/config"
	"github.com/countersign/countersign/proxy/transparent"
)

func runIptables(ctx context.Context, args []string, s Streams) error {
	fs := newFlagSet("iptables", s)
	cfgFile := fs.String("config", "", "read ports, UID and exclusions from the transparent section of this proxy configuration (flags given explicitly override it)")
	uid := fs.Int("proxy-uid", config.DefaultProxyUID, "UID the proxy runs as; its own traffic is not redirected")
	in := fs.Int("inbound-port", 15006, "the proxy's inbound interception port")
	out := fs.Int("outbound-port", 15001, "the proxy's outbound interception port")
	exIn := fs.String("exclude-inbound-ports", "", "comma-separated ports reached without the proxy (e.g. the admin port for probes)")
	exOut := fs.String("exclude-outbound-ports", "", "comma-separated destination ports reached without the proxy")
	exCIDR := fs.String("exclude-outbound-cidrs", "", "comma-separated destination CIDRs reached without the proxy")
	ipv6 := fs.Bool("ipv6", false, "only ip6tables (default: iptables, and ip6tables as well when the network namespace has IPv6)")
	dry := fs.Bool("dry-run", false, "print the iptables-restore input and change nothing")
	remove := fs.Bool("remove", false, "remove the Countersign chains instead of installing them")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	r := transparent.Rules{ProxyUID: *uid, InboundPort: *in, OutboundPort: *out, IPv6: *ipv6}
	set := map[string]bool{}
	fs.Visit(func(f *flagT) { set[f.Name] = true })
	if *cfgFile != "" {
		c, err := config.Load(*cfgFile)
		if err != nil {
			return cmdexit.Usagef("%v", err)
		}
		t := c.Transparent
		if t == nil {
			return cmdexit.Usagef("%s has no transparent section", *cfgFile)
		}
		if !set["proxy-uid"] {
			r.ProxyUID = t.ProxyUID
		}
		if !set["inbound-port"] {
			if r.InboundPort, err = portOf(t.InboundListen); err != nil {
				return cmdexit.Usagef("transparent.inboundListen: %v", err)
			}
		}
		if !set["outbound-port"] {
			if r.OutboundPort, err = portOf(t.OutboundListen); err != nil {
				return cmdexit.Usagef("transparent.outboundListen: %v", err)
			}
		}
		r.ExcludeInboundPorts, r.ExcludeOutboundPorts = t.ExcludeInboundPorts, t.ExcludeOutboundPorts
		for _, c := range t.ExcludeOutboundCIDRs {
			p, err := transparent.ParseCIDRs(c)
			if err != nil {
				return cmdexit.Usagef("transparent.excludeOutboundCidrs: %v", err)
			}
			r.ExcludeOutboundCIDRs = append(r.ExcludeOutboundCIDRs, p...)
		}
	}
	var err error
	if set["exclude-inbound-ports"] || *cfgFile == "" {
		if r.ExcludeInboundPorts, err = transparent.ParsePorts(*exIn); err != nil {
			return cmdexit.Usagef("--exclude-inbound-ports: %v", err)
		}
	}
	if set["exclude-outbound-ports"] || *cfgFile == "" {
		if r.ExcludeOutboundPorts, err = transparent.ParsePorts(*exOut); err != nil {
			return cmdexit.Usagef("--exclude-outbound-ports: %v", err)
		}
	}
	if set["exclude-outbound-cidrs"] || *cfgFile == "" {
		if r.ExcludeOutboundCIDRs, err = transparent.ParseCIDRs(*exCIDR); err != nil {
			return cmdexit.Usagef("--exclude-outbound-cidrs: %v", err)
		}
	}
	// One rule set per address family. Without --ipv6 the IPv4 rules are installed, and when
	// the namespace has IPv6 the same rules for ip6tables too: otherwise the app's IPv6
	// traffic, in and out, would bypass the proxy. The proxy's interception listeners are
	// IPv4, so redirected IPv6 connections are refused: fail closed (docs/transparent.md).
	sets := []transparent.Rules{r}
	if !*ipv6 && transparent.HasIPv6() {
		sets = append(sets, r)
	}
	for i := range sets {
		if i == 1 || *ipv6 {
			sets[i].IPv6 = true
		}
		sets[i].ExcludeOutboundCIDRs = transparent.OfFamily(r.ExcludeOutboundCIDRs, sets[i].IPv6)
		if err := sets[i].Validate(); err != nil {
			return cmdexit.Usagef("%v", err)
		}
	}
	if !*ipv6 && len(transparent.OfFamily(r.ExcludeOutboundCIDRs, true)) > 0 && len(sets) == 1 {
		fmt.Fprintln(s.Err, "countersign: IPv6 excluded CIDRs ignored: this network namespace has no IPv6")
	}
	if *remove && !*dry {
		return removeRules(ctx, r, *ipv6, s)
	}
	for _, set := range sets {
		switch {
		case *dry:
			fmt.Fprint(s.Out, set.Render())
		default:
			if err := set.Apply(ctx, nil); err != nil {
				return err
			}
			fmt.Fprintf(s.Err, "countersign: %s interception installed (inbound -> :%d, outbound -> :%d, proxy UID %d excluded)\n",
				map[bool]string{false: "IPv4", true: "IPv6"}[set.IPv6], set.InboundPort, set.OutboundPort, set.ProxyUID)
		}
	}
	return nil
}

// removeRules removes the interception of each address family (IPv6 only with --ipv6; else
// IPv4 and IPv6, whether or not the namespace has IPv6 now, since it may have had it at install
// time). Absent rules are not an error, so removal is idempotent; a family whose nat table
// cannot be listed is an error, except IPv6 in a namespace without IPv6 (nothing can be
// installed there). Each family is attempted even when the other fails.
func removeRules(ctx context.Context, r transparent.Rules, onlyV6 bool, s Streams) error {
	var errs []error
	families := []bool{false, true}
	if onlyV6 {
		families = []bool{true}
	}
	for _, v6 := range families {
		set := r
		set.IPv6 = v6
		name := map[bool]string{false: "IPv4", true: "IPv6"}[v6]
		found, err := set.Remove(ctx, nil)
		switch {
		case err != nil && v6 && !onlyV6 && !transparent.HasIPv6():
			fmt.Fprintf(s.Err, "countersign: IPv6 interception not present: this network namespace has no IPv6 (%v)\n", err)
		case err != nil:
			errs = append(errs, fmt.Errorf("removing the %s interception: %w", name, err))
		case found:
			fmt.Fprintf(s.Err, "countersign: %s interception removed\n", name)
		default:
			fmt.Fprintf(s.Err, "countersign: %s interception not present; nothing to remove\n", name)
		}
	}
	return errors.Join(errs...)
}

type flagT = flag.Flag

func portOf(addr string) (int, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(p)
}
