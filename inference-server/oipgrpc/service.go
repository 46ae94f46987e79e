// Package oipgrpc is the Open Inference Protocol v2 gRPC front end of the inference server
// (inference.GRPCInferenceService, generated into inferencepb). It converts messages to and from
// the protocol-neutral types of package oip and runs every inference through server.Server.Infer,
// the code path the REST API uses: the same validation, batching, metrics and error reasons.
package oipgrpc

import (
	"context"
	"encoding/json"
	"net/http"
	"runtime"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/countersign/countersign/inference-server/oip"
	pb "github.com/countersign/countersign/inference-server/oipgrpc/inferencepb"
	"github.com/countersign/countersign/inference-server/server"
	"github.com/countersign/countersign/internal/version"
)

// Service implements inference.GRPCInferenceService over a server.Server.
type Service struct {
	pb.UnimplementedGRPCInferenceServiceServer
	srv   *server.Server
	codec *codec // nil: requests were decoded by the default codec
}

// Options bound a gRPC server. Zero fields take the defaults in parentheses.
type Options struct {
	MaxRecvMsgBytes      int           // largest request message; set it to the REST body limit (8 MiB)
	MaxConcurrentStreams uint32        // concurrent calls per connection (128)
	MaxHeaderListBytes   uint32        // request metadata (64 KiB)
	KeepaliveMinTime     time.Duration // clients pinging more often are disconnected (10s)
	MaxConnectionIdle    time.Duration // idle connections are closed after this (120s)
	ConnectionTimeout    time.Duration // time for a new connection's HTTP/2 preface and settings (5s)
}

// NewServer returns a grpc.Server serving the service for srv, with the limits of o.
func NewServer(srv *server.Server, o Options) *grpc.Server {
	if o.MaxRecvMsgBytes <= 0 {
		o.MaxRecvMsgBytes = 8 << 20
	}
	if o.MaxConcurrentStreams == 0 {
		o.MaxConcurrentStreams = 128
	}
	if o.MaxHeaderListBytes == 0 {
		o.MaxHeaderListBytes = 64 << 10
	}
	if o.KeepaliveMinTime <= 0 {
		o.KeepaliveMinTime = 10 * time.Second
	}
	if o.MaxConnectionIdle <= 0 {
		o.MaxConnectionIdle = 120 * time.Second
	}
	if o.ConnectionTimeout <= 0 {
		o.ConnectionTimeout = 5 * time.Second
	}
	c := &codec{pool: mem.DefaultBufferPool()}
	gs := grpc.NewServer(
		grpc.ForceServerCodecV2(c),
		grpc.MaxRecvMsgSize(o.MaxRecvMsgBytes),
		grpc.MaxConcurrentStreams(o.MaxConcurrentStreams),
		grpc.MaxHeaderListSize(o.MaxHeaderListBytes),
		grpc.ConnectionTimeout(o.ConnectionTimeout),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: o.KeepaliveMinTime}),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: o.MaxConnectionIdle}),
		// Static flow-control windows (1 MiB a stream and a connection, which also bounds what
		// one connection can have buffered) turn off grpc-go's bandwidth-delay probing, whose
		// PING per read and window updates cost more than they bring on a loopback hop.
		grpc.InitialWindowSize(1<<20),
		grpc.InitialConnWindowSize(1<<20),
		// Calls run on a fixed pool of goroutines instead of one new goroutine each.
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
	)
	pb.RegisterGRPCInferenceServiceServer(gs, &Service{srv: srv, codec: c})
	return gs
}

// ServerLive implements the service.
func (s *Service) ServerLive(context.Context, *pb.ServerLiveRequest) (*pb.ServerLiveResponse, error) {
	return &pb.ServerLiveResponse{Live: true}, nil
}

// ServerReady implements the service.
func (s *Service) ServerReady(context.Context, *pb.ServerReadyRequest) (*pb.ServerReadyResponse, error) {
	return &pb.ServerReadyResponse{Ready: s.srv.Ready()}, nil
}

// ModelReady implements the service: NOT_FOUND for an unknown model or version.
func (s *Service) ModelReady(_ context.Context, r *pb.ModelReadyRequest) (*pb.ModelReadyResponse, error) {
	if _, f := s.srv.Model(r.GetName(), r.GetVersion()); f != nil {
		return nil, statusOf(f)
	}
	return &pb.ModelReadyResponse{Ready: s.srv.Ready()}, nil
}

// ServerMetadata implements the service.
func (s *Service) ServerMetadata(context.Context, *pb.ServerMetadataRequest) (*pb.ServerMetadataResponse, error) {
	return &pb.ServerMetadataResponse{Name: server.Name, Version: version.Version, Extensions: server.Extensions}, nil
}

// ModelMetadata implements the service. Properties carry what the REST metadata adds: "sha256"
// (extension model_sha256) and, per output with labels, "labels.<output>" as a JSON array.
func (s *Service) ModelMetadata(_ context.Context, r *pb.ModelMetadataRequest) (*pb.ModelMetadataResponse, error) {
	c, f := s.srv.Model(r.GetName(), r.GetVersion())
	if f != nil {
		return nil, statusOf(f)
	}
	m := &pb.ModelMetadataResponse{Name: c.Name, Versions: []string{c.Version}, Platform: c.Platform,
		Properties: map[string]string{"sha256": c.SHA256}}
	for _, t := range c.Inputs {
		m.Inputs = append(m.Inputs, &pb.ModelMetadataResponse_TensorMetadata{Name: t.Name, Datatype: t.Datatype, Shape: t.Shape})
	}
	for _, t := range c.Outputs {
		m.Outputs = append(m.Outputs, &pb.ModelMetadataResponse_TensorMetadata{Name: t.Name, Datatype: t.Datatype, Shape: t.Shape})
		if len(t.Labels) > 0 {
			b, err := json.Marshal(t.Labels)
			if err != nil {
				return nil, status.Error(codes.Internal, err.Error())
			}
			m.Properties["labels."+t.Name] = string(b)
		}
	}
	return m, nil
}

// ModelInfer implements the service through server.Server.Infer.
func (s *Service) ModelInfer(ctx context.Context, r *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	if s.codec != nil {
		defer s.codec.release(r) // also when Infer fails before decoding
	}
	var resp *pb.ModelInferResponse
	f := s.srv.Infer(ctx, r.GetModelName(), r.GetModelVersion(),
		func(bufs *oip.Buffers, lim oip.Limits) (*oip.InferRequest, error) {
			req, err := DecodeRequest(r, bufs, lim)
			if s.codec != nil {
				s.codec.release(r) // the tensors hold copies: the raw bytes are no longer needed
			}
			return req, err
		},
		func(o *oip.InferResponse) (err error) { resp, err = EncodeResponse(o); return err })
	if f != nil {
		if f.Reason == server.ReasonCanceled && ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return nil, statusOf(f)
	}
	return resp, nil
}

// statusOf maps a failure's HTTP status to the gRPC code of the same meaning (the mapping
// gRPC's own HTTP-to-gRPC table uses, with 400 as INVALID_ARGUMENT rather than INTERNAL).
func statusOf(f *server.Failure) error {
	var c codes.Code
	switch f.Status {
	case http.StatusBadRequest:
		c = codes.InvalidArgument
	case http.StatusNotFound:
		c = codes.NotFound
	case http.StatusRequestEntityTooLarge:
		c = codes.ResourceExhausted
	case http.StatusServiceUnavailable:
		c = codes.Unavailable
	default:
		c = codes.Internal
	}
	return status.Error(c, f.Msg)
}
