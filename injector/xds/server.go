package xds

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"sync"
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

	mu      sync.Mutex
	nodes   map[string]bool
	streams map[int64]string
	snap    *cachev3.Snapshot
	digest  string
	seq     uint64
	kick    chan struct{}
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
	s := &Server{cfg: cfg, ln: ln, nodes: map[string]bool{}, streams: map[int64]string{}, kick: make(chan struct{}, 1)}
	s.cache = cachev3.NewSnapshotCache(true, cachev3.IDHash{}, slogAdapter{cfg.Logger})
	return s, nil
}

// Addr is the bound gRPC address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Version is the current snapshot version ("" before the first).
func (s *Server) Version() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snap == nil {
		return ""
	}
	return s.snap.GetVersion(resource.ClusterType)
}

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
	for _, inf := range []cache.SharedIndexInformer{svcs.Informer(), eps.Informer(), pods.Informer()} {
		if _, err := inf.AddEventHandler(h); err != nil {
			return err
		}
	}
	f.Start(ctx.Done())
	defer f.Shutdown()
	for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("xds: informer for %v did not sync", typ)
		}
	}
	rebuild := func() {
		in := Input{Pods: map[string]*corev1.Pod{}}
		all, _ := svcs.Lister().List(labels.Everything())
		in.Services = all
		sl, _ := eps.Lister().List(labels.Everything())
		in.Slices = sl
		ps, _ := pods.Lister().List(labels.Everything())
		for _, p := range ps {
			in.Pods[p.Namespace+"/"+p.Name] = p
		}
		s.update(ctx, in)
	}
	rebuild()

	cb := serverv3.CallbackFuncs{
		StreamRequestFunc: func(id int64, req *discoveryv3.DiscoveryRequest) error {
			return s.onRequest(ctx, id, req.GetNode(), req)
		},
		StreamClosedFunc: func(id int64, _ *corev3.Node) {
			s.mu.Lock()
			delete(s.streams, id)
			s.mu.Unlock()
		},
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
			// Debounce: wait for the burst to settle, then build one snapshot.
			t := time.NewTimer(s.cfg.Debounce)
		settle:
			for {
				select {
				case <-s.kick:
					t.Reset(s.cfg.Debounce)
				case <-t.C:
					break settle
				case <-ctx.Done():
					t.Stop()
					break settle
				}
			}
			rebuild()
		}
	}
}

func (s *Server) trigger() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Server) onRequest(ctx context.Context, id int64, node *corev3.Node, req *discoveryv3.DiscoveryRequest) error {
	s.mu.Lock()
	nodeID := s.streams[id]
	if node.GetId() != "" {
		nodeID = node.GetId()
		s.streams[id] = nodeID
	}
	if nodeID == "" {
		s.mu.Unlock()
		return errors.New("xds: the first request must carry a node ID")
	}
	fresh := !s.nodes[nodeID]
	s.nodes[nodeID] = true
	snap := s.snap
	s.mu.Unlock()
	if fresh && snap != nil {
		if err := s.cache.SetSnapshot(ctx, nodeID, snap); err != nil {
			return err
		}
		s.cfg.Logger.Info("xds: proxy subscribed", "node", nodeID, "version", snap.GetVersion(resource.ClusterType))
	}
	if d := req.GetErrorDetail(); d != nil {
		s.cfg.Logger.Warn("xds: proxy rejected a response (NACK)", "node", nodeID, "type", req.GetTypeUrl(), "kept_version", req.GetVersionInfo(), "reason", d.GetMessage())
		if s.cfg.OnNack != nil {
			s.cfg.OnNack(nodeID, req.GetTypeUrl(), d.GetMessage())
		}
	}
	return nil
}

// update translates, and when the result differs from the current snapshot, sets a new
// consistent snapshot with the next version for every known node.
func (s *Server) update(ctx context.Context, in Input) {
	res, skipped := Translate(in)
	for _, sk := range skipped {
		s.cfg.Logger.Warn("xds: service left out", "service", sk.Service, "reason", sk.Reason)
	}
	digest := digestOf(res)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snap != nil && digest == s.digest {
		return
	}
	s.seq++
	version := strconv.FormatUint(s.seq, 10) + "-" + digest[:12]
	snap, err := cachev3.NewSnapshot(version, res)
	if err == nil {
		err = snap.Consistent()
	}
	if err != nil {
		s.cfg.Logger.Error("xds: inconsistent snapshot not served", "version", version, "err", err)
		return
	}
	s.snap, s.digest = snap, digest
	nodes := make([]string, 0, len(s.nodes))
	for n := range s.nodes {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	for _, n := range nodes {
		if err := s.cache.SetSnapshot(ctx, n, snap); err != nil {
			s.cfg.Logger.Error("xds: setting a snapshot", "node", n, "err", err)
		}
	}
	s.cfg.Logger.Info("xds: new snapshot", "version", version, "clusters", len(res[resource.ClusterType]), "listeners", len(res[resource.ListenerType]), "nodes", len(nodes))
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
