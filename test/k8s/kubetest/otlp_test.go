package kubetest

import (
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

func msg(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func bytesField(num protowire.Number, v []byte) []byte {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func fixed64Field(num protowire.Number, v uint64) []byte {
	b := protowire.AppendTag(nil, num, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, v)
}

// TestDecodeExport decodes an ExportTraceServiceRequest built field by field as the OTLP
// protobuf defines it, with fields the sink ignores in between.
func TestDecodeExport(t *testing.T) {
	start := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	kv := func(k, v string) []byte {
		return bytesField(fSpanAttributes, msg(bytesField(fKVKey, []byte(k)), bytesField(fKVValue, bytesField(fAnyString, []byte(v)))))
	}
	span := func(name string, d time.Duration) []byte {
		return msg(
			bytesField(1, []byte("0123456789abcdef")), // trace_id
			bytesField(fSpanName, []byte(name)),
			protowire.AppendVarint(protowire.AppendTag(nil, 6, protowire.VarintType), 2), // kind
			fixed64Field(fSpanStart, uint64(start.UnixNano())),
			fixed64Field(fSpanEnd, uint64(start.Add(d).UnixNano())),
			kv("webhook", "pods.inject.countersign.dev"),
			bytesField(fSpanEvents, msg(fixed64Field(fEventTime, uint64(start.Add(d/2).UnixNano())), bytesField(fEventName, []byte("Request completed")))),
		)
	}
	scope := msg(bytesField(1, []byte("scope")), bytesField(fScopeSpans, span("Call mutating webhook", 3*time.Millisecond)), bytesField(fScopeSpans, span("other", time.Second)))
	req := bytesField(fExportResourceSpans, msg(bytesField(1, []byte("resource")), bytesField(fResourceScopeSpans, scope)))

	spans, err := decodeExport(req, map[string]bool{"Call mutating webhook": true})
	if err != nil {
		t.Fatal(err)
	}
	if len(spans) != 1 {
		t.Fatalf("%d spans kept, want 1: %+v", len(spans), spans)
	}
	s := spans[0]
	if s.Duration() != 3*time.Millisecond || !s.Start.Equal(start) || s.Attrs["webhook"] != "pods.inject.countersign.dev" ||
		s.Events["Request completed"].Sub(s.Start) != 1500*time.Microsecond {
		t.Errorf("decoded %+v", s)
	}
	if _, err := decodeExport(req[:len(req)-3], map[string]bool{"Call mutating webhook": true}); err == nil {
		t.Error("a truncated request decoded without an error")
	}
}
