package inject

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/countersign/countersign/proxy/config"
)

func TestInjectPublicListener(t *testing.T) {
	c := testConfig()
	p := testPod(map[string]string{
		InboundPrefix + "portal": "port=9443 forward=8080 protocol=http public=portal-tls",
		InboundPrefix + "zz-alt": "port=9444 forward=8080 protocol=http public=alt-tls",
	})
	if err := c.Inject(p); err != nil {
		t.Fatal(err)
	}
	pc, err := config.Parse([]byte(p.Annotations[AnnotationProxyConfig]), "")
	if err != nil {
		t.Fatalf("generated config rejected by proxy/config: %v\n%s", err, p.Annotations[AnnotationProxyConfig])
	}
	byName := map[string]config.Inbound{}
	for _, in := range pc.Inbound {
		byName[in.Name] = in
	}
	want := config.Inbound{
		Name:      "portal",
		Listen:    "0.0.0.0:9443",
		Protocol:  "http",
		ForwardTo: "127.0.0.1:8080",
		Public:    true,
		CertFile:  PublicDir + "/portal/tls.crt",
		KeyFile:   PublicDir + "/portal/tls.key",
	}
	if got := byName["portal"]; !reflect.DeepEqual(got, want) {
		t.Errorf("public inbound %+v, want %+v", got, want)
	}
	if api := byName["api"]; api.Public || api.CertFile != "" || len(api.Allow) != 2 {
		t.Errorf("attested inbound changed: %+v", api)
	}
	// One read-only Secret volume per public listener, mounted where the config points.
	vols := map[string]corev1.Volume{}
	for _, v := range p.Spec.Volumes {
		vols[v.Name] = v
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range p.Spec.InitContainers[0].VolumeMounts {
		mounts[m.Name] = m
	}
	for i, tc := range []struct{ secret, dir string }{{"portal-tls", PublicDir + "/portal"}, {"alt-tls", PublicDir + "/zz-alt"}} {
		name := VolumePublicPrefix + string(rune('0'+i))
		v, ok := vols[name]
		if !ok || v.Secret == nil || v.Secret.SecretName != tc.secret || len(v.Secret.Items) != 2 ||
			v.Secret.Items[0].Key != "tls.crt" || v.Secret.Items[1].Key != "tls.key" {
			t.Errorf("volume %s = %+v, want Secret %s with tls.crt and tls.key", name, v, tc.secret)
		}
		if m := mounts[name]; m.MountPath != tc.dir || !m.ReadOnly {
			t.Errorf("mount %s = %+v, want %s read-only", name, m, tc.dir)
		}
	}
	// The app does not see the certificate's key.
	for _, m := range p.Spec.Containers[0].VolumeMounts {
		if strings.HasPrefix(m.Name, VolumePublicPrefix) {
			t.Errorf("app container mounts %s", m.Name)
		}
	}

	// Idempotent; removing a public listener on re-injection removes its volume.
	once := p.DeepCopy()
	if err := c.Inject(p); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(once, p) {
		t.Error("second injection changed the pod")
	}
	delete(p.Annotations, InboundPrefix+"zz-alt")
	if err := c.Inject(p); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, v := range p.Spec.Volumes {
		if strings.HasPrefix(v.Name, VolumePublicPrefix) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d public certificate volumes after removing one of two listeners, want 1", n)
	}
}

func TestInjectAttestationService(t *testing.T) {
	c := testConfig()
	c.AttestationCAKey = "default-ca.pem"
	for _, tc := range []struct {
		name       string
		ann        map[string]string
		url, cafle string
	}{
		{"injector defaults", nil, "https://attest.example", PolicyDir + "/default-ca.pem"},
		{"Azure Attestation, system roots", map[string]string{AnnotationAttestationURL: "https://demo.weu.attest.azure.net", AnnotationAttestationCAKey: ""},
			"https://demo.weu.attest.azure.net", ""},
		{"local service with its CA", map[string]string{AnnotationAttestationURL: "https://hd-attestation.demo.svc:8443", AnnotationAttestationCAKey: "attestation-ca.pem"},
			"https://hd-attestation.demo.svc:8443", PolicyDir + "/attestation-ca.pem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPod(tc.ann)
			if err := c.Inject(p); err != nil {
				t.Fatal(err)
			}
			pc, err := config.Parse([]byte(p.Annotations[AnnotationProxyConfig]), "")
			if err != nil {
				t.Fatal(err)
			}
			if pc.AttestationService.URL != tc.url || pc.AttestationService.CAFile != tc.cafle {
				t.Errorf("attestationService %+v, want url %s caFile %q", pc.AttestationService, tc.url, tc.cafle)
			}
		})
	}
}

func TestInjectSimMREnclave(t *testing.T) {
	c := testConfig()
	for _, tc := range []struct {
		name string
		ann  map[string]string
		want string
	}{
		{"attester default", map[string]string{AnnotationAttester: "sim"}, ""},
		{"claimed", map[string]string{AnnotationAttester: "sim", AnnotationSimMREnclave: strings.Repeat("A1", 32)}, strings.Repeat("a1", 32)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPod(tc.ann)
			if err := c.Inject(p); err != nil {
				t.Fatal(err)
			}
			pc, err := config.Parse([]byte(p.Annotations[AnnotationProxyConfig]), "")
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if m := pc.Attester.SimIdentity.MREnclave; !m.IsZero() {
				got = m.String()
			}
			if got != tc.want {
				t.Errorf("simIdentity.mrenclave %q, want %q", got, tc.want)
			}
		})
	}
}

func TestInjectRejectsPerPod(t *testing.T) {
	c := testConfig()
	for _, tc := range []struct {
		name string
		ann  map[string]string
		want []string
	}{
		{"public with allow", map[string]string{InboundPrefix + "portal": "port=9443 forward=8080 protocol=http public=portal-tls allow=a"},
			[]string{`annotation inbound.countersign.dev/portal="port=9443`, "does not authenticate callers (expected no allow with public=)"}},
		{"public tcp", map[string]string{InboundPrefix + "portal": "port=9443 forward=8080 protocol=tcp public=portal-tls"},
			[]string{InboundPrefix + "portal", "expected protocol=http"}},
		{"public bad secret", map[string]string{InboundPrefix + "portal": "port=9443 forward=8080 protocol=http public=Portal_TLS"},
			[]string{InboundPrefix + "portal", `public "Portal_TLS" is not a Secret name`, "kubernetes.io/tls Secret"}},
		{"public empty", map[string]string{InboundPrefix + "portal": "port=9443 forward=8080 protocol=http public="},
			[]string{InboundPrefix + "portal", "is not key=value"}},
		{"attested without allow", map[string]string{InboundPrefix + "portal": "port=9443 forward=8080 protocol=http"},
			[]string{InboundPrefix + "portal", "allow is required"}},
		{"public port conflict", map[string]string{InboundPrefix + "portal": "port=6380 forward=8080 protocol=http public=portal-tls"},
			[]string{"port 6380", "annotation " + InboundPrefix + "portal"}},
		{"url with path", map[string]string{AnnotationAttestationURL: "https://attest.example/attest"},
			[]string{`annotation countersign.dev/attestation-url="https://attest.example/attest"`, "expected https://host[:port], no path"}},
		{"url scheme", map[string]string{AnnotationAttestationURL: "ftp://attest.example"}, []string{AnnotationAttestationURL, "expected https://"}},
		{"url bad port", map[string]string{AnnotationAttestationURL: "https://attest.example:99999"}, []string{AnnotationAttestationURL}},
		{"url user", map[string]string{AnnotationAttestationURL: "https://u:p@attest.example"}, []string{AnnotationAttestationURL}},
		{"ca key", map[string]string{AnnotationAttestationCAKey: "../ca.pem"}, []string{AnnotationAttestationCAKey, "not a ConfigMap key"}},
		{"sim mrenclave short", map[string]string{AnnotationAttester: "sim", AnnotationSimMREnclave: "a1a1"},
			[]string{`annotation countersign.dev/sim-mrenclave="a1a1"`, "expected 64 hex digits"}},
		{"sim mrenclave with sgx", map[string]string{AnnotationAttester: "sgx", AnnotationSimMREnclave: strings.Repeat("a1", 32)},
			[]string{AnnotationSimMREnclave, "only meaningful with countersign.dev/attester=sim"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPod(tc.ann)
			before := p.DeepCopy()
			err := c.Inject(p)
			var e *Error
			if !errors.As(err, &e) || !e.Reason.Denied() {
				t.Fatalf("Inject() = %v, want a rejection", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(e.Message, w) {
					t.Errorf("message %q does not contain %q", e.Message, w)
				}
			}
			if !reflect.DeepEqual(before, p) {
				t.Error("a rejected pod was modified")
			}
		})
	}
}
