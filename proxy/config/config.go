// Package config is the proxy's configuration: one YAML file (docs/proxy-config.md), decoded
// strictly, with defaults filled in and a Validate that names the field at fault.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/countersign/countersign/attestation/attester"
	"github.com/countersign/countersign/attestation/maa"
	"github.com/countersign/countersign/attestation/token"
	"github.com/countersign/countersign/internal/strictdecode"
)

// MaxConfigSize bounds the configuration file.
const MaxConfigSize = 1 << 20

// Protocols a listener speaks.
const (
	ProtocolHTTP = "http"
	ProtocolTCP  = "tcp"
)

// Config is the whole proxy configuration.
type Config struct {
	// Attester produces this proxy's quotes.
	Attester Attester `json:"attester"`
	// AttestationService is MAA or the local attestation service.
	AttestationService AttestationService `json:"attestationService"`
	// PolicyFile is the policy (docs/policy.md); relative to the config file.
	PolicyFile string `json:"policyFile"`
	// Identity is this proxy's own identity in the policy; its own token must satisfy it.
	Identity string `json:"identity"`
	// Claimed are labels put in the runtime data as claimed, not measured (e.g. the app image
	// digest).
	Claimed map[string]string `json:"claimed,omitempty"`
	// Refresh controls background token refresh.
	Refresh Refresh `json:"refresh"`
	// Inbound listeners terminate TLS and forward to the app on loopback.
	Inbound []Inbound `json:"inbound,omitempty"`
	// Outbound listeners are on loopback; the app dials them and the proxy carries the
	// traffic to an upstream proxy over attested mTLS.
	Outbound []Outbound `json:"outbound,omitempty"`
	// Admin is the admin listener (/healthz, /readyz, /metrics, /.well-known/attestation).
	Admin Admin `json:"admin"`
	// Limits bound connections, headers, bodies and timeouts.
	Limits Limits `json:"limits"`
	// Chain bounds the HTTP hop chain.
	Chain Chain `json:"chain"`
	// Transparent, if set, intercepts the app's traffic with iptables (docs/transparent.md).
	Transparent *Transparent `json:"transparent,omitempty"`
	// XDS, if set, subscribes to a control plane for upstreams and narrowed policy (docs/xds.md).
	XDS *XDS `json:"xds,omitempty"`
}

// Attester selects the attester.
type Attester struct {
	// Type is sgx or sim.
	Type string `json:"type"`
	// SimPlatformKey is the simulated platform private key file (sim only).
	SimPlatformKey string `json:"simPlatformKey,omitempty"`
	// SimIdentity are the measurements the simulated enclave claims (sim only).
	SimIdentity SimIdentity `json:"simIdentity,omitempty"`
}

// SimIdentity is what a simulated enclave claims; empty fields get the sim attester's defaults.
type SimIdentity struct {
	MREnclave string `json:"mrenclave,omitempty"`
	MRSigner  string `json:"mrsigner,omitempty"`
	ProductID uint16 `json:"productId,omitempty"`
	SVN       uint16 `json:"svn,omitempty"`
}

// AttestationService is where tokens come from.
type AttestationService struct {
	// URL is the base URL, https://host[:port].
	URL string `json:"url"`
	// CAFile optionally names PEM roots for the service's TLS certificate.
	CAFile string `json:"caFile,omitempty"`
	// Endpoint is SgxEnclave (default) or OpenEnclave.
	Endpoint string `json:"endpoint,omitempty"`
	// Timeout bounds one attest call (default 30s).
	Timeout Duration `json:"timeout,omitempty"`
}

// Refresh controls when a token is renewed.
type Refresh struct {
	// At is the fraction of the token's lifetime after which it is renewed (default 0.5).
	At float64 `json:"at,omitempty"`
	// Jitter is a random fraction of the lifetime added or removed (default 0.1).
	Jitter float64 `json:"jitter,omitempty"`
	// MinBackoff and MaxBackoff bound retries after a failed refresh (default 1s, 1m).
	MinBackoff Duration `json:"minBackoff,omitempty"`
	MaxBackoff Duration `json:"maxBackoff,omitempty"`
}

// Inbound is a listener that peers (or browsers, when public) call.
type Inbound struct {
	Name     string `json:"name"`
	Listen   string `json:"listen"`
	Protocol string `json:"protocol"`
	// ForwardTo is the app's address; it must be on loopback.
	ForwardTo string `json:"forwardTo"`
	// Allow are the policy identities allowed to call (attested listeners).
	Allow []string `json:"allow,omitempty"`
	// Public serves an ordinary certificate (CertFile, KeyFile) for browsers, without client
	// authentication; the proxy's token is then available at the admin listener.
	Public   bool   `json:"public,omitempty"`
	CertFile string `json:"certFile,omitempty"`
	KeyFile  string `json:"keyFile,omitempty"`
}

// Outbound is a loopback listener the app dials in plaintext.
type Outbound struct {
	Name     string `json:"name"`
	Listen   string `json:"listen"`
	Protocol string `json:"protocol"`
	// Upstream is the peer proxy's inbound listener, host:port. Exclusive with Cluster.
	Upstream string `json:"upstream,omitempty"`
	// Cluster names an xDS cluster whose endpoints are the upstreams (requires xds); the
	// cluster's identities, narrowed by the control plane, must be among UpstreamIdentity.
	Cluster string `json:"cluster,omitempty"`
	// UpstreamIdentity are the policy identities the upstream may prove (any one).
	UpstreamIdentity []string `json:"upstreamIdentity"`
	// Authority is the Host sent upstream (http only); default Upstream.
	Authority string `json:"authority,omitempty"`
}

// Admin is the admin listener.
type Admin struct {
	Listen string `json:"listen"`
}

// Limits bound resources.
type Limits struct {
	MaxConnections    int      `json:"maxConnections,omitempty"`    // per listener, default 1024
	MaxHeaderBytes    int      `json:"maxHeaderBytes,omitempty"`    // default 128 KiB
	MaxBodyBytes      int64    `json:"maxBodyBytes,omitempty"`      // request bodies, default 16 MiB
	MaxResponseBytes  int64    `json:"maxResponseBytes,omitempty"`  // countersigned responses are buffered; default 4 MiB
	DialTimeout       Duration `json:"dialTimeout,omitempty"`       // default 5s
	HandshakeTimeout  Duration `json:"handshakeTimeout,omitempty"`  // default 10s
	ReadHeaderTimeout Duration `json:"readHeaderTimeout,omitempty"` // default 10s
	IdleTimeout       Duration `json:"idleTimeout,omitempty"`       // default 2m (HTTP keep-alive, TCP idle)
	RequestTimeout    Duration `json:"requestTimeout,omitempty"`    // whole HTTP exchange upstream, default 60s
	ShutdownTimeout   Duration `json:"shutdownTimeout,omitempty"`   // drain, default 20s
}

// Chain bounds the hop chain.
type Chain struct {
	MaxHops  int      `json:"maxHops,omitempty"`  // default 8
	MaxBytes int      `json:"maxBytes,omitempty"` // chain + tokens headers, default 64 KiB
	Window   Duration `json:"window,omitempty"`   // replay window and maximum entry age skew, default 30s
	MaxAge   Duration `json:"maxAge,omitempty"`   // oldest first entry accepted, default 5m
	// Identities every hop must satisfy (any one); default: the listener's allow list.
	Identities []string `json:"identities,omitempty"`
	// SignVersion is the protocol version of the chain entries this proxy signs: 2 (default,
	// group signatures, docs/protocol.md section 10) or 1, for upstreams that predate v2.
	// Countersignatures answer in the version of the entry they answer.
	SignVersion int `json:"signVersion,omitempty"`
}

// Duration is a time.Duration written as "30s".
type Duration time.Duration

// D returns the duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalJSON accepts a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("expected a duration string such as \"30s\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("expected a non-negative duration such as \"30s\", got %q", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes a duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Load reads, decodes strictly, resolves relative paths against the file's directory, fills
// defaults and validates.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(b, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes, resolves paths relative to baseDir, fills defaults and validates.
func Parse(b []byte, baseDir string) (*Config, error) {
	if len(b) > MaxConfigSize {
		return nil, fmt.Errorf("%d bytes, at most %d allowed", len(b), MaxConfigSize)
	}
	var c Config
	if err := strictdecode.YAML(b, &c); err != nil {
		return nil, fmt.Errorf("not a valid configuration: %w", err)
	}
	rel := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) && baseDir != "" {
			*p = filepath.Join(baseDir, *p)
		}
	}
	rel(&c.Attester.SimPlatformKey)
	rel(&c.AttestationService.CAFile)
	rel(&c.PolicyFile)
	for i := range c.Inbound {
		rel(&c.Inbound[i].CertFile)
		rel(&c.Inbound[i].KeyFile)
	}
	if c.XDS != nil {
		rel(&c.XDS.CAFile)
		rel(&c.XDS.CertFile)
		rel(&c.XDS.KeyFile)
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// SetDefaults fills zero fields.
func (c *Config) SetDefaults() {
	def := func(d *Duration, v time.Duration) {
		if *d == 0 {
			*d = Duration(v)
		}
	}
	if c.AttestationService.Endpoint == "" {
		c.AttestationService.Endpoint = string(maa.EndpointSgxEnclave)
	}
	def(&c.AttestationService.Timeout, 30*time.Second)
	if c.Refresh.At == 0 {
		c.Refresh.At = 0.5
	}
	if c.Refresh.Jitter == 0 {
		c.Refresh.Jitter = 0.1
	}
	def(&c.Refresh.MinBackoff, time.Second)
	def(&c.Refresh.MaxBackoff, time.Minute)
	l := &c.Limits
	if l.MaxConnections == 0 {
		l.MaxConnections = 1024
	}
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = 128 << 10
	}
	if l.MaxBodyBytes == 0 {
		l.MaxBodyBytes = 16 << 20
	}
	if l.MaxResponseBytes == 0 {
		l.MaxResponseBytes = 4 << 20
	}
	def(&l.DialTimeout, 5*time.Second)
	def(&l.HandshakeTimeout, 10*time.Second)
	def(&l.ReadHeaderTimeout, 10*time.Second)
	def(&l.IdleTimeout, 2*time.Minute)
	def(&l.RequestTimeout, 60*time.Second)
	def(&l.ShutdownTimeout, 20*time.Second)
	if c.Chain.MaxHops == 0 {
		c.Chain.MaxHops = 8
	}
	if c.Chain.MaxBytes == 0 {
		c.Chain.MaxBytes = 64 << 10
	}
	def(&c.Chain.Window, 30*time.Second)
	def(&c.Chain.MaxAge, 5*time.Minute)
	c.setMeshDefaults()
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`)

// Validate checks the configuration (after SetDefaults). Every error names its field.
func (c *Config) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	switch c.Attester.Type {
	case attester.NameSim:
		if c.Attester.SimPlatformKey == "" {
			add("attester.simPlatformKey", "required with type sim (make one with `proxy sim-platform-key --out FILE`)")
		}
		for _, m := range []struct{ field, v string }{{"mrenclave", c.Attester.SimIdentity.MREnclave}, {"mrsigner", c.Attester.SimIdentity.MRSigner}} {
			if m.v != "" {
				if _, err := attester.ParseMeasurement(m.v); err != nil {
					add("attester.simIdentity."+m.field, "%v", err)
				}
			}
		}
	case attester.NameSGX:
		if c.Attester.SimPlatformKey != "" || c.Attester.SimIdentity != (SimIdentity{}) {
			add("attester.simPlatformKey", "sim settings given with type sgx")
		}
	case "":
		add("attester.type", "required: sgx or sim")
	default:
		add("attester.type", "%q, expected sgx or sim", c.Attester.Type)
	}
	if c.AttestationService.URL == "" {
		add("attestationService.url", "required (https://host[:port])")
	} else if err := token.ValidateIssuerURL(c.AttestationService.URL); err != nil {
		// Plain http would let anyone on the path hand the proxy keys and tokens; the proxy
		// would then run unready forever, so it refuses to start instead.
		add("attestationService.url", "%q, expected https://host[:port] (TLS is required; no path)", c.AttestationService.URL)
	}
	switch maa.Endpoint(c.AttestationService.Endpoint) {
	case maa.EndpointSgxEnclave, maa.EndpointOpenEnclave:
	default:
		add("attestationService.endpoint", "%q, expected SgxEnclave or OpenEnclave", c.AttestationService.Endpoint)
	}
	if c.PolicyFile == "" {
		add("policyFile", "required (see docs/policy.md)")
	}
	if c.Identity == "" {
		add("identity", "required: this proxy's identity name in the policy")
	} else if !nameRE.MatchString(c.Identity) {
		add("identity", "%q is not an identity name", c.Identity)
	}
	if len(c.Claimed) > maa.MaxClaimedEntries {
		add("claimed", "%d labels, at most %d allowed", len(c.Claimed), maa.MaxClaimedEntries)
	}
	if c.Refresh.At <= 0 || c.Refresh.At >= 1 {
		add("refresh.at", "%v, expected a fraction of the token lifetime between 0 and 1", c.Refresh.At)
	}
	if c.Refresh.Jitter < 0 || c.Refresh.Jitter >= c.Refresh.At || c.Refresh.At+c.Refresh.Jitter >= 1 {
		add("refresh.jitter", "%v, expected 0 <= jitter < at and at+jitter < 1", c.Refresh.Jitter)
	}
	if c.Refresh.MaxBackoff < c.Refresh.MinBackoff {
		add("refresh.maxBackoff", "%s is less than minBackoff %s", c.Refresh.MaxBackoff.D(), c.Refresh.MinBackoff.D())
	}
	if len(c.Inbound)+len(c.Outbound) == 0 && c.Transparent == nil {
		add("inbound", "no listeners: at least one inbound or outbound listener is required")
	}
	names := map[string]string{}
	addrs := map[string]string{}
	listener := func(field, name, listen, proto string) {
		if !nameRE.MatchString(name) {
			add(field+".name", "%q, expected lowercase letters, digits, '.', '_' or '-'", name)
		} else if prev, dup := names[name]; dup {
			add(field+".name", "%q is also the name of %s", name, prev)
		} else {
			names[name] = field
		}
		if _, _, err := net.SplitHostPort(listen); err != nil {
			add(field+".listen", "%q is not host:port", listen)
		} else if prev, dup := addrs[listen]; dup && !strings.HasSuffix(listen, ":0") {
			add(field+".listen", "%q is also the address of %s", listen, prev)
		} else {
			addrs[listen] = field
		}
		if proto != ProtocolHTTP && proto != ProtocolTCP {
			add(field+".protocol", "%q, expected http or tcp", proto)
		}
	}
	for i, in := range c.Inbound {
		f := fmt.Sprintf("inbound[%d]", i)
		listener(f, in.Name, in.Listen, in.Protocol)
		if err := loopback(in.ForwardTo); err != nil {
			add(f+".forwardTo", "%v", err)
		}
		if in.Public {
			if in.CertFile == "" || in.KeyFile == "" {
				add(f+".certFile", "a public listener needs certFile and keyFile (an ordinary certificate browsers trust)")
			}
			if len(in.Allow) > 0 {
				add(f+".allow", "a public listener does not authenticate callers; remove allow or public")
			}
			if in.Protocol != ProtocolHTTP {
				add(f+".public", "public listeners serve http only")
			}
		} else {
			if len(in.Allow) == 0 {
				add(f+".allow", "required: the policy identities allowed to call (or public: true)")
			}
			if in.CertFile != "" || in.KeyFile != "" {
				add(f+".certFile", "only public listeners use certificate files; attested listeners use the enclave's certificate")
			}
		}
		for j, a := range in.Allow {
			if !nameRE.MatchString(a) {
				add(fmt.Sprintf("%s.allow[%d]", f, j), "%q is not an identity name", a)
			}
		}
	}
	for i, out := range c.Outbound {
		f := fmt.Sprintf("outbound[%d]", i)
		listener(f, out.Name, out.Listen, out.Protocol)
		if out.Listen != "" {
			if err := loopback(out.Listen); err != nil {
				add(f+".listen", "%v (the app dials outbound listeners in plaintext)", err)
			}
		}
		switch {
		case out.Cluster != "" && out.Upstream != "":
			add(f+".cluster", "set together with upstream; use one or the other")
		case out.Cluster != "":
			if c.XDS == nil {
				add(f+".cluster", "%q needs a control plane: set xds", out.Cluster)
			}
		default:
			if _, _, err := net.SplitHostPort(out.Upstream); err != nil {
				add(f+".upstream", "%q is not host:port", out.Upstream)
			}
		}
		if len(out.UpstreamIdentity) == 0 {
			add(f+".upstreamIdentity", "required: the policy identities the upstream must prove")
		}
		for j, a := range out.UpstreamIdentity {
			if !nameRE.MatchString(a) {
				add(fmt.Sprintf("%s.upstreamIdentity[%d]", f, j), "%q is not an identity name", a)
			}
		}
	}
	if c.Admin.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Admin.Listen); err != nil {
			add("admin.listen", "%q is not host:port", c.Admin.Listen)
		} else if prev, dup := addrs[c.Admin.Listen]; dup && !strings.HasSuffix(c.Admin.Listen, ":0") {
			add("admin.listen", "%q is also the address of %s", c.Admin.Listen, prev)
		}
	}
	l := c.Limits
	if l.MaxConnections < 1 {
		add("limits.maxConnections", "%d, expected at least 1", l.MaxConnections)
	}
	if l.MaxHeaderBytes < 4096 {
		add("limits.maxHeaderBytes", "%d, expected at least 4096", l.MaxHeaderBytes)
	}
	if l.MaxBodyBytes < 1 {
		add("limits.maxBodyBytes", "%d, expected at least 1", l.MaxBodyBytes)
	}
	if l.MaxResponseBytes < 1 {
		add("limits.maxResponseBytes", "%d, expected at least 1", l.MaxResponseBytes)
	}
	if c.Chain.SignVersion != 0 && c.Chain.SignVersion != 1 && c.Chain.SignVersion != 2 {
		add("chain.signVersion", "%d, expected 1 or 2", c.Chain.SignVersion)
	}
	if c.Chain.MaxHops < 1 || c.Chain.MaxHops > 32 {
		add("chain.maxHops", "%d, expected 1 to 32", c.Chain.MaxHops)
	}
	if c.Chain.MaxBytes < 4096 || c.Chain.MaxBytes > l.MaxHeaderBytes {
		add("chain.maxBytes", "%d, expected at least 4096 and at most limits.maxHeaderBytes (%d)", c.Chain.MaxBytes, l.MaxHeaderBytes)
	}
	if c.Chain.MaxAge < c.Chain.Window {
		add("chain.maxAge", "%s is shorter than chain.window %s", c.Chain.MaxAge.D(), c.Chain.Window.D())
	}
	for j, a := range c.Chain.Identities {
		if !nameRE.MatchString(a) {
			add(fmt.Sprintf("chain.identities[%d]", j), "%q is not an identity name", a)
		}
	}
	errs = append(errs, c.validateTransparent(addrs, names)...)
	errs = append(errs, c.validateXDS()...)
	return errors.Join(errs...)
}

// loopback requires host:port with a loopback IP or "localhost".
func loopback(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address (127.0.0.0/8, ::1 or localhost)", addr)
	}
	return nil
}
