// Package app is the injector binary's body: its configuration (defaults, then environment,
// then flags), and Run, which serves the webhook and the admin endpoints.
package app

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/countersign/countersign/injector/inject"
)

// TLS modes.
const (
	TLSSelf  = "self"  // self-managed CA and certificate in a Secret, caBundle patched
	TLSFiles = "files" // certificate files (cert-manager), caBundle injected by cert-manager
)

// EnvPrefix starts the environment variable for each flag: --cert-secret is
// COUNTERSIGN_INJECTOR_CERT_SECRET.
const EnvPrefix = "COUNTERSIGN_INJECTOR_"

// Config is the injector's whole configuration.
type Config struct {
	Listen      string
	AdminListen string
	// HTTP2 lets the webhook server speak HTTP/2 (off: HTTP/1.1 only, as controller-runtime's
	// webhook server defaults since the HTTP/2 rapid-reset attacks, CVE-2023-44487).
	HTTP2 bool
	// ClientCAFile, when set, makes the webhook require a client certificate chaining to these
	// CAs (the API server presents one when its AdmissionConfiguration says so); ClientNames
	// then pins its subject (CN or DNS SAN), if any are given.
	ClientCAFile string
	ClientNames  []string
	Kubeconfig   string
	Namespace    string
	LogLevel     string
	Events       bool

	TLSMode          string
	CertSecret       string
	WebhookConfig    string
	CertHosts        string
	CertValidity     time.Duration
	CertRotateBefore time.Duration
	CertOverlap      time.Duration
	CertSyncInterval time.Duration
	TLSCertFile      string
	TLSKeyFile       string

	ProxyImage           string
	ProxySimImage        string
	ProxySimXDSImage     string
	DefaultAttester      string
	AttestationURL       string
	AttestationCAKey     string
	PolicyConfigMap      string
	SimPlatformKeySecret string
	ProxyCPU             string
	ProxyMemory          string
	SGXEPC               string
	ExcludedNamespaces   string
	ProxyInitImage       string

	// The control plane (xDS); off while XDSListen is empty.
	XDSListen         string
	XDSTLSCertFile    string
	XDSTLSKeyFile     string
	XDSClientCAFile   string
	XDSWatchNamespace string
	XDSAddress        string
	XDSServerName     string
	XDSClientSecret   string
	XDSDebounce       time.Duration
}

// Defaults returns the configuration before environment and flags.
func Defaults() Config {
	return Config{
		Listen:               ":9443",
		AdminListen:          ":9090",
		LogLevel:             "info",
		Events:               true,
		TLSMode:              TLSSelf,
		CertSecret:           "countersign-injector-tls",
		WebhookConfig:        "countersign-injector",
		CertValidity:         365 * 24 * time.Hour,
		CertRotateBefore:     90 * 24 * time.Hour,
		CertOverlap:          5 * time.Minute,
		CertSyncInterval:     time.Minute,
		DefaultAttester:      "sgx",
		PolicyConfigMap:      "countersign-policy",
		SimPlatformKeySecret: "countersign-sim-platform-key",
		ProxyCPU:             "100m",
		ProxyMemory:          "128Mi",
		SGXEPC:               "64Mi",
		ExcludedNamespaces:   "kube-system",
		XDSClientSecret:      "countersign-xds-client",
		XDSDebounce:          20 * time.Millisecond,
	}
}

func (c *Config) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.Listen, "listen", c.Listen, "webhook HTTPS address")
	fs.StringVar(&c.AdminListen, "admin-listen", c.AdminListen, "admin address: /healthz, /readyz, /metrics")
	fs.StringVar(&c.ClientCAFile, "client-ca-file", c.ClientCAFile, "PEM CAs the API server's client certificate must chain to; when set, the webhook refuses callers without one (reloaded when it changes)")
	fs.Func("client-names", "comma-separated: with --client-ca-file, the client certificate's CN or a DNS SAN must be one of these", func(v string) error {
		c.ClientNames = nil
		for _, n := range strings.Split(v, ",") {
			if n = strings.TrimSpace(n); n != "" {
				c.ClientNames = append(c.ClientNames, n)
			}
		}
		return nil
	})
	fs.BoolVar(&c.HTTP2, "http2", c.HTTP2, "serve the webhook over HTTP/2 too (off: HTTP/1.1 only; the API server calls webhooks over either, and HTTP/1.1 avoids HTTP/2's stream-reset attack surface)")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", c.Kubeconfig, "kubeconfig file (default: in-cluster configuration)")
	fs.StringVar(&c.Namespace, "namespace", c.Namespace, "the injector's own namespace (never injected; holds the certificate Secret)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.BoolVar(&c.Events, "events", c.Events, "write Kubernetes Events for injected and rejected pods")
	fs.StringVar(&c.TLSMode, "tls-mode", c.TLSMode, "self (CA and certificate managed in a Secret) or files (cert-manager)")
	fs.StringVar(&c.CertSecret, "cert-secret", c.CertSecret, "self mode: Secret holding the CA and serving certificate")
	fs.StringVar(&c.WebhookConfig, "webhook-config", c.WebhookConfig, "self mode: MutatingWebhookConfiguration whose caBundle is managed")
	fs.StringVar(&c.CertHosts, "cert-hosts", c.CertHosts, "self mode: comma-separated DNS names and IPs of the serving certificate (default: the Service's names)")
	fs.DurationVar(&c.CertValidity, "cert-validity", c.CertValidity, "self mode: serving certificate lifetime")
	fs.DurationVar(&c.CertRotateBefore, "cert-rotate-before", c.CertRotateBefore, "self mode: start rotating when this much validity is left")
	fs.DurationVar(&c.CertOverlap, "cert-overlap", c.CertOverlap, "self mode: a new CA is trusted in the caBundle this long before it is served")
	fs.DurationVar(&c.CertSyncInterval, "cert-sync-interval", c.CertSyncInterval, "self mode: how often the Secret and caBundle are checked")
	fs.StringVar(&c.TLSCertFile, "tls-cert-file", c.TLSCertFile, "files mode: serving certificate (PEM), reloaded when it changes")
	fs.StringVar(&c.TLSKeyFile, "tls-key-file", c.TLSKeyFile, "files mode: serving key (PEM)")
	fs.StringVar(&c.ProxyImage, "proxy-image", c.ProxyImage, "proxy image for the sgx attester (EGo enclave), pinned by digest; empty refuses sgx pods (and needs --default-attester=sim)")
	fs.StringVar(&c.ProxySimImage, "proxy-sim-image", c.ProxySimImage, "proxy image for the sim attester, pinned by digest: the lean build without the xDS client, for pods that do not use the control plane")
	fs.StringVar(&c.ProxySimXDSImage, "proxy-sim-xds-image", c.ProxySimXDSImage, "proxy image for the sim attester with the xDS client, pinned by digest, for pods that use the control plane (required with --xds-listen)")
	fs.StringVar(&c.DefaultAttester, "default-attester", c.DefaultAttester, "attester when a pod does not say: sgx or sim")
	fs.StringVar(&c.AttestationURL, "attestation-url", c.AttestationURL, "attestation service URL written into every proxy's configuration")
	fs.StringVar(&c.AttestationCAKey, "attestation-ca-key", c.AttestationCAKey, "key in the policy ConfigMap with PEM roots for the attestation service (empty: system roots)")
	fs.StringVar(&c.PolicyConfigMap, "policy-configmap", c.PolicyConfigMap, "default ConfigMap (in the pod's namespace) holding policy.yaml")
	fs.StringVar(&c.SimPlatformKeySecret, "sim-platform-key-secret", c.SimPlatformKeySecret, "Secret (in the pod's namespace) holding platform.pem for the sim attester")
	fs.StringVar(&c.ProxyCPU, "proxy-cpu", c.ProxyCPU, "default proxy CPU request")
	fs.StringVar(&c.ProxyMemory, "proxy-memory", c.ProxyMemory, "default proxy memory request and limit")
	fs.StringVar(&c.SGXEPC, "sgx-epc", c.SGXEPC, "default SGX EPC request (sgx attester)")
	fs.StringVar(&c.ExcludedNamespaces, "excluded-namespaces", c.ExcludedNamespaces, "comma-separated namespaces never injected (the injector's own is always added)")
	fs.StringVar(&c.ProxyInitImage, "proxy-init-image", c.ProxyInitImage, "image (proxy binary and iptables-nft) of the init container of transparent pods, pinned by digest; empty refuses countersign.dev/transparent=enabled")
	fs.StringVar(&c.XDSListen, "xds-listen", c.XDSListen, "control plane (xDS, ADS over gRPC with mTLS) address; empty: no control plane")
	fs.StringVar(&c.XDSTLSCertFile, "xds-tls-cert-file", c.XDSTLSCertFile, "control plane serving certificate (PEM), reloaded when it changes")
	fs.StringVar(&c.XDSTLSKeyFile, "xds-tls-key-file", c.XDSTLSKeyFile, "control plane serving key (PEM)")
	fs.StringVar(&c.XDSClientCAFile, "xds-client-ca-file", c.XDSClientCAFile, "CA certificates (PEM) that proxies' client certificates must chain to, reloaded when it changes")
	fs.StringVar(&c.XDSWatchNamespace, "xds-watch-namespace", c.XDSWatchNamespace, "namespace whose Services, EndpointSlices and Pods the control plane reads (empty: all)")
	fs.StringVar(&c.XDSAddress, "xds-address", c.XDSAddress, "control plane host:port written into injected proxies (default: <webhook-config>.<namespace>.svc:<xds-listen port>)")
	fs.StringVar(&c.XDSServerName, "xds-server-name", c.XDSServerName, "name proxies check in the control plane's certificate (default: the host of --xds-address)")
	fs.StringVar(&c.XDSClientSecret, "xds-client-secret", c.XDSClientSecret, "Secret in each injected pod's namespace with the proxy's client certificate (tls.crt, tls.key) and the control plane's CA (ca.crt)")
	fs.DurationVar(&c.XDSDebounce, "xds-debounce", c.XDSDebounce, "how long the control plane waits for a burst of API changes to settle before cutting a snapshot")
}

// Load applies defaults, then COUNTERSIGN_INJECTOR_* environment variables, then flags, and
// validates. getenv is os.Getenv in production.
func Load(args []string, getenv func(string) string, stderr io.Writer) (*Config, error) {
	c := Defaults()
	fs := flag.NewFlagSet("injector", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.flags(fs)
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := EnvPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(name); v != "" {
			if err := f.Value.Set(v); err != nil {
				envErr = errors.Join(envErr, fmt.Errorf("%s: %v", name, err))
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	if c.Namespace == "" {
		c.Namespace = getenv("POD_NAMESPACE")
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate names the flag at fault.
func (c *Config) Validate() error {
	var errs []error
	add := func(flag, format string, args ...any) {
		errs = append(errs, fmt.Errorf("--%s: %s", flag, fmt.Sprintf(format, args...)))
	}
	for _, a := range []struct{ flag, v string }{{"listen", c.Listen}, {"admin-listen", c.AdminListen}} {
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			add(a.flag, "%q is not host:port", a.v)
		}
	}
	if c.Namespace == "" {
		add("namespace", "required (or POD_NAMESPACE)")
	}
	if len(c.ClientNames) > 0 && c.ClientCAFile == "" {
		add("client-names", "only with --client-ca-file")
	}
	switch c.TLSMode {
	case TLSSelf:
		if c.CertSecret == "" {
			add("cert-secret", "required with --tls-mode=self")
		}
		if c.WebhookConfig == "" {
			add("webhook-config", "required with --tls-mode=self")
		}
		if c.TLSCertFile != "" || c.TLSKeyFile != "" {
			add("tls-cert-file", "only with --tls-mode=files")
		}
	case TLSFiles:
		if c.TLSCertFile == "" || c.TLSKeyFile == "" {
			add("tls-cert-file", "--tls-cert-file and --tls-key-file are required with --tls-mode=files")
		}
	default:
		add("tls-mode", "%q, expected self or files", c.TLSMode)
	}
	if c.XDSListen != "" {
		if _, _, err := net.SplitHostPort(c.XDSListen); err != nil {
			add("xds-listen", "%q is not host:port", c.XDSListen)
		}
		if c.XDSTLSCertFile == "" || c.XDSTLSKeyFile == "" {
			add("xds-tls-cert-file", "--xds-tls-cert-file and --xds-tls-key-file are required with --xds-listen")
		}
		if c.XDSClientCAFile == "" {
			add("xds-client-ca-file", "required with --xds-listen: proxies authenticate to the control plane with client certificates")
		}
		if h, p, err := net.SplitHostPort(c.xdsAddress()); err != nil || h == "" || p == "" || p == "0" {
			add("xds-address", "%q is not host:port (the address proxies dial)", c.xdsAddress())
		}
		if c.XDSClientSecret == "" {
			add("xds-client-secret", "required with --xds-listen")
		}
		if c.XDSDebounce <= 0 || c.XDSDebounce > 10*time.Second {
			add("xds-debounce", "%s, expected more than 0 and at most 10s", c.XDSDebounce)
		}
	} else {
		for _, f := range []struct{ flag, v string }{{"xds-tls-cert-file", c.XDSTLSCertFile}, {"xds-client-ca-file", c.XDSClientCAFile}, {"xds-address", c.XDSAddress}} {
			if f.v != "" {
				add(f.flag, "only with --xds-listen")
			}
		}
	}
	if err := c.Inject().Validate(); err != nil {
		for _, e := range unjoin(err) {
			errs = append(errs, fmt.Errorf("--%w", e))
		}
	}
	for _, q := range []struct{ flag, v string }{{"proxy-cpu", c.ProxyCPU}, {"proxy-memory", c.ProxyMemory}, {"sgx-epc", c.SGXEPC}} {
		if _, err := resource.ParseQuantity(q.v); err != nil {
			add(q.flag, "%q is not a resource quantity", q.v)
		}
	}
	return errors.Join(errs...)
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// Inject is the injection settings.
func (c *Config) Inject() *inject.Config {
	q := func(s string) resource.Quantity {
		v, _ := resource.ParseQuantity(s)
		return v
	}
	ex := []string{}
	for _, n := range strings.Split(c.ExcludedNamespaces, ",") {
		if n = strings.TrimSpace(n); n != "" {
			ex = append(ex, n)
		}
	}
	if c.Namespace != "" {
		ex = append(ex, c.Namespace)
	}
	ic := &inject.Config{
		ProxyImage:           c.ProxyImage,
		ProxySimImage:        c.ProxySimImage,
		ProxySimXDSImage:     c.ProxySimXDSImage,
		DefaultAttester:      c.DefaultAttester,
		AttestationURL:       c.AttestationURL,
		AttestationCAKey:     c.AttestationCAKey,
		PolicyConfigMap:      c.PolicyConfigMap,
		SimPlatformKeySecret: c.SimPlatformKeySecret,
		CPU:                  q(c.ProxyCPU),
		Memory:               q(c.ProxyMemory),
		EPC:                  q(c.SGXEPC),
		ExcludedNamespaces:   ex,
		ProxyInitImage:       c.ProxyInitImage,
	}
	if c.XDSListen != "" {
		addr := c.xdsAddress()
		name := c.XDSServerName
		if name == "" {
			name, _, _ = net.SplitHostPort(addr)
		}
		ic.XDS = &inject.XDS{Address: addr, ServerName: name, ClientSecret: c.XDSClientSecret}
	}
	return ic
}

// xdsAddress is --xds-address, or the in-cluster Service name (the webhook's) with the port
// of --xds-listen.
func (c *Config) xdsAddress() string {
	if c.XDSAddress != "" {
		return c.XDSAddress
	}
	_, port, _ := net.SplitHostPort(c.XDSListen)
	return net.JoinHostPort(c.WebhookConfig+"."+c.Namespace+".svc", port)
}

// Hosts is the serving certificate's names: --cert-hosts, or the in-cluster Service names.
func (c *Config) Hosts() []string {
	var hs []string
	for _, h := range strings.Split(c.CertHosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hs = append(hs, h)
		}
	}
	if len(hs) == 0 {
		svc := c.WebhookConfig
		hs = []string{svc + "." + c.Namespace + ".svc", svc + "." + c.Namespace + ".svc.cluster.local"}
	}
	return hs
}
