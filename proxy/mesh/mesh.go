// Package mesh is the proxy's side of the control plane (docs/xds.md): the xDS subscription
// with its counters, the policy it narrows for attested inbound listeners, and cluster routing
// for outbound listeners and redirected connections: an httpproxy.Outbound per (endpoint,
// policy), pruned when the state changes, and attested dials to a cluster's endpoints.
//
// It links the Envoy and gRPC types; the lean proxy build (-tags noxds) leaves it out, and
// proxy/server then refuses a configuration that names a control plane.
package mesh

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/attestation/policy"
	"github.com/countersign/countersign/proxy/attestedtls"
	"github.com/countersign/countersign/proxy/config"
	"github.com/countersign/countersign/proxy/httpproxy"
	"github.com/countersign/countersign/proxy/identity"
	"github.com/countersign/countersign/proxy/metrics"
	"github.com/countersign/countersign/proxy/tcpproxy"
	"github.com/countersign/countersign/proxy/xdsclient"
	"github.com/countersign/countersign/proxy/xdsmeta"
)

// Reason codes of cluster routing.
const (
	// CodeNoEndpoints: the cluster is unknown or has no endpoints (yet).
	CodeNoEndpoints attestation.Code = "no_endpoints"
)

// Config is what the mesh needs of the proxy.
type Config struct {
	Proxy    *config.Config
	Engine   *policy.Engine // the pinned floor
	Identity *identity.Source
	Metrics  *metrics.Metrics
	Logger   *slog.Logger
	// Deps are the HTTP data path's shared dependencies; a cluster's handlers copy them with
	// the cluster's narrowed engine.
	Deps *httpproxy.Deps
	// ConnGauge returns the open-connections gauge of a listener.
	ConnGauge func(listener string) func(int)
}

// Mesh is a running subscription to the control plane.
type Mesh struct {
	cfg      Config
	xds      *xdsclient.Client
	handlers sync.Map // handlerKey -> *httpproxy.Outbound
	// inbound are the attested inbound listeners by the port the control plane names them by;
	// filled before Run, read-only after.
	inbound map[uint16]config.Inbound
}

type handlerKey struct {
	listener, endpoint, authority, ids string
	checker                            attestedtls.Checker
}

// New builds the client for the xds section of the configuration (config.CheckPolicy has
// checked its identities against the policy); it registers the
// xDS counters with the proxy's registry.
func New(c Config) (*Mesh, error) {
	x := c.Proxy.XDS
	tlsCfg, err := clientTLS(x)
	if err != nil {
		return nil, err
	}
	m := &Mesh{cfg: c, inbound: map[uint16]config.Inbound{}}
	floors := map[string][]string{}
	node := &xdsmeta.NodeInfo{Identity: c.Proxy.Identity, UpstreamIdentities: x.UpstreamIdentities}
	for _, out := range c.Proxy.Outbound {
		if out.Cluster != "" {
			floors[out.Cluster] = out.UpstreamIdentity
			node.Clusters = append(node.Clusters, out.Cluster)
		}
	}
	updates := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "countersign_xds_updates_total", Help: "xDS responses, by resource type and result (ack, nack, widening).",
	}, []string{"type", "result"})
	connected := prometheus.NewGauge(prometheus.GaugeOpts{Name: "countersign_xds_connected", Help: "1 while a stream to the control plane is up."})
	c.Metrics.Registry.MustRegister(updates, connected)
	m.xds, err = xdsclient.New(xdsclient.Config{
		Server: x.Server,
		TLS:    tlsCfg,
		NodeID: x.NodeID,
		Floor:  c.Engine,
		Logger: c.Logger,
		Node:   node,
		Inbound: func(port uint16) (string, []string, bool) {
			in, ok := m.inbound[port]
			return in.Name, in.Allow, ok
		},
		MinBackoff: x.MinBackoff.D(),
		MaxBackoff: x.MaxBackoff.D(),
		Allowed: func(cluster string) []string {
			if ids, ok := floors[cluster]; ok {
				return ids
			}
			return x.UpstreamIdentities
		},
		OnEvent: func(ev xdsclient.Event) {
			res := "ack"
			switch {
			case ev.Widening:
				res = "widening"
			case ev.Err != nil:
				res = "nack"
			}
			updates.WithLabelValues(ev.TypeURL[strings.LastIndexByte(ev.TypeURL, '.')+1:], res).Inc()
		},
		OnApply: m.pruneHandlers,
		Connected: func(up bool) {
			if up {
				connected.Set(1)
			} else {
				connected.Set(0)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

func clientTLS(x *config.XDS) (*tls.Config, error) {
	ca, err := os.ReadFile(x.CAFile)
	if err != nil {
		return nil, fmt.Errorf("xds.caFile: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("xds.caFile: no PEM certificate in %s", x.CAFile)
	}
	cert, err := tls.LoadX509KeyPair(x.CertFile, x.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("xds.certFile/keyFile: %w", err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: x.ServerName}, nil
}

// Client returns the xDS client.
func (m *Mesh) Client() *xdsclient.Client { return m.xds }

// Run keeps the subscription until ctx ends. Call it once every inbound listener has been
// registered through LivePolicy.
func (m *Mesh) Run(ctx context.Context) { m.xds.Run(ctx) }

// LivePolicy registers an attested inbound listener under port (the key the control plane
// names it by) and returns the policy in force for its callers: the pushed narrowing of its
// allow list when there is one, otherwise the pinned floor.
func (m *Mesh) LivePolicy(in config.Inbound, port uint16) func() (attestedtls.Checker, []string) {
	if _, dup := m.inbound[port]; !dup {
		m.inbound[port] = in
	}
	floor, allow := m.cfg.Engine, in.Allow
	return func() (attestedtls.Checker, []string) {
		if p := m.xds.State().InboundOn(port); p != nil && p.Pinned == in.Name {
			return p.Engine, p.Allow
		}
		return floor, allow
	}
}

// Route tells whether the control plane routes a redirected connection's original
// destination, and whether that route is HTTP.
func (m *Mesh) Route(dst netip.AddrPort) (ok, isHTTP bool) {
	cl, ok := m.xds.State().RouteTo(dst)
	if !ok {
		return false, false
	}
	return true, cl.Policy.Protocol == xdsmeta.ProtocolHTTP
}

// ServeRoute forwards a redirected HTTP request to the cluster its original destination
// routes to.
func (m *Mesh) ServeRoute(w http.ResponseWriter, r *http.Request, listener string, dst netip.AddrPort) {
	cl, ok := m.xds.State().RouteTo(dst)
	if !ok {
		m.cfg.Deps.Reject(w, r, listener, http.StatusServiceUnavailable, attestation.Rejectf(CodeNoEndpoints, "the route to %s is gone", dst))
		return
	}
	m.ServeCluster(w, r, listener, cl.Name, "", nil)
}

// PipeRoute carries a redirected TCP connection to the cluster its original destination
// routes to.
func (m *Mesh) PipeRoute(ctx context.Context, c net.Conn, listener string, dst netip.AddrPort) {
	cl, ok := m.xds.State().RouteTo(dst)
	if !ok {
		m.cfg.Metrics.Reject(listener, CodeNoEndpoints)
		c.Close()
		return
	}
	m.pipeCluster(ctx, c, listener, cl.Name, nil)
}

// Outbound returns the handler (HTTP) or the dial function (TCP) of an outbound listener
// whose upstreams are an xDS cluster.
func (m *Mesh) Outbound(out config.Outbound) (http.Handler, func(ctx context.Context) (net.Conn, error)) {
	if out.Protocol == config.ProtocolTCP {
		return nil, func(ctx context.Context) (net.Conn, error) {
			return m.DialCluster(ctx, out.Name, out.Cluster, out.UpstreamIdentity)
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.ServeCluster(w, r, out.Name, out.Cluster, out.Authority, out.UpstreamIdentity)
	}), nil
}

// clusterNow returns the cluster's current state, re-checking (defence in depth) that its
// identities are within floor when the listener pins one.
func (m *Mesh) clusterNow(name string, floor []string) (*xdsclient.Cluster, *attestation.Rejection) {
	cl := m.xds.State().Cluster(name)
	if cl == nil {
		return nil, attestation.Rejectf(CodeNoEndpoints, "cluster %s is not known (yet) from the control plane", name)
	}
	for _, id := range cl.Policy.Identities {
		if floor != nil && !slices.Contains(floor, id) {
			return nil, attestation.Rejectf(attestation.CodeNoIdentity, "cluster %s names identity %q outside this listener's upstreamIdentity", name, id)
		}
	}
	return cl, nil
}

// ServeCluster forwards one request to the next endpoint of the cluster, through an
// httpproxy.Outbound per (endpoint, policy): a request in flight keeps its handler and
// connection when the cluster changes.
func (m *Mesh) ServeCluster(w http.ResponseWriter, r *http.Request, listener, cluster, authority string, floor []string) {
	cl, rej := m.clusterNow(cluster, floor)
	if rej != nil {
		m.cfg.Deps.Reject(w, r, listener, http.StatusServiceUnavailable, rej)
		return
	}
	ep, ok := cl.Pick()
	if !ok {
		m.cfg.Deps.Reject(w, r, listener, http.StatusServiceUnavailable, attestation.Rejectf(CodeNoEndpoints, "cluster %s has no endpoints", cluster))
		return
	}
	if authority == "" {
		authority = cl.Policy.Authority
	}
	k := handlerKey{
		listener:  listener,
		endpoint:  ep,
		authority: authority,
		ids:       strings.Join(cl.Policy.Identities, ","),
		checker:   cl.Engine,
	}
	h, ok := m.handlers.Load(k)
	if !ok {
		d := *m.cfg.Deps
		d.Checker = cl.Engine
		h, _ = m.handlers.LoadOrStore(k, httpproxy.NewOutbound(&d, config.Outbound{
			Name:             listener,
			Protocol:         config.ProtocolHTTP,
			Upstream:         ep,
			UpstreamIdentity: cl.Policy.Identities,
			Authority:        authority,
		}))
	}
	h.(*httpproxy.Outbound).ServeHTTP(w, r)
}

// pruneHandlers drops the handlers of endpoints and policies no longer in the state and
// closes their idle connections.
func (m *Mesh) pruneHandlers(st *xdsclient.State) {
	live := map[string]bool{}
	for _, cl := range st.Clusters {
		for _, ep := range cl.Endpoints {
			live[ep+"|"+strings.Join(cl.Policy.Identities, ",")] = true
		}
	}
	m.handlers.Range(func(k, v any) bool {
		hk := k.(handlerKey)
		stale := !live[hk.endpoint+"|"+hk.ids]
		if !stale {
			stale = true
			for _, cl := range st.Clusters {
				if cl.Engine == hk.checker {
					stale = false
					break
				}
			}
		}
		if stale {
			m.handlers.Delete(k)
			v.(*httpproxy.Outbound).CloseIdleConnections()
		}
		return true
	})
}

// DialCluster opens an attested connection to the next endpoint of the cluster.
func (m *Mesh) DialCluster(ctx context.Context, listener, cluster string, floor []string) (net.Conn, error) {
	if !m.cfg.Identity.Ready() {
		return nil, attestation.Rejectf(httpproxy.CodeNoIdentity, "%v", identity.ErrNoIdentity)
	}
	cl, rej := m.clusterNow(cluster, floor)
	if rej != nil {
		m.cfg.Metrics.Reject(listener, rej.Code)
		return nil, rej
	}
	ep, ok := cl.Pick()
	if !ok {
		rej := attestation.Rejectf(CodeNoEndpoints, "cluster %s has no endpoints", cluster)
		m.cfg.Metrics.Reject(listener, rej.Code)
		return nil, rej
	}
	host, _, _ := net.SplitHostPort(ep)
	d := attestedtls.Dialer(m.cfg.Identity, cl.Engine, host, m.cfg.Proxy.Limits.DialTimeout.D(), attestedtls.Options{
		Listener: listener, Identities: cl.Policy.Identities, Logger: m.cfg.Logger,
		OnReject: func(l string, rej *attestation.Rejection) { m.cfg.Metrics.Reject(l, rej.Code) },
	})
	return d.DialContext(ctx, "tcp", ep)
}

// pipeCluster carries a redirected TCP connection to the cluster.
func (m *Mesh) pipeCluster(ctx context.Context, c net.Conn, listener, cluster string, floor []string) {
	defer c.Close()
	l := m.cfg.Proxy.Limits
	dctx, cancel := context.WithTimeout(ctx, l.HandshakeTimeout.D())
	up, err := m.DialCluster(dctx, listener, cluster, floor)
	cancel()
	if err != nil {
		var rej *attestation.Rejection
		if !errors.As(err, &rej) {
			m.cfg.Metrics.Reject(listener, tcpproxy.CodeUpstream)
		}
		m.cfg.Logger.Warn("connection dropped: cannot reach the cluster", "listener", listener, "cluster", cluster, "err", err)
		return
	}
	defer up.Close()
	// On shutdown, a stream gets the drain time, then is closed.
	stop := context.AfterFunc(ctx, func() {
		time.AfterFunc(l.ShutdownTimeout.D(), func() { c.Close(); up.Close() })
	})
	defer stop()
	g := m.cfg.ConnGauge(listener)
	g(1)
	defer g(-1)
	tcpproxy.Pipe(c, up, l.IdleTimeout.D())
}

// Codes lists every reason code of this package (docs/protocol.md section 6).
var Codes = []attestation.Code{CodeNoEndpoints}
