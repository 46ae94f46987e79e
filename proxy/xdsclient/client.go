// Package xdsclient is the proxy's subscription to the Countersign control plane over Envoy's
// aggregated discovery service (ADS, state of the world, gRPC with mTLS). It accepts
// Clusters (EDS, with Countersign policy in typed metadata), ClusterLoadAssignments,
// Listeners (tcp_proxy or http_connection_manager with RDS; or inbound, carrying who may call
// the proxy's inbound listener on that port) and RouteConfigurations, checks
// each response, ACKs it or NACKs it with a reason, and publishes consistent States that the
// data path reads per connection or request. A pushed policy that would widen the floor
// pinned in the proxy's configuration is NACKed and reported. When the control plane is
// unreachable, the last good State stays in force.
package xdsclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/countersign/countersign/attestation/policy"
	"github.com/countersign/countersign/proxy/xdsmeta"
)

// Event reports the outcome of one response.
type Event struct {
	TypeURL string
	Version string
	// Err is nil when the response was accepted (ACK); otherwise the NACK's reason.
	Err error
	// Widening is true when Err is a *WidenError (a pushed policy wider than the floor).
	Widening bool
}

// Config configures a Client.
type Config struct {
	// Server is the control plane's host:port; TLS its client configuration (mTLS).
	Server string
	TLS    *tls.Config
	// NodeID identifies this proxy.
	NodeID string
	// Floor is the engine of the pinned policy.
	Floor *policy.Engine
	// Allowed returns the identities the named cluster may require (the floor per cluster).
	Allowed func(cluster string) []string
	// Inbound returns the name and pinned allow list of the proxy's inbound listener on port
	// (the floor for pushed inbound listeners); nil means the proxy has none.
	Inbound func(port uint16) (name string, allow []string, ok bool)
	// Node, if set, is sent as node metadata so the control plane can send only what this
	// proxy may accept (a hint: every resource is checked against the floor regardless).
	Node *xdsmeta.NodeInfo
	// MinBackoff and MaxBackoff bound reconnection delays.
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger
	// OnEvent, if set, is called after each response is accepted or rejected.
	OnEvent func(Event)
	// OnApply, if set, is called with each newly published State.
	OnApply func(*State)
	// Connected, if set, is called with true when a stream is up and false when it ends.
	Connected func(bool)
}

// Client is a running subscription.
type Client struct {
	cfg   Config
	state atomic.Pointer[State]

	// Owned by the stream goroutine.
	clusters  map[string]*Cluster
	endpoints map[string][]string
	listeners map[string]*listener
	inbound   map[uint16]*Inbound
	routes    map[string]string
	nodeMeta  *structpb.Struct
	versions  map[string]string
	nonces    map[string]string
	names     map[string][]string
}

// New returns a client; Run connects it.
func New(cfg Config) (*Client, error) {
	if cfg.Floor == nil || cfg.Allowed == nil || cfg.TLS == nil || cfg.Server == "" || cfg.NodeID == "" {
		return nil, errors.New("xdsclient: Server, TLS, NodeID, Floor and Allowed are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(10*time.Second, cfg.MinBackoff)
	}
	if cfg.Inbound == nil {
		cfg.Inbound = func(uint16) (string, []string, bool) { return "", nil, false }
	}
	c := &Client{
		cfg:       cfg,
		clusters:  map[string]*Cluster{},
		endpoints: map[string][]string{},
		listeners: map[string]*listener{},
		inbound:   map[uint16]*Inbound{},
		routes:    map[string]string{},
		versions:  map[string]string{},
		nonces:    map[string]string{},
		names:     map[string][]string{},
	}
	if cfg.Node != nil {
		md, err := xdsmeta.EncodeNode(*cfg.Node)
		if err != nil {
			return nil, fmt.Errorf("xdsclient: node metadata: %w", err)
		}
		c.nodeMeta = md
	}
	c.state.Store(&State{Versions: map[string]string{}, Clusters: map[string]*Cluster{}, Routes: map[netip.AddrPort]Route{}, Inbound: map[uint16]*Inbound{}})
	return c, nil
}

// State is the current consistent state (never nil).
func (c *Client) State() *State { return c.state.Load() }

// Run keeps a stream to the control plane until ctx ends, reconnecting with backoff. The
// last good State stays in force while disconnected.
func (c *Client) Run(ctx context.Context) {
	backoff := c.cfg.MinBackoff
	for ctx.Err() == nil {
		start := time.Now()
		err := c.stream(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > 30*time.Second {
			backoff = c.cfg.MinBackoff
		}
		c.cfg.Logger.Warn("control plane stream ended; serving on the last good configuration", "server", c.cfg.Server, "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, c.cfg.MaxBackoff)
	}
}

var typeOrder = []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType}

func (c *Client) stream(ctx context.Context) error {
	conn, err := grpc.NewClient(c.cfg.Server, grpc.WithTransportCredentials(credentials.NewTLS(c.cfg.TLS)))
	if err != nil {
		return err
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx)
	if err != nil {
		return err
	}
	// A new stream starts without nonces; the versions tell the server what we hold.
	c.nonces = map[string]string{}
	for _, t := range typeOrder {
		if t == resource.ClusterType || t == resource.ListenerType || len(c.names[t]) > 0 {
			if err := st.Send(c.request(t, c.versions[t], "", nil)); err != nil {
				return err
			}
		}
	}
	connected := false
	defer func() {
		if connected && c.cfg.Connected != nil {
			c.cfg.Connected(false)
		}
	}()
	for {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		if !connected {
			connected = true
			c.cfg.Logger.Info("control plane connected", "server", c.cfg.Server, "node", c.cfg.NodeID)
			if c.cfg.Connected != nil {
				c.cfg.Connected(true)
			}
		}
		if err := c.handle(st, resp); err != nil {
			return err
		}
	}
}

func (c *Client) request(typeURL, version, nonce string, detail error) *discoveryv3.DiscoveryRequest {
	r := &discoveryv3.DiscoveryRequest{
		Node:          &corev3.Node{Id: c.cfg.NodeID, UserAgentName: "countersign-proxy", Metadata: c.nodeMeta},
		TypeUrl:       typeURL,
		ResourceNames: c.names[typeURL],
		VersionInfo:   version,
		ResponseNonce: nonce,
	}
	if detail != nil {
		r.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: detail.Error()}
	}
	return r
}

type sender interface {
	Send(*discoveryv3.DiscoveryRequest) error
}

// handle checks one response, applies it or keeps the last good state, and answers.
func (c *Client) handle(st sender, resp *discoveryv3.DiscoveryResponse) error {
	t := resp.GetTypeUrl()
	c.nonces[t] = resp.GetNonce()
	var follow []string // types whose subscriptions changed
	var err error
	switch t {
	case resource.ClusterType:
		follow, err = c.onClusters(resp)
	case resource.EndpointType:
		err = c.onEndpoints(resp)
	case resource.ListenerType:
		follow, err = c.onListeners(resp)
	case resource.RouteType:
		err = c.onRoutes(resp)
	default:
		err = fmt.Errorf("type %s is not supported", t)
	}
	ev := Event{TypeURL: t, Version: resp.GetVersionInfo(), Err: err}
	if err != nil {
		var we *WidenError
		ev.Widening = errors.As(err, &we)
		c.cfg.Logger.Warn("xds: rejected a response; keeping the last good configuration", "type", short(t), "version", resp.GetVersionInfo(),
			"widens_floor", ev.Widening, "reason", err.Error())
		if serr := st.Send(c.request(t, c.versions[t], resp.GetNonce(), err)); serr != nil {
			return serr
		}
	} else {
		c.versions[t] = resp.GetVersionInfo()
		c.cfg.Logger.Debug("xds: accepted", "type", short(t), "version", resp.GetVersionInfo(), "resources", len(resp.GetResources()))
		if serr := st.Send(c.request(t, resp.GetVersionInfo(), resp.GetNonce(), nil)); serr != nil {
			return serr
		}
		c.publish()
		for _, ft := range follow {
			if serr := st.Send(c.request(ft, c.versions[ft], c.nonces[ft], nil)); serr != nil {
				return serr
			}
		}
	}
	if c.cfg.OnEvent != nil {
		c.cfg.OnEvent(ev)
	}
	return nil
}

func short(t string) string { return t[strings.LastIndexByte(t, '.')+1:] }

func (c *Client) onClusters(resp *discoveryv3.DiscoveryResponse) ([]string, error) {
	next := map[string]*Cluster{}
	for _, a := range resp.GetResources() {
		cl, err := decodeCluster(a, c.cfg.Floor, c.cfg.Allowed)
		if err != nil {
			return nil, err
		}
		if next[cl.Name] != nil {
			return nil, fmt.Errorf("cluster %s is listed twice", cl.Name)
		}
		next[cl.Name] = cl
	}
	c.clusters = next
	for n := range c.endpoints {
		if next[n] == nil {
			delete(c.endpoints, n)
		}
	}
	return c.subscribe(resource.EndpointType, keys(next)), nil
}

func (c *Client) onEndpoints(resp *discoveryv3.DiscoveryResponse) error {
	next := map[string][]string{}
	for _, a := range resp.GetResources() {
		name, eps, err := decodeEndpoints(a)
		if err != nil {
			return err
		}
		if _, dup := next[name]; dup {
			return fmt.Errorf("endpoints of %s are listed twice", name)
		}
		next[name] = eps
	}
	// State of the world: the response holds every subscribed cluster's assignment.
	c.endpoints = next
	return nil
}

func (c *Client) onListeners(resp *discoveryv3.DiscoveryResponse) ([]string, error) {
	next := map[string]*listener{}
	addrs := map[netip.AddrPort]string{}
	inbound := map[uint16]*Inbound{}
	var rds []string
	for _, a := range resp.GetResources() {
		l, err := decodeListener(a)
		if err != nil {
			return nil, err
		}
		if next[l.name] != nil {
			return nil, fmt.Errorf("listener %s is listed twice", l.name)
		}
		if l.inbound != nil {
			port := l.addr.Port()
			pinned, allow, ok := c.cfg.Inbound(port)
			if !ok {
				// Not a widening and nothing to apply: the Service's pods include proxies
				// configured differently from this one. Logged, not applied.
				c.cfg.Logger.Info("xds: inbound listener for a port this proxy does not serve; ignored", "listener", l.name, "port", port)
				continue
			}
			if prev := inbound[port]; prev != nil {
				return nil, fmt.Errorf("inbound listeners %s and %s both narrow the inbound listener %s on port %d", prev.Listener, l.name, pinned, port)
			}
			eng, err := NarrowInbound(c.cfg.Floor, allow, *l.inbound)
			if err != nil {
				return nil, fmt.Errorf("listener %s (inbound %s, port %d): %w", l.name, pinned, port, err)
			}
			inbound[port] = &Inbound{
				Listener: l.name,
				Pinned:   pinned,
				Port:     port,
				Allow:    slices.Clone(l.inbound.Allow),
				Engine:   eng,
			}
			next[l.name] = l
			continue
		}
		if prev, dup := addrs[l.addr]; dup {
			return nil, fmt.Errorf("listeners %s and %s both claim %s", prev, l.name, l.addr)
		}
		next[l.name], addrs[l.addr] = l, l.name
		if l.rds != "" && !slices.Contains(rds, l.rds) {
			rds = append(rds, l.rds)
		}
	}
	c.listeners = next
	c.inbound = inbound
	sort.Strings(rds)
	return c.subscribe(resource.RouteType, rds), nil
}

func (c *Client) onRoutes(resp *discoveryv3.DiscoveryResponse) error {
	next := map[string]string{}
	for _, a := range resp.GetResources() {
		name, cluster, err := decodeRoute(a)
		if err != nil {
			return err
		}
		next[name] = cluster
	}
	c.routes = next
	return nil
}

// subscribe sets the names subscribed for t and reports whether a new request is due.
func (c *Client) subscribe(t string, names []string) []string {
	if slices.Equal(c.names[t], names) {
		return nil
	}
	c.names[t] = names
	return []string{t}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// publish builds and stores a consistent State. A cluster is active once its endpoints have
// arrived (warming); a route is active once its cluster is.
func (c *Client) publish() {
	s := &State{Versions: map[string]string{}, Clusters: map[string]*Cluster{}, Routes: map[netip.AddrPort]Route{}, Inbound: map[uint16]*Inbound{}}
	old := c.state.Load()
	for p, in := range c.inbound {
		if prev := old.Inbound[p]; prev != nil && sameInbound(prev, in) {
			s.Inbound[p] = prev // unchanged: keep the engine, so connections see no change
			continue
		}
		s.Inbound[p] = in
	}
	for k, v := range c.versions {
		s.Versions[k] = v
	}
	for name, cl := range c.clusters {
		eps, ok := c.endpoints[name]
		if !ok {
			// Warming: keep serving the previous version of the cluster, if any.
			if prev := old.Clusters[name]; prev != nil {
				s.Clusters[name] = prev
			}
			continue
		}
		if prev := old.Clusters[name]; prev != nil && prev.Engine == cl.Engine && slices.Equal(prev.Endpoints, eps) && samePolicy(prev, cl) {
			s.Clusters[name] = prev // unchanged: keep its round-robin position
			continue
		}
		s.Clusters[name] = &Cluster{Name: name, Policy: cl.Policy, Engine: cl.Engine, Endpoints: eps}
	}
	for _, l := range c.listeners {
		if l.inbound != nil {
			continue
		}
		cluster := l.cluster
		if l.rds != "" {
			cluster = c.routes[l.rds]
		}
		if cluster == "" || s.Clusters[cluster] == nil {
			continue
		}
		s.Routes[l.addr] = Route{Listener: l.name, Addr: l.addr, Cluster: cluster}
	}
	c.state.Store(s)
	if c.cfg.OnApply != nil {
		c.cfg.OnApply(s)
	}
}

func samePolicy(a, b *Cluster) bool {
	return a.Policy.Protocol == b.Policy.Protocol && a.Policy.Authority == b.Policy.Authority && slices.Equal(a.Policy.Identities, b.Policy.Identities)
}

func sameInbound(a, b *Inbound) bool {
	return a.Listener == b.Listener && a.Pinned == b.Pinned && slices.Equal(a.Allow, b.Allow) && a.Engine == b.Engine
}
