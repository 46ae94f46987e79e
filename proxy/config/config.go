// Package config is the proxy's configuration: one YAML file (docs/proxy-config.md), decoded
// strictly, with defaults filled in and a Validate that names the field at fault.
package config

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/countersign/countersign/attestation/maa"
	"github.com/countersign/countersign/internal/strictdecode"
)

// MaxConfigSize bounds the configuration file.
const MaxConfigSize = 1 << 20

// Protocols a listener speaks.
const (
	ProtocolHTTP = "http"
	ProtocolTCP  = "tcp"
	// ProtocolHTTP2 carries HTTP/2: h2c with prior knowledge to and from the app, ALPN h2
	// (falling back to http/1.1) between proxies (docs/protocol.md section 11).
	ProtocolHTTP2 = "http2"
	// ProtocolGRPC is ProtocolHTTP2 whose rejections are gRPC statuses.
	ProtocolGRPC = "grpc"
)

// IsHTTP2 reports whether a listener protocol carries HTTP/2.
func IsHTTP2(protocol string) bool { return protocol == ProtocolHTTP2 || protocol == ProtocolGRPC }

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
	MREnclave Measurement `json:"mrenclave,omitzero"`
	MRSigner  Measurement `json:"mrsigner,omitzero"`
	ProductID uint16      `json:"productId,omitempty"`
	SVN       uint16      `json:"svn,omitempty"`
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
	MaxConnections   int   `json:"maxConnections,omitempty"`   // per listener, default 1024
	MaxHeaderBytes   int   `json:"maxHeaderBytes,omitempty"`   // default 128 KiB
	MaxBodyBytes     int64 `json:"maxBodyBytes,omitempty"`     // request bodies, default 16 MiB
	MaxResponseBytes int64 `json:"maxResponseBytes,omitempty"` // countersigned responses are buffered; default 4 MiB
	// HTTP/2 listeners (http2, grpc): streams open per connection (default 100) and the
	// largest frame accepted (SETTINGS_MAX_FRAME_SIZE, default 16384).
	MaxConcurrentStreams int      `json:"maxConcurrentStreams,omitempty"`
	MaxFrameBytes        int      `json:"maxFrameBytes,omitempty"`
	DialTimeout          Duration `json:"dialTimeout,omitempty"`       // default 5s
	HandshakeTimeout     Duration `json:"handshakeTimeout,omitempty"`  // default 10s
	ReadHeaderTimeout    Duration `json:"readHeaderTimeout,omitempty"` // default 10s
	IdleTimeout          Duration `json:"idleTimeout,omitempty"`       // default 2m (HTTP keep-alive, TCP idle)
	RequestTimeout       Duration `json:"requestTimeout,omitempty"`    // whole HTTP exchange upstream, default 60s
	ShutdownTimeout      Duration `json:"shutdownTimeout,omitempty"`   // drain, default 20s
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
	// PeerSignatures says how the live path checks the statements the connected peer signed
	// itself (the last chain entry, the countersignature): "verify" (default) checks their
	// ECDSA signatures; "channel" relies on the attested TLS connection they arrived on and
	// verifies a countersignature only when the app asked for a receipt
	// (docs/protocol.md section 8, "Peer signatures").
	PeerSignatures string `json:"peerSignatures,omitempty"`
}

// Peer signature modes (Chain.PeerSignatures).
const (
	PeerSignaturesVerify  = "verify"
	PeerSignaturesChannel = "channel"
)

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
	if l.MaxConcurrentStreams == 0 {
		l.MaxConcurrentStreams = 100
	}
	if l.MaxFrameBytes == 0 {
		l.MaxFrameBytes = 16 << 10
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
	if c.Chain.PeerSignatures == "" {
		c.Chain.PeerSignatures = PeerSignaturesVerify
	}
	def(&c.Chain.Window, 30*time.Second)
	def(&c.Chain.MaxAge, 5*time.Minute)
	c.setMeshDefaults()
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
