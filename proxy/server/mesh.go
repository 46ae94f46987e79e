package server

// The mesh wiring: transparent interception (docs/transparent.md) and the xDS subscription
// (docs/xds.md). server.go calls newMesh from New and startMesh from Start; outbound
// listeners that name a cluster are served by clusterOutbound.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/proxy/attestedtls"
	"github.com/countersign/countersign/proxy/chain"
	"github.com/countersign/countersign/proxy/config"
	"github.com/countersign/countersign/proxy/httpproxy"
	"github.com/countersign/countersign/proxy/identity"
	"github.com/countersign/countersign/proxy/tcpproxy"
	"github.com/countersign/countersign/proxy/transparent"
	"github.com/countersign/countersign/proxy/xdsclient"
	"github.com/countersign/countersign/proxy/xdsmeta"
)

// Reason codes of the mesh wiring.
const (
	// CodeNoRoute: a redirected connection whose original destination has no route.
	CodeNoRoute attestation.Code = "no_route"
	// CodeNoEndpoints: the cluster is unknown or has no endpoints (yet).
	CodeNoEndpoints attestation.Code = "no_endpoints"
)

// Listener names used in logs and metrics by the transparent listeners.
const (
	ListenerTransparentIn  = "transparent-inbound"
	ListenerTransparentOut = "transparent-outbound"
)

type mesh struct {
	xds      *xdsclient.Client
	handlers sync.Map // handlerKey -> *httpproxy.Outbound
	// inbound are the attested inbound listeners by the port the control plane names them by;
	// filled before the xDS client starts, read-only after.
	inbound map[uint16]config.Inbound
}

func listenPort(ln net.Listener) uint16 {
	if a, ok := ln.Addr().(*net.TCPAddr); ok {
		return uint16(a.Port)
	}
	return 0
}

// livePolicy returns, for an attested inbound listener of a proxy subscribed to a control
// plane, the policy in force for its callers: the pushed narrowing of its allow list when
// there is one, otherwise the pinned floor. Without xDS it returns nil (the pinned policy).
func (s *Server) livePolicy(in config.Inbound, port uint16) func() (attestedtls.Checker, []string) {
	if s.mesh.xds == nil || in.Public || port == 0 {
		return nil
	}
	if _, dup := s.mesh.inbound[port]; !dup {
		s.mesh.inbound[port] = in
	}
	floor, allow := s.Engine, in.Allow
	return func() (attestedtls.Checker, []string) {
		if p := s.mesh.xds.State().InboundOn(port); p != nil && p.Pinned == in.Name {
			return p.Engine, p.Allow
		}
		return floor, allow
	}
}

type handlerKey struct {
	listener, endpoint, authority, ids string
	checker                            attestedtls.Checker
}

// XDS returns the xDS client, nil without a control plane.
func (s *Server) XDS() *xdsclient.Client {
	if s.mesh == nil {
		return nil
	}
	return s.mesh.xds
}

func (s *Server) newMesh() error {
	s.mesh = &mesh{inbound: map[uint16]config.Inbound{}}
	if t := s.cfg.Transparent; t != nil {
		var errs []error
		check := func(field string, ids []string) {
			for _, id := range ids {
				if s.Engine.Policy.Identities[id] == nil {
					errs = append(errs, fmt.Errorf("%s: identity %q is not in the policy (%v)", field, id, s.Engine.Policy.IdentityNames()))
				}
			}
		}
		for i, in := range t.Inbound {
			check(fmt.Sprintf("transparent.inbound[%d].allow", i), in.Allow)
		}
		for i, out := range t.Outbound {
			check(fmt.Sprintf("transparent.outbound[%d].upstreamIdentity", i), out.UpstreamIdentity)
		}
		if err := errors.Join(errs...); err != nil {
			return err
		}
	}
	x := s.cfg.XDS
	if x == nil {
		return nil
	}
	for i, id := range x.UpstreamIdentities {
		if s.Engine.Policy.Identities[id] == nil {
			return fmt.Errorf("xds.upstreamIdentities[%d]: identity %q is not in the policy (%v)", i, id, s.Engine.Policy.IdentityNames())
		}
	}
	tlsCfg, err := xdsTLS(x)
	if err != nil {
		return err
	}
	floors := map[string][]string{}
	node := &xdsmeta.NodeInfo{Identity: s.cfg.Identity, UpstreamIdentities: x.UpstreamIdentities}
	for _, out := range s.cfg.Outbound {
		if out.Cluster != "" {
			floors[out.Cluster] = out.UpstreamIdentity
			node.Clusters = append(node.Clusters, out.Cluster)
		}
	}
	updates := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "countersign_xds_updates_total", Help: "xDS responses, by resource type and result (ack, nack, widening).",
	}, []string{"type", "result"})
	connected := prometheus.NewGauge(prometheus.GaugeOpts{Name: "countersign_xds_connected", Help: "1 while a stream to the control plane is up."})
	s.Metrics.Registry.MustRegister(updates, connected)
	s.mesh.xds, err = xdsclient.New(xdsclient.Config{
		Server: x.Server, TLS: tlsCfg, NodeID: x.NodeID, Floor: s.Engine, Logger: s.log, Node: node,
		Inbound: func(port uint16) (string, []string, bool) {
			in, ok := s.mesh.inbound[port]
			return in.Name, in.Allow, ok
		},
		MinBackoff: x.MinBackoff.D(), MaxBackoff: x.MaxBackoff.D(),
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
		OnApply: s.pruneHandlers,
		Connected: func(up bool) {
			if up {
				connected.Set(1)
			} else {
				connected.Set(0)
			}
		},
	})
	return err
}

func xdsTLS(x *config.XDS) (*tls.Config, error) {
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

// startMesh binds the transparent listeners and starts the xDS client; listen records the
// listener for cleanup on failure.
func (s *Server) startMesh(ctx context.Context, listen func(name, addr string) (net.Listener, error)) error {
	if err := s.startTransparent(ctx, listen); err != nil {
		return err
	}
	// Last: the client reads s.mesh.inbound, complete once every inbound listener is set up.
	if s.mesh.xds != nil {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.mesh.xds.Run(ctx) }()
	}
	return nil
}

func (s *Server) startTransparent(ctx context.Context, listen func(name, addr string) (net.Listener, error)) error {
	t := s.cfg.Transparent
	if t == nil {
		return nil
	}
	// Inbound: original destination port -> an attested inbound listener for that app port.
	inLn, err := listen(ListenerTransparentIn, t.InboundListen)
	if err != nil {
		return err
	}
	ports := map[uint16]*transparent.ChanListener{}
	for _, in := range t.Inbound {
		cl := transparent.NewChanListener(inLn.Addr())
		ports[uint16(in.Port)] = cl
		err := s.inbound(config.Inbound{
			Name: in.Name, Protocol: in.Protocol, Allow: in.Allow,
			ForwardTo: net.JoinHostPort("127.0.0.1", strconv.Itoa(in.Port)),
		}, cl, uint16(in.Port))
		if err != nil {
			return fmt.Errorf("transparent inbound %s: %w", in.Name, err)
		}
	}
	s.lns = append(s.lns, func(ctx context.Context) error {
		return transparent.Serve(ctx, inLn, func(c net.Conn, dst netip.AddrPort) {
			if cl := ports[dst.Port()]; cl != nil {
				cl.Push(c)
				return
			}
			s.refuseConn(c, ListenerTransparentIn, dst)
		}, s.log)
	})
	// Outbound: static routes first, then the control plane's listeners.
	outLn, err := listen(ListenerTransparentOut, t.OutboundListen)
	if err != nil {
		return err
	}
	static := map[netip.AddrPort]*transparent.ChanListener{}
	for _, r := range t.Outbound {
		cl := transparent.NewChanListener(outLn.Addr())
		static[netip.MustParseAddrPort(r.Destination)] = cl
		s.outbound(config.Outbound{Name: r.Name, Protocol: r.Protocol, Upstream: r.Destination, UpstreamIdentity: r.UpstreamIdentity, Authority: r.Authority}, cl)
	}
	var dynHTTP *transparent.ChanListener
	if s.mesh.xds != nil {
		dynHTTP = transparent.NewChanListener(outLn.Addr())
		s.serveProxy(ListenerTransparentOut, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			dst, _ := r.Context().Value(dstKey{}).(netip.AddrPort)
			cl, ok := s.mesh.xds.State().RouteTo(dst)
			if !ok {
				s.rejectPlain(w, ListenerTransparentOut, http.StatusServiceUnavailable, attestation.Rejectf(CodeNoEndpoints, "the route to %s is gone", dst))
				return
			}
			s.serveCluster(w, r, ListenerTransparentOut, cl.Name, "", nil)
		}), dynHTTP, nil, func(ctx context.Context, c net.Conn) context.Context {
			if dc, ok := c.(*dstConn); ok {
				return context.WithValue(ctx, dstKey{}, dc.dst)
			}
			return ctx
		})
	}
	s.lns = append(s.lns, func(ctx context.Context) error {
		return transparent.Serve(ctx, outLn, func(c net.Conn, dst netip.AddrPort) {
			if cl := static[dst]; cl != nil {
				cl.Push(c)
				return
			}
			if s.mesh.xds != nil {
				if cl, ok := s.mesh.xds.State().RouteTo(dst); ok {
					if cl.Policy.Protocol == xdsmeta.ProtocolHTTP {
						dynHTTP.Push(&dstConn{Conn: c, dst: dst})
						return
					}
					s.pipeCluster(ctx, c, ListenerTransparentOut, cl.Name, nil)
					return
				}
			}
			s.refuseConn(c, ListenerTransparentOut, dst)
		}, s.log)
	})
	return nil
}

type dstKey struct{}

// dstConn carries a redirected connection's original destination to the HTTP server.
type dstConn struct {
	net.Conn
	dst netip.AddrPort
}

func (s *Server) refuseConn(c net.Conn, listener string, dst netip.AddrPort) {
	s.log.Warn("connection refused: no route for its original destination", "listener", listener, "destination", dst.String(), "remote", c.RemoteAddr().String())
	s.Metrics.Reject(listener, CodeNoRoute)
	c.Close()
}

// rejectPlain writes a rejection in the format of the HTTP data path.
func (s *Server) rejectPlain(w http.ResponseWriter, listener string, status int, rej *attestation.Rejection) {
	s.log.Warn("request refused", "listener", listener, "reason", string(rej.Code), "detail", rej.Sentence())
	s.Metrics.Reject(listener, rej.Code)
	w.Header().Set(chain.HeaderReject, string(rej.Code))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Connection", "close")
	w.WriteHeader(status)
	fmt.Fprintf(w, "countersign: %s: %s\n", rej.Code, rej.Sentence())
}

// clusterOutbound serves an outbound listener whose upstreams are an xDS cluster.
func (s *Server) clusterOutbound(out config.Outbound, ln net.Listener) {
	l := s.cfg.Limits
	if out.Protocol == config.ProtocolTCP {
		p := tcpproxy.New(tcpproxy.Options{
			Name: out.Name, MaxConns: l.MaxConnections, IdleTimeout: l.IdleTimeout.D(), HandshakeTimeout: l.HandshakeTimeout.D(),
			Dial: func(ctx context.Context) (net.Conn, error) {
				return s.dialCluster(ctx, out.Name, out.Cluster, out.UpstreamIdentity)
			},
			Logger: s.log, OnReject: s.Metrics.Reject, OnConn: s.connGauge(out.Name), Lifetime: s.peerLifetime,
		})
		s.lns = append(s.lns, func(ctx context.Context) error { return p.Serve(ctx, ln, l.ShutdownTimeout.D()) })
		return
	}
	lim := &limitListener{Listener: ln, sem: make(chan struct{}, l.MaxConnections), name: out.Name, reject: s.Metrics.Reject}
	s.serveProxy(out.Name, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.serveCluster(w, r, out.Name, out.Cluster, out.Authority, out.UpstreamIdentity)
	}), lim, nil, nil)
}

// clusterNow returns the cluster's current state, re-checking (defence in depth) that its
// identities are within floor when the listener pins one.
func (s *Server) clusterNow(name string, floor []string) (*xdsclient.Cluster, *attestation.Rejection) {
	cl := s.mesh.xds.State().Cluster(name)
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

// serveCluster forwards one request to the next endpoint of the cluster, through an
// httpproxy.Outbound per (endpoint, policy): a request in flight keeps its handler and
// connection when the cluster changes.
func (s *Server) serveCluster(w http.ResponseWriter, r *http.Request, listener, cluster, authority string, floor []string) {
	cl, rej := s.clusterNow(cluster, floor)
	if rej != nil {
		s.rejectPlain(w, listener, http.StatusServiceUnavailable, rej)
		return
	}
	ep, ok := cl.Pick()
	if !ok {
		s.rejectPlain(w, listener, http.StatusServiceUnavailable, attestation.Rejectf(CodeNoEndpoints, "cluster %s has no endpoints", cluster))
		return
	}
	if authority == "" {
		authority = cl.Policy.Authority
	}
	k := handlerKey{listener: listener, endpoint: ep, authority: authority, ids: strings.Join(cl.Policy.Identities, ","), checker: cl.Engine}
	h, ok := s.mesh.handlers.Load(k)
	if !ok {
		d := *s.deps
		d.Checker = cl.Engine
		h, _ = s.mesh.handlers.LoadOrStore(k, httpproxy.NewOutbound(&d, config.Outbound{
			Name: listener, Protocol: config.ProtocolHTTP, Upstream: ep, UpstreamIdentity: cl.Policy.Identities, Authority: authority,
		}))
	}
	h.(*httpproxy.Outbound).ServeHTTP(w, r)
}

// pruneHandlers drops the handlers of endpoints and policies no longer in the state and
// closes their idle connections.
func (s *Server) pruneHandlers(st *xdsclient.State) {
	live := map[string]bool{}
	for _, cl := range st.Clusters {
		for _, ep := range cl.Endpoints {
			live[ep+"|"+strings.Join(cl.Policy.Identities, ",")] = true
		}
	}
	s.mesh.handlers.Range(func(k, v any) bool {
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
			s.mesh.handlers.Delete(k)
			v.(*httpproxy.Outbound).CloseIdleConnections()
		}
		return true
	})
}

// dialCluster opens an attested connection to the next endpoint of the cluster.
func (s *Server) dialCluster(ctx context.Context, listener, cluster string, floor []string) (net.Conn, error) {
	if !s.Identity.Ready() {
		return nil, attestation.Rejectf(httpproxy.CodeNoIdentity, "%v", identity.ErrNoIdentity)
	}
	cl, rej := s.clusterNow(cluster, floor)
	if rej != nil {
		s.Metrics.Reject(listener, rej.Code)
		return nil, rej
	}
	ep, ok := cl.Pick()
	if !ok {
		rej := attestation.Rejectf(CodeNoEndpoints, "cluster %s has no endpoints", cluster)
		s.Metrics.Reject(listener, rej.Code)
		return nil, rej
	}
	host, _, _ := net.SplitHostPort(ep)
	opts := attestedtls.Options{Listener: listener, Identities: cl.Policy.Identities, Logger: s.log, OnReject: s.onReject}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: s.cfg.Limits.DialTimeout.D()}, Config: attestedtls.ClientConfig(s.Identity, cl.Engine, host, opts)}
	return d.DialContext(ctx, "tcp", ep)
}

// pipeCluster carries a redirected TCP connection to the cluster.
func (s *Server) pipeCluster(ctx context.Context, c net.Conn, listener, cluster string, floor []string) {
	defer c.Close()
	dctx, cancel := context.WithTimeout(ctx, s.cfg.Limits.HandshakeTimeout.D())
	up, err := s.dialCluster(dctx, listener, cluster, floor)
	cancel()
	if err != nil {
		var rej *attestation.Rejection
		if !errors.As(err, &rej) {
			s.Metrics.Reject(listener, tcpproxy.CodeUpstream)
		}
		s.log.Warn("connection dropped: cannot reach the cluster", "listener", listener, "cluster", cluster, "err", err)
		return
	}
	defer up.Close()
	// On shutdown, a stream gets the drain time, then is closed.
	stop := context.AfterFunc(ctx, func() {
		time.AfterFunc(s.cfg.Limits.ShutdownTimeout.D(), func() { c.Close(); up.Close() })
	})
	defer stop()
	g := s.connGauge(listener)
	g(1)
	defer g(-1)
	tcpproxy.Pipe(c, up, s.cfg.Limits.IdleTimeout.D())
}
