package proxybench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Simulated measurements of the four proxies' identities.
var mr = map[string]string{
	"edge":  strings.Repeat("e1", 32),
	"front": strings.Repeat("f2", 32),
	"back":  strings.Repeat("b3", 32),
	"third": strings.Repeat("d4", 32),
}

// topology is every process of one bench run and their addresses.
type topology struct {
	dir   string
	procs []*proc
	roots *x509.CertPool

	app, appTLS, relayDirect, relayChain string
	goproxy, nginx                       string
	edge, frontOut, frontOut2, thirdIn   string
	backIn, backIn2, backOut             string
	redis, frontRedis, backRedis         string

	// the processes measured, by name
	byName map[string]*proc
}

func (t *topology) stop() {
	for i := len(t.procs) - 1; i >= 0; i-- {
		t.procs[i].stop(10 * time.Second)
	}
}

func (t *topology) start(name string, env []string, bin string, args ...string) (*proc, error) {
	p, err := startProc(name, env, bin, args...)
	if err != nil {
		return nil, err
	}
	t.procs = append(t.procs, p)
	t.byName[name] = p
	return p, nil
}

// selfCert writes a self-signed ECDSA P-256 certificate for 127.0.0.1.
func selfCert(dir string) (certFile, keyFile string, roots *x509.CertPool, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "proxybench"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", nil, err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", nil, err
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", nil, err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return "", "", nil, err
	}
	c, _ := x509.ParseCertificate(der)
	roots = x509.NewCertPool()
	roots.AddCert(c)
	return certFile, keyFile, roots, nil
}

// nginxConf terminates TLS on 127.0.0.1 only and proxies to the app over an upstream
// keep-alive pool; worker_processes matches the Go processes' GOMAXPROCS.
const nginxConf = `daemon off;
master_process on;
worker_processes %d;
pid %[2]s/nginx.pid;
error_log %[2]s/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[2]s/body;
  proxy_temp_path %[2]s/proxy;
  fastcgi_temp_path %[2]s/fastcgi;
  uwsgi_temp_path %[2]s/uwsgi;
  scgi_temp_path %[2]s/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  upstream app {
    server %[3]s;
    keepalive 256;
    keepalive_requests 1000000;
  }
  server {
    listen %[4]s ssl;
    ssl_certificate %[5]s;
    ssl_certificate_key %[6]s;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_buffering on;
    }
  }
}
`

const policyYAML = `issuers:
  - url: %s
    caFile: %s
identities:
  edge:  {mrenclave: ["%s"], allowDebug: true}
  front: {mrenclave: ["%s"], allowDebug: true}
  back:  {mrenclave: ["%s"], allowDebug: true}
  third: {mrenclave: ["%s"], allowDebug: true}
`

const proxyHead = `attester:
  type: sim
  simPlatformKey: %s
  simIdentity: {mrenclave: "%s"}
attestationService:
  url: %s
  caFile: %s
policyFile: %s
identity: %s
claimed: {app-image: "sha256:0000000000000000000000000000000000000000000000000000000000000000"}
admin:
  listen: %s
`

// setup starts the attestation service, the app, the Go reverse proxy, nginx, four of our
// proxies (edge, front, back, third) and redis-server, and waits for all to be ready.
func setup(ctx context.Context, o *Options, t *topology) error {
	dir := t.dir
	bin := func(n string) string { return filepath.Join(o.BinDir, n) }
	for _, n := range []string{"proxy", "attestation-service"} {
		if _, err := os.Stat(bin(n)); err != nil {
			return fmt.Errorf("%s: %w (run `make build`, or pass -bin)", bin(n), err)
		}
	}
	var err error
	ports := map[string]*string{
		"app": &t.app, "appTLS": &t.appTLS, "relayDirect": &t.relayDirect, "relayChain": &t.relayChain,
		"goproxy": &t.goproxy, "nginx": &t.nginx, "edge": &t.edge, "frontOut": &t.frontOut,
		"backIn": &t.backIn, "backOut": &t.backOut, "thirdIn": &t.thirdIn, "redis": &t.redis, "frontRedis": &t.frontRedis,
		"frontOut2": &t.frontOut2, "backIn2": &t.backIn2, "backRedis": &t.backRedis,
	}
	for _, p := range ports {
		if *p, err = freePort(); err != nil {
			return err
		}
	}
	certFile, keyFile, roots, err := selfCert(dir)
	if err != nil {
		return err
	}
	t.roots = roots

	// The local attestation service and a simulated platform key it trusts.
	platform := filepath.Join(dir, "platform.pem")
	if out, err := exec.CommandContext(ctx, bin("proxy"), "sim-platform-key", "--out", platform).CombinedOutput(); err != nil {
		return fmt.Errorf("proxy sim-platform-key: %v: %s", err, out)
	}
	caFile := filepath.Join(dir, "attest-ca.pem")
	svc, err := t.start("attestation-service", nil, bin("attestation-service"), "--listen", "127.0.0.1:0",
		"--signing-key", filepath.Join(dir, "signing.pem"), "--signing-cert", filepath.Join(dir, "signing-cert.pem"),
		"--tls-ca-out", caFile, "--sim-platform-key", platform+".pub", "--token-lifetime", "8h")
	if err != nil {
		return err
	}
	issuer, err := scanLine(ctx, svc, func(s string) (string, bool) {
		_, after, ok := strings.Cut(s, "issuer=")
		if !ok || !strings.Contains(s, "listening on") {
			return "", false
		}
		return strings.Fields(after)[0], true
	})
	if err != nil {
		return err
	}
	policy, err := writeFile(dir, "policy.yaml", fmt.Sprintf(policyYAML, issuer, caFile, mr["edge"], mr["front"], mr["back"], mr["third"]))
	if err != nil {
		return err
	}

	// The app (and its relays) and the plain Go reverse proxy: this executable in helper roles.
	self, err := os.Executable()
	if err != nil {
		return err
	}
	app, err := t.start("app", []string{RoleEnv + "=app"}, self, "-plain", t.app, "-tls", t.appTLS, "-cert", certFile, "-key", keyFile,
		"-relay-direct", t.relayDirect, "-relay-chain", t.relayChain, "-relay-chain-to", "http://"+t.backOut)
	if err != nil {
		return err
	}
	gp, err := t.start("go-reverse-proxy", []string{RoleEnv + "=goproxy"}, self, "-listen", t.goproxy, "-to", t.app, "-cert", certFile, "-key", keyFile)
	if err != nil {
		return err
	}
	waits := []struct {
		p    *proc
		addr string
	}{{app, t.app}, {app, t.appTLS}, {app, t.relayDirect}, {app, t.relayChain}, {gp, t.goproxy}}

	if _, err := exec.LookPath("nginx"); err == nil && !o.Skip["nginx"] {
		conf, err := writeFile(dir, "nginx.conf", fmt.Sprintf(nginxConf, o.Workers, dir, t.app, t.nginx, certFile, keyFile))
		if err != nil {
			return err
		}
		ng, err := t.start("nginx", nil, "nginx", "-p", dir, "-c", conf, "-e", filepath.Join(dir, "nginx-error.log"))
		if err != nil {
			return err
		}
		waits = append(waits, struct {
			p    *proc
			addr string
		}{ng, t.nginx})
	} else {
		t.nginx = ""
	}
	redisOK := false
	if _, err := exec.LookPath("redis-server"); err == nil && !o.Skip["redis"] {
		if _, err := exec.LookPath("redis-benchmark"); err == nil {
			redisOK = true
		}
	}
	if redisOK {
		_, port, _ := net.SplitHostPort(t.redis)
		rs, err := t.start("redis-server", nil, "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
			"--appendonly", "no", "--dir", dir)
		if err != nil {
			return err
		}
		waits = append(waits, struct {
			p    *proc
			addr string
		}{rs, t.redis})
	} else {
		t.redis = ""
	}

	// Our proxies, as the built binary: `proxy run --config`.
	head := func(name string) (string, string, error) {
		adm, err := freePort()
		return fmt.Sprintf(proxyHead, platform, mr[name], issuer, caFile, policy, name, adm), adm, err
	}
	confs := map[string]string{
		"edge": fmt.Sprintf(`inbound:
  - {name: public, listen: "%s", protocol: http, forwardTo: "%s", public: true, certFile: %s, keyFile: %s}
`, t.edge, t.app, certFile, keyFile),
		"front": fmt.Sprintf(`outbound:
  - {name: to-back, listen: "%s", protocol: http, upstream: "%s", upstreamIdentity: [back], authority: back.internal}
  - {name: to-back-relay, listen: "%s", protocol: http, upstream: "%s", upstreamIdentity: [back], authority: back.internal}
`, t.frontOut, t.backIn, t.frontOut2, t.backIn2),
		"back": fmt.Sprintf(`inbound:
  - {name: api, listen: "%s", protocol: http, forwardTo: "%s", allow: [front]}
  - {name: relay, listen: "%s", protocol: http, forwardTo: "%s", allow: [front]}
outbound:
  - {name: to-third, listen: "%s", protocol: http, upstream: "%s", upstreamIdentity: [third], authority: third.internal}
`, t.backIn, t.app, t.backIn2, t.relayChain, t.backOut, t.thirdIn),
		"third": fmt.Sprintf(`inbound:
  - {name: api, listen: "%s", protocol: http, forwardTo: "%s", allow: [back]}
chain:
  identities: [front, back]
`, t.thirdIn, t.app),
	}
	if redisOK {
		confs["front"] += fmt.Sprintf("  - {name: redis, listen: \"%s\", protocol: tcp, upstream: \"%s\", upstreamIdentity: [back]}\n", t.frontRedis, t.backRedis)
		confs["back"] = strings.Replace(confs["back"], "outbound:", fmt.Sprintf("  - {name: redis, listen: \"%s\", protocol: tcp, forwardTo: \"%s\", allow: [front]}\noutbound:", t.backRedis, t.redis), 1)
	} else {
		t.frontRedis = ""
	}
	type ready struct {
		p     *proc
		admin string
	}
	var readies []ready
	for _, name := range []string{"third", "back", "front", "edge"} {
		h, adm, err := head(name)
		if err != nil {
			return err
		}
		cf, err := writeFile(dir, name+".yaml", h+confs[name])
		if err != nil {
			return err
		}
		p, err := t.start(name, nil, bin("proxy"), "run", "--config", cf, "--log-level", "warn")
		if err != nil {
			return err
		}
		readies = append(readies, ready{p, adm})
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for _, w := range waits {
		if err := waitTCP(wctx, w.p, w.addr); err != nil {
			return err
		}
	}
	for _, r := range readies {
		if err := waitReady(wctx, r.p, r.admin); err != nil {
			return err
		}
	}
	return nil
}
