package kubetest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/encoding/protowire"
)

// Span is one finished span the API server exported: its name, start and end, string
// attributes, and the times of its events by name.
type Span struct {
	Name       string
	Start, End time.Time
	Attrs      map[string]string
	Events     map[string]time.Time
}

// Duration is End − Start.
func (s Span) Duration() time.Duration { return s.End.Sub(s.Start) }

// SpanSink is a minimal OpenTelemetry (OTLP/gRPC) trace receiver on loopback: the API server's
// tracing exporter sends it every span (kube-apiserver --tracing-config-file, see
// TracingArgs), and tests read the spans whose name they care about. It decodes only what
// it keeps (names, times, string attributes, event names and times) with protowire, so the
// test needs no OpenTelemetry module.
type SpanSink struct {
	Endpoint string

	mu    sync.Mutex
	keep  map[string]bool
	spans []Span
	bad   error
}

// NewSpanSink starts the receiver; it keeps the spans whose name is in names. It stops when
// the test ends.
func NewSpanSink(t testing.TB, names ...string) *SpanSink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &SpanSink{Endpoint: ln.Addr().String(), keep: map[string]bool{}}
	for _, n := range names {
		s.keep[n] = true
	}
	g := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}), grpc.MaxRecvMsgSize(32<<20))
	g.RegisterService(&traceServiceDesc, s)
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	return s
}

// TracingArgs writes a tracing configuration that samples every request and exports to the
// sink, and returns the kube-apiserver flag that loads it.
func (s *SpanSink) TracingArgs(t testing.TB) []string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tracing.yaml")
	cfg := fmt.Sprintf("apiVersion: apiserver.config.k8s.io/v1\nkind: TracingConfiguration\nendpoint: %s\nsamplingRatePerMillion: 1000000\n", s.Endpoint)
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"--tracing-config-file=" + p}
}

// Spans returns the spans kept so far, in arrival order, and the first decoding error.
func (s *SpanSink) Spans() ([]Span, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Span(nil), s.spans...), s.bad
}

// WaitFor waits until at least n spans are kept or the timeout passes (the exporter sends in
// batches, at the latest every 5 s), and returns them.
func (s *SpanSink) WaitFor(ctx context.Context, n int, timeout time.Duration) ([]Span, error) {
	deadline := time.Now().Add(timeout)
	for {
		spans, err := s.Spans()
		if err != nil || len(spans) >= n || time.Now().After(deadline) || ctx.Err() != nil {
			return spans, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *SpanSink) export(b []byte) error {
	spans, err := decodeExport(b, s.keep)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.spans = append(s.spans, spans...)
	if err != nil && s.bad == nil {
		s.bad = err
	}
	return err
}

// traceServiceDesc is opentelemetry.proto.collector.trace.v1.TraceService with its one method,
// taking and returning raw protobuf bytes (rawCodec).
var traceServiceDesc = grpc.ServiceDesc{
	ServiceName: "opentelemetry.proto.collector.trace.v1.TraceService",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Export",
		Handler: func(srv any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var b []byte
			if err := dec(&b); err != nil {
				return nil, err
			}
			if err := srv.(*SpanSink).export(b); err != nil {
				return nil, err
			}
			empty := []byte{} // ExportTraceServiceResponse with no partial_success
			return &empty, nil
		},
	}},
}

// rawCodec hands messages through as bytes.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	if b, ok := v.(*[]byte); ok {
		return *b, nil
	}
	return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

var _ encoding.Codec = rawCodec{}

// Field numbers of the OTLP trace protobuf (opentelemetry/proto/trace/v1/trace.proto and
// collector/trace/v1/trace_service.proto) that decodeExport reads.
const (
	fExportResourceSpans = 1 // ExportTraceServiceRequest.resource_spans
	fResourceScopeSpans  = 2 // ResourceSpans.scope_spans
	fScopeSpans          = 2 // ScopeSpans.spans
	fSpanName            = 5
	fSpanStart           = 7 // fixed64 start_time_unix_nano
	fSpanEnd             = 8 // fixed64 end_time_unix_nano
	fSpanAttributes      = 9
	fSpanEvents          = 11
	fEventTime           = 1 // fixed64
	fEventName           = 2
	fKVKey               = 1
	fKVValue             = 2
	fAnyString           = 1
)

var errTruncated = errors.New("otlp: truncated or malformed protobuf")

// fields calls fn for each field of the message b.
func fields(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, u uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errTruncated
		}
		b = b[n:]
		var v []byte
		var u uint64
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			u, n = protowire.ConsumeVarint(b)
		case protowire.Fixed64Type:
			u, n = protowire.ConsumeFixed64(b)
		case protowire.Fixed32Type:
			var u32 uint32
			u32, n = protowire.ConsumeFixed32(b)
			u = uint64(u32)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return errTruncated
		}
		b = b[n:]
		if err := fn(num, typ, v, u); err != nil {
			return err
		}
	}
	return nil
}

// nested calls fn with the bytes of every length-delimited field numbered num.
func nested(b []byte, num protowire.Number, fn func([]byte) error) error {
	return fields(b, func(n protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if n == num && typ == protowire.BytesType {
			return fn(v)
		}
		return nil
	})
}

func decodeExport(b []byte, keep map[string]bool) ([]Span, error) {
	var out []Span
	err := nested(b, fExportResourceSpans, func(rs []byte) error {
		return nested(rs, fResourceScopeSpans, func(ss []byte) error {
			return nested(ss, fScopeSpans, func(sp []byte) error {
				s, err := decodeSpan(sp, keep)
				if err == nil && s != nil {
					out = append(out, *s)
				}
				return err
			})
		})
	})
	return out, err
}

func decodeSpan(b []byte, keep map[string]bool) (*Span, error) {
	s := &Span{Attrs: map[string]string{}, Events: map[string]time.Time{}}
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, u uint64) error {
		switch {
		case num == fSpanName && typ == protowire.BytesType:
			s.Name = string(v)
		case num == fSpanStart && typ == protowire.Fixed64Type:
			s.Start = time.Unix(0, int64(u))
		case num == fSpanEnd && typ == protowire.Fixed64Type:
			s.End = time.Unix(0, int64(u))
		case num == fSpanAttributes && typ == protowire.BytesType:
			var key, val string
			err := fields(v, func(n protowire.Number, t protowire.Type, kv []byte, _ uint64) error {
				switch {
				case n == fKVKey && t == protowire.BytesType:
					key = string(kv)
				case n == fKVValue && t == protowire.BytesType:
					return nested(kv, fAnyString, func(sv []byte) error { val = string(sv); return nil })
				}
				return nil
			})
			if err != nil {
				return err
			}
			s.Attrs[key] = val
		case num == fSpanEvents && typ == protowire.BytesType:
			var name string
			var at time.Time
			err := fields(v, func(n protowire.Number, t protowire.Type, ev []byte, eu uint64) error {
				switch {
				case n == fEventName && t == protowire.BytesType:
					name = string(ev)
				case n == fEventTime && t == protowire.Fixed64Type:
					at = time.Unix(0, int64(eu))
				}
				return nil
			})
			if err != nil {
				return err
			}
			s.Events[name] = at
		}
		return nil
	})
	if err != nil || !keep[s.Name] {
		return nil, err
	}
	return s, nil
}
