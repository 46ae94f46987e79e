package xds

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/countersign/countersign/proxy/xdsmeta"
)

// Config configures the control plane.
type Config struct {
	// Listen is the gRPC address; TLS must require and verify client certificates (mTLS).
	Listen string
	TLS    *tls.Config
	// Client reads Services, EndpointSlices and Pods; Namespace limits it ("" is all).
	Client    kubernetes.Interface
	Namespace string
	// Debounce groups bursts of API changes into one snapshot (default 20ms).
	Debounce time.Duration
	Logger   *slog.Logger
	// OnNack, if set, is told about every NACK a proxy sends (node, type, reason).
	OnNack func(node, typeURL, reason string)
	// OnSnapshot, if set, is called with each new snapshot version.
	OnSnapshot func(version string)
}

// Server is a running control plane.
type Server struct {
	cfg   Config
	cache cachev3.SnapshotCache
	ln    net.Listener

	mu sync.Mutex
	// nodes are the subscribed node keys (nodeKey: the node ID, plus a digest of its
	// Countersign node metadata when it sent some) with what they told about themselves;
	// refs counts the streams of each.
	nodes   map[string]*nodeState
	streams map[int64]string
	// res is the current translation (every proxy's view is cut from it), digest its hash.
	res    map[resource.Type][]types.Resource
	scope  map[string][]string
	digest string
	seq    uint64
	// views caches this generation's snapshots by view class (the node metadata digest);
	// prevViews are the previous generation's, reused when a view did not change (same
	// version: the proxies of that class are not sent the same resources again).
	views, prevViews map[string]viewSnap
	// sent is the last response per stream and type, to recognise what a NACK rejects.
	sent map[sentKey]sentResp
	kick chan struct{}
	// referenced holds the pods ("namespace/name") that the EndpointSlices of the last
	// translation point at: only their events can change a translation (through their
	// identity annotation), so other pods' comings and goings cut no snapshot.
	referenced atomic.Pointer[map[string]bool]
	// rebuilds counts translations (each reads the listers and translates everything).
	rebuilds atomic.Uint64
}

// maxSettle bounds the debounce: under continuous churn a snapshot is still cut this often.
const maxSettle = 50

type viewSnap struct {
	snap   *cachev3.Snapshot
	digest string
}

type sentKey struct {
	stream  int64
	typeURL string
}

type sentResp struct{ nonce, version string }

type nodeState struct {
	info    xdsmeta.NodeInfo
	hasInfo bool
	class   string
	refs    int
}

// New binds the gRPC listener.
func New(cfg Config) (*Server, error) {
	if cfg.TLS == nil || cfg.TLS.ClientAuth != tls.RequireAndVerifyClientCert {
		return nil, errors.New("xds: TLS with RequireAndVerifyClientCert is required (proxies authenticate with mTLS)")
	}
	if cfg.Client == nil {
		return nil, errors.New("xds: a Kubernetes client is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = 20 * time.Millisecond
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		ln:      ln,
		nodes:   map[string]*nodeState{},
		streams: map[int64]string{},
		views:   map[string]viewSnap{},
		sent:    map[sentKey]sentResp{},
		kick:    make(chan struct{}, 1),
	}
	s.cache = cachev3.NewSnapshotCache(true, nodeHash{}, slogAdapter{cfg.Logger})
	return s, nil
}

// nodeHash keys the snapshot cache by node ID and view class, so that two proxies sharing a
// node ID but configured differently never share a snapshot.
type nodeHash struct{}

func (nodeHash) ID(n *corev3.Node) string {
	_, _, class := nodeInfo(n)
	if class == "" {
		return n.GetId()
	}
	return n.GetId() + "|" + class
}

// nodeInfo reads the node's Countersign metadata; class is a digest of it ("" without).
func nodeInfo(n *corev3.Node) (xdsmeta.NodeInfo, bool, string) {
	info, ok, err := xdsmeta.DecodeNode(n.GetMetadata())
	if err != nil || !ok {
		return info, false, ""
	}
	sort.Strings(info.UpstreamIdentities)
	sort.Strings(info.Clusters)
	b, _ := json.Marshal(info)
	sum := sha256.Sum256(b)
	return info, true, hex.EncodeToString(sum[:8])
}

// Addr is the bound gRPC address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run starts the informers and serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	f := informers.NewSharedInformerFactoryWithOptions(s.cfg.Client, 0, informers.WithNamespace(s.cfg.Namespace))
	svcs := f.Core().V1().Services()
	eps := f.Discovery().V1().EndpointSlices()
	pods := f.Core().V1().Pods()
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.trigger() },
		UpdateFunc: func(any, any) { s.trigger() },
		DeleteFunc: func(any) { s.trigger() },
	}
	for _, inf := range []cache.SharedIndexInformer{svcs.Informer(), eps.Informer()} {
		if _, err := inf.AddEventHandler(h); err != nil {
			return err
		}
	}
	// Pods: only those an EndpointSlice points at, and on update only if their identity
	// changed. A pod that no slice names yet is read from the lister when its slice arrives.
	podEvent := func(obj any) {
		if p := podOf(obj); p != nil && s.isReferenced(p) {
			s.trigger()
		}
	}
	ph := cache.ResourceEventHandlerFuncs{
		AddFunc:    podEvent,
		DeleteFunc: podEvent,
		UpdateFunc: func(old, cur any) {
			o, c := podOf(old), podOf(cur)
			if o != nil && c != nil && o.Annotations[AnnotationPodIdentity] == c.Annotations[AnnotationPodIdentity] {
				return
			}
			podEvent(cur)
		},
	}
	if _, err := pods.Informer().AddEventHandler(ph); err != nil {
		return err
	}
	f.Start(ctx.Done())
	defer f.Shutdown()
	for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("xds: informer for %v did not sync", typ)
		}
	}
	rebuild := func() {
		s.rebuilds.Add(1)
		in := Input{Pods: map[string]*corev1.Pod{}}
		all, _ := svcs.Lister().List(labels.Everything())
		in.Services = all
		sl, _ := eps.Lister().List(labels.Everything())
		in.Slices = sl
		// Only the pods the slices point at are read (a lookup each, not a list of all pods).
		// The set is published before the lookups: the informer stores a pod before it calls
		// the handler, so a pod either is found here or its event sees itself referenced.
		ref := map[string]bool{}
		for _, slice := range sl {
			for _, ep := range slice.Endpoints {
				if ns, name, ok := podRef(slice, ep); ok {
					ref[ns+"/"+name] = true
				}
			}
		}
		s.referenced.Store(&ref)
		for key := range ref {
			ns, name, _ := strings.Cut(key, "/")
			if p, err := pods.Lister().Pods(ns).Get(name); err == nil {
				in.Pods[key] = p
			}
		}
		s.update(ctx, in)
	}
	rebuild()

	cb := serverv3.CallbackFuncs{
		StreamRequestFunc: func(id int64, req *discoveryv3.DiscoveryRequest) error {
			return s.onRequest(ctx, id, req.GetNode(), req)
		},
		StreamResponseFunc: func(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
			s.mu.Lock()
			s.sent[sentKey{id, resp.GetTypeUrl()}] = sentResp{resp.GetNonce(), resp.GetVersionInfo()}
			s.mu.Unlock()
		},
		StreamClosedFunc: func(id int64, _ *corev3.Node) { s.closed(id) },
	}
	xs := serverv3.NewServer(ctx, s.cache, cb)
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(s.cfg.TLS)),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.MaxRecvMsgSize(4<<20))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, xs)
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(s.ln) }()
	s.cfg.Logger.Info("xds control plane serving", "addr", s.Addr())
	for {
		select {
		case <-ctx.Done():
			g.Stop()
			<-errc
			return nil
		case err := <-errc:
			return err
		case <-s.kick:
			if !settle(ctx, s.kick, s.cfg.Debounce) {
				continue // ctx ended: the next loop returns
			}
			rebuild()
		}
	}
}

// settle waits, after a change, until debounce passes with no further change (a burst has
// settled), but no longer than maxSettle debounce periods in all: under continuous churn a
// snapshot is still cut that often. It returns false if ctx ends first.
func settle(ctx context.Context, kick <-chan struct{}, debounce time.Duration) bool {
	t := time.NewTimer(debounce)
	defer t.Stop()
	limit := time.Now().Add(maxSettle * debounce)
	for {
		select {
		case <-kick:
			if time.Now().Before(limit) {
				t.Reset(debounce)
			}
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
}

// isReferenced reports whether the last translation's EndpointSlices point at the pod.
func (s *Server) isReferenced(p *corev1.Pod) bool {
	ref := s.referenced.Load()
	return ref != nil && (*ref)[p.Namespace+"/"+p.Name]
}

// podOf returns the pod of an informer event (unwrapping a deletion tombstone).
func podOf(obj any) *corev1.Pod {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	p, _ := obj.(*corev1.Pod)
	return p
}

func (s *Server) trigger() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Server) onRequest(ctx context.Context, id int64, node *corev3.Node, req *discoveryv3.DiscoveryRequest) error {
	if node.GetId() == "" {
		return errors.New("xds: the first request must carry a node ID")
	}
	key := nodeHash{}.ID(node)
	s.mu.Lock()
	if prev, ok := s.streams[id]; ok && prev != key {
		s.mu.Unlock()
		return fmt.Errorf("xds: node %q changed its identity or metadata within a stream", node.GetId())
	}
	if req.GetErrorDetail() != nil {
		// A NACK names the version the proxy keeps; go-control-plane's cache would answer that
		// at once with the version just rejected, and the proxy would reject it again, in a hot
		// loop. Treat the rejected version as the one held: the next response is the next
		// version (Envoy's behaviour on NACK).
		if last, ok := s.sent[sentKey{id, req.GetTypeUrl()}]; ok && last.nonce == req.GetResponseNonce() {
			req.VersionInfo = last.version
		}
	}
	var snap *cachev3.Snapshot
	fresh := false
	if _, ok := s.streams[id]; !ok {
		s.streams[id] = key
		ns := s.nodes[key]
		if ns == nil {
			info, has, class := nodeInfo(node)
			ns = &nodeState{info: info, hasInfo: has, class: class}
			s.nodes[key] = ns
			fresh = true
			if s.res != nil {
				snap = s.viewLocked(ns)
			}
		}
		ns.refs++
	}
	s.mu.Unlock()
	if fresh && snap != nil {
		if err := s.cache.SetSnapshot(ctx, key, snap); err != nil {
			return err
		}
		s.cfg.Logger.Info("xds: proxy subscribed", "node", key, "version", snap.GetVersion(resource.ClusterType))
	}
	if d := req.GetErrorDetail(); d != nil {
		s.cfg.Logger.Warn("xds: proxy rejected a response (NACK)", "node", key, "type", req.GetTypeUrl(), "rejected_version", req.GetVersionInfo(), "reason", d.GetMessage())
		if s.cfg.OnNack != nil {
			s.cfg.OnNack(node.GetId(), req.GetTypeUrl(), d.GetMessage())
		}
	}
	return nil
}

// closed forgets a stream, and the node's snapshot when it was the node's last stream.
func (s *Server) closed(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key, ok := s.streams[id]
	if !ok {
		return
	}
	delete(s.streams, id)
	for k := range s.sent {
		if k.stream == id {
			delete(s.sent, k)
		}
	}
	if ns := s.nodes[key]; ns != nil {
		if ns.refs--; ns.refs <= 0 {
			delete(s.nodes, key)
			s.cache.ClearSnapshot(key)
		}
	}
}

// viewLocked returns the snapshot of what the node may be sent, cut from the current
// translation; nodes of one class share it within a generation. s.mu is held.
func (s *Server) viewLocked(ns *nodeState) *cachev3.Snapshot {
	if v, ok := s.views[ns.class]; ok {
		return v.snap
	}
	res := View(s.res, s.scope, ns.info, ns.hasInfo)
	digest := digestOf(res)
	if v, ok := s.prevViews[ns.class]; ok && v.digest == digest {
		s.views[ns.class] = v
		return v.snap
	}
	version := strconv.FormatUint(s.seq, 10) + "-" + digest[:12]
	// Every type gets the version, even when empty: go-control-plane gives a type absent from
	// the snapshot the version "", which equals a new proxy's, so it would never answer it.
	for _, t := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType} {
		if _, ok := res[t]; !ok {
			res[t] = nil
		}
	}
	snap, err := cachev3.NewSnapshot(version, res)
	if err == nil {
		err = snap.Consistent()
	}
	if err != nil {
		// View keeps every kept listener's and route's cluster, so this is a bug.
		s.cfg.Logger.Error("xds: inconsistent view not served", "version", version, "class", ns.class, "err", err)
		return nil
	}
	s.views[ns.class] = viewSnap{snap, digest}
	return snap
}

// update translates, and when the result differs from the current one, sets every known
// node's view of it as a new consistent snapshot.
func (s *Server) update(ctx context.Context, in Input) {
	res, scope, skipped := translate(in)
	for _, sk := range skipped {
		s.cfg.Logger.Warn("xds: service left out", "service", sk.Service, "reason", sk.Reason)
	}
	digest := digestOf(res)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.res != nil && digest == s.digest {
		return
	}
	s.seq++
	s.res, s.scope, s.digest = res, scope, digest
	s.prevViews, s.views = s.views, map[string]viewSnap{}
	keys := make([]string, 0, len(s.nodes))
	for k := range s.nodes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	changed := 0
	for _, k := range keys {
		ns := s.nodes[k]
		prev, hadPrev := s.prevViews[ns.class]
		snap := s.viewLocked(ns)
		if snap == nil || hadPrev && prev.snap == snap {
			continue // unchanged view: nothing to send
		}
		changed++
		if err := s.cache.SetSnapshot(ctx, k, snap); err != nil {
			s.cfg.Logger.Error("xds: setting a snapshot", "node", k, "err", err)
		}
	}
	version := strconv.FormatUint(s.seq, 10) + "-" + digest[:12]
	s.cfg.Logger.Info("xds: new snapshot", "version", version, "clusters", len(res[resource.ClusterType]), "listeners", len(res[resource.ListenerType]),
		"nodes", len(keys), "nodes_updated", changed, "views", len(s.views))
	if s.cfg.OnSnapshot != nil {
		s.cfg.OnSnapshot(version)
	}
}

func digestOf(res map[resource.Type][]types.Resource) string {
	h := sha256.New()
	for _, t := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType} {
		fmt.Fprintf(h, "%s\n", t)
		for _, r := range res[t] {
			b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(r)
			fmt.Fprintf(h, "%d\n", len(b))
			h.Write(b)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Debugf(f string, args ...any) { a.l.Debug(fmt.Sprintf(f, args...)) }
func (a slogAdapter) Infof(f string, args ...any)  { a.l.Debug(fmt.Sprintf(f, args...)) }
func (a slogAdapter) Warnf(f string, args ...any)  { a.l.Warn(fmt.Sprintf(f, args...)) }
func (a slogAdapter) Errorf(f string, args ...any) { a.l.Error(fmt.Sprintf(f, args...)) }
