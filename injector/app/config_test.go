package app

import (
	"io"
	"strings"
	"testing"
	"time"
)

var required = []string{"--namespace=cs", "--webhook-config=countersign-injector", "--proxy-image=p@sha256:1", "--proxy-sim-image=s@sha256:2", "--attestation-url=https://a"}

func TestPrecedence(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"default", nil, nil, "info"},
		{"env over default", map[string]string{"COUNTERSIGN_INJECTOR_LOG_LEVEL": "warn"}, nil, "warn"},
		{"flag over env", map[string]string{"COUNTERSIGN_INJECTOR_LOG_LEVEL": "warn"}, []string{"--log-level=debug"}, "debug"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(append(append([]string{}, required...), tc.args...), func(k string) string { return tc.env[k] }, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if c.LogLevel != tc.want {
				t.Errorf("log level %q, want %q", c.LogLevel, tc.want)
			}
		})
	}
	c, err := Load(required[1:], func(k string) string {
		return map[string]string{"POD_NAMESPACE": "from-env", "COUNTERSIGN_INJECTOR_CERT_OVERLAP": "7m"}[k]
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Namespace != "from-env" || c.CertOverlap != 7*time.Minute {
		t.Errorf("namespace %q overlap %s", c.Namespace, c.CertOverlap)
	}
	if ex := c.Inject().ExcludedNamespaces; len(ex) != 2 || ex[0] != "kube-system" || ex[1] != "from-env" {
		t.Errorf("excluded %v: want kube-system and the injector's own namespace", ex)
	}
}

func TestValidateNamesFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-mode=acme"}, "--tls-mode"},
		{[]string{"--tls-mode=files"}, "--tls-cert-file"},
		{[]string{"--tls-cert-file=x"}, "--tls-cert-file: only with --tls-mode=files"},
		{[]string{"--listen=9443"}, "--listen"},
		{[]string{"--default-attester=tdx"}, "--default-attester"},
		{[]string{"--proxy-cpu=lots"}, "--proxy-cpu"},
		{[]string{"--namespace="}, "--namespace"},
		{[]string{"--client-names=kube-apiserver"}, "--client-names: only with --client-ca-file"},
	} {
		_, err := Load(append(append([]string{}, required...), tc.args...), func(string) string { return "" }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want it to name %s", tc.args, err, tc.want)
		}
	}
	if _, err := Load(required, func(k string) string {
		if k == "COUNTERSIGN_INJECTOR_CERT_VALIDITY" {
			return "forever"
		}
		return ""
	}, io.Discard); err == nil || !strings.Contains(err.Error(), "COUNTERSIGN_INJECTOR_CERT_VALIDITY") {
		t.Errorf("bad env: %v", err)
	}
}

func TestXDSFlags(t *testing.T) {
	files := []string{"--xds-listen=:15010", "--xds-tls-cert-file=x.crt", "--xds-tls-key-file=x.key", "--xds-client-ca-file=ca.pem"}
	if _, err := Load(append(append([]string{}, required...), files...), func(string) string { return "" }, io.Discard); err == nil || !strings.Contains(err.Error(), "--proxy-sim-xds-image") {
		t.Errorf("--xds-listen without --proxy-sim-xds-image: %v, want it refused naming the flag", err)
	}
	files = append(files, "--proxy-sim-xds-image=x@sha256:3")
	c, err := Load(append(append([]string{}, required...), files...), func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	x := c.Inject().XDS
	if x == nil || x.Address != "countersign-injector.cs.svc:15010" || x.ServerName != "countersign-injector.cs.svc" || x.ClientSecret != "countersign-xds-client" {
		t.Errorf("injected control plane %+v, want the Service's name with the xds port", x)
	}
	c, err = Load(append(append([]string{}, required...), append(files, "--xds-address=cp.example:443", "--xds-server-name=cp")...), func(string) string { return "" }, io.Discard)
	if err != nil || c.Inject().XDS.Address != "cp.example:443" || c.Inject().XDS.ServerName != "cp" {
		t.Errorf("explicit address: %v %+v", err, c.Inject().XDS)
	}
	if c, _ := Load(required, func(string) string { return "" }, io.Discard); c.Inject().XDS != nil {
		t.Error("a control plane without --xds-listen")
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--xds-listen=:15010"}, "--xds-tls-cert-file"},
		{[]string{"--xds-listen=:15010", "--xds-tls-cert-file=a", "--xds-tls-key-file=b"}, "--xds-client-ca-file: required"},
		{append(files[:4:4], "--xds-debounce=0s"), "--xds-debounce"},
		{append(files[:4:4], "--xds-address=cp"), "--xds-address"},
		{[]string{"--xds-listen=15010"}, "--xds-listen"},
		{[]string{"--xds-client-ca-file=ca.pem"}, "--xds-client-ca-file: only with --xds-listen"},
	} {
		_, err := Load(append(append([]string{}, required...), tc.args...), func(string) string { return "" }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want it to name %s", tc.args, err, tc.want)
		}
	}
}
