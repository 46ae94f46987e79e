package inject

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// TestParseSettings: the annotations are decoded once into typed settings, with the injector's
// defaults where the pod has none.
func TestParseSettings(t *testing.T) {
	c := meshConfigForTest()
	p := transparentPod(map[string]string{AnnotationAdminPort: "16020", AnnotationCPU: "250m"})
	s, err := c.ParseSettings(p)
	if err != nil {
		t.Fatal(err)
	}
	if s.Identity != "records-api" || s.Attester != "sgx" || s.PolicyConfigMap != c.PolicyConfigMap || s.AdminPort != 16020 {
		t.Errorf("settings %+v", s)
	}
	if s.CPU.String() != "250m" || s.Memory.Cmp(c.Memory) != 0 || s.EPC.Cmp(c.EPC) != 0 {
		t.Errorf("resources cpu %s memory %s epc %s", s.CPU.String(), s.Memory.String(), s.EPC.String())
	}
	wantIn := []Listener{{
		Annotation: InboundPrefix + "api",
		Name:       "api",
		Port:       8443,
		Protocol:   "http",
		Forward:    8080,
		Identities: []string{"portal", "ingress"},
	}}
	if !reflect.DeepEqual(s.Inbound, wantIn) {
		t.Errorf("inbound %+v, want %+v", s.Inbound, wantIn)
	}
	if len(s.Outbound) != 2 || s.Outbound[0].Name != "models" || s.Outbound[1].Upstream != "redis.data.svc:8443" {
		t.Errorf("outbound %+v, want models then redis", s.Outbound)
	}
	tr := s.Transparent
	if tr == nil || len(tr.Inbound) != 2 || tr.Inbound[0].Name != "api" || tr.Inbound[0].Port != 8080 {
		t.Fatalf("transparent %+v", tr)
	}
	if want := []uint16{8443, 9000, 16020}; !reflect.DeepEqual(tr.ExcludeInboundPorts, want) {
		t.Errorf("excluded inbound ports %v, want %v", tr.ExcludeInboundPorts, want)
	}
	if !reflect.DeepEqual(s.XDSUpstreamIdentities, []string{"redis", "inference"}) {
		t.Errorf("xds upstream identities %v", s.XDSUpstreamIdentities)
	}
	if !strings.HasPrefix(s.AppImage, "records@") {
		t.Errorf("app image %q", s.AppImage)
	}
}

// TestParseSettingsNamesAnnotation: a bad annotation is refused with its name, its value and
// what is allowed, in the sentence the pod's author reads in kubectl's output.
func TestParseSettingsNamesAnnotation(t *testing.T) {
	long := strings.Repeat("a", MaxAnnotationValue+1)
	for _, tc := range []struct{ key, value string }{
		{AnnotationIdentity, "Records API"},
		{AnnotationAttester, "tdx"},
		{AnnotationPolicy, "Bad_Name"},
		{AnnotationAdminPort, "0"},
		{AnnotationCPU, "lots"},
		{AnnotationMemory, "-1"},
		{AnnotationEPC, "64Mi"}, // with the sim attester below
		{AnnotationAttestationURL, "https://attest.example/path"},
		{AnnotationAttestationCAKey, ".."},
		{AnnotationSimMREnclave, "abc"},
		{AnnotationTransparent, "yes"},
		{AnnotationExcludeOutboundPorts, "53"},
		{AnnotationXDSUpstreamIdentities, "a,B"},
		{AnnotationIdentity, long},
		{InboundPrefix + "api", "port=8443 forward=8080 protocol=http allow=portal port=1"},
		{InboundPrefix + "api", "port=8443 forward=8080 protocol=udp allow=portal"},
		{OutboundPrefix + "redis", "port=6380 upstream=redis identity=redis protocol=tcp"},
		{OutboundPrefix + "redis", long},
	} {
		t.Run(tc.key+"="+tc.value[:min(len(tc.value), 20)], func(t *testing.T) {
			c := testConfig()
			ann := map[string]string{tc.key: tc.value}
			if tc.key == AnnotationEPC || tc.key == AnnotationSimMREnclave {
				ann[AnnotationAttester] = "sim"
			}
			_, err := c.ParseSettings(testPod(ann))
			var e *Error
			if !errors.As(err, &e) || e.Reason != ReasonInvalidAnnotation {
				t.Fatalf("ParseSettings() = %v, want an %s rejection", err, ReasonInvalidAnnotation)
			}
			if e.Annotation != tc.key || e.Value != tc.value {
				t.Errorf("rejection names %s=%.30q, want %s=%.30q", e.Annotation, e.Value, tc.key, tc.value)
			}
			quoted := strconv.Quote(tc.value)
			if len(tc.value) > 120 {
				quoted = strconv.Quote(tc.value[:120] + "...")
			}
			if !strings.Contains(e.Message, "annotation "+tc.key+"="+quoted+": ") {
				t.Errorf("message %q does not name the annotation and its value", e.Message)
			}
			allowed := false
			for _, w := range []string{"expected", "allowed", "only meaningful with", "is not set"} {
				allowed = allowed || strings.Contains(e.Message, w)
			}
			if !allowed {
				t.Errorf("message %q does not say what is allowed", e.Message)
			}
		})
	}
}

// TestListenerProtocols: explicit listeners may carry http2 and grpc (docs/protocol.md section
// 11); transparent routes only http and tcp, refused by name.
func TestListenerProtocols(t *testing.T) {
	for _, proto := range []string{"http", "http2", "grpc", "tcp"} {
		l, err := parseListener(OutboundPrefix+"models", "port=9002 upstream=inference.diag.svc:8444 identity=inference protocol="+proto)
		if err != nil || l.Protocol != proto {
			t.Errorf("outbound protocol=%s: %+v %v", proto, l, err)
		}
		l, err = parseListener(InboundPrefix+"api", "port=8444 forward=8001 allow=records-api protocol="+proto)
		if err != nil || l.Protocol != proto {
			t.Errorf("inbound protocol=%s: %+v %v", proto, l, err)
		}
	}
	if _, err := parseProtocol("transparent-inbound.countersign.dev/api", "port=8080 protocol=grpc allow=a", "grpc"); err == nil || !strings.Contains(err.Error(), "need an inbound.countersign.dev or outbound.countersign.dev listener") {
		t.Errorf("a transparent grpc route: %v", err)
	}
}
