package proxybench

import (
	"context"
	"crypto/x509"
	"debug/buildinfo"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Simulated measurements of the three proxies' identities.
var mr = map[string]string{
	"front": strings.Repeat("f2", 32),
	"back":  strings.Repeat("b3", 32),
	"third": strings.Repeat("d4", 32),
}

// topology is every process of one bench run and their addresses.
type topology struct {
	dir   string
	procs []*proc
	roots *x509.CertPool

	app, relayDirect, relayChain             string
	goA, goB, goACount                       string
	ngA, ngB, haA, haB                       string
	frontOut, frontOut2, frontCount, thirdIn string
	backIn, backIn2, backOut                 string
	// counting relays: goACount → goCount → goB; frontCount → ourCount → backIn
	goCount, ourCount *counter

	redis, frontRedis, backRedis string
	stA, stB, haRedisA, haRedisB string

	// proxyBuild describes the proxy binary measured (build tags, whether it links xDS).
	proxyBuild string

	// the processes measured, by name
	byName map[string]*proc
}

func (t *topology) stop() {
	for i := len(t.procs) - 1; i >= 0; i-- {
		t.procs[i].stop(10 * time.Second)
	}
	for _, c := range []*counter{t.goCount, t.ourCount} {
		if c != nil {
			c.close()
		}
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

// nginxA is the front of the nginx pair: plaintext in, TLS 1.3 with a client certificate to
// nginxB over an upstream keep-alive pool. Both nginx processes run worker_processes equal to
// the core count (the Go processes' GOMAXPROCS) and keepalive_requests 1000000 on both sides
// (the default of 1000 would close keep-alive connections under wrk).
const nginxCommon = `daemon off;
master_process on;
worker_processes %d;
pid %[2]s/nginx-%[3]s.pid;
error_log %[2]s/nginx-%[3]s-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[2]s/body-%[3]s;
  proxy_temp_path %[2]s/proxy-%[3]s;
  fastcgi_temp_path %[2]s/fastcgi-%[3]s;
  uwsgi_temp_path %[2]s/uwsgi-%[3]s;
  scgi_temp_path %[2]s/scgi-%[3]s;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
`

const nginxA = `  upstream b {
    server %[1]s;
    keepalive 256;
    keepalive_requests 1000000;
  }
  server {
    listen %[2]s;
    location / {
      proxy_pass https://b;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_ssl_protocols TLSv1.3;
      proxy_ssl_certificate %[3]s;
      proxy_ssl_certificate_key %[4]s;
      proxy_ssl_trusted_certificate %[5]s;
      proxy_ssl_verify on;
      proxy_ssl_name localhost;
      proxy_ssl_session_reuse on;
    }
  }
}
`

const nginxB = `  upstream app {
    server %[1]s;
    keepalive 256;
    keepalive_requests 1000000;
  }
  server {
    listen %[2]s ssl;
    ssl_protocols TLSv1.3;
    ssl_certificate %[3]s;
    ssl_certificate_key %[4]s;
    ssl_client_certificate %[5]s;
    ssl_verify_client on;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
    }
  }
}
`

// haproxyA is the front of the HAProxy pair, HTTP and TCP: plaintext in, TLS 1.3 with a
// client certificate to haproxyB, which requires it. One process each (-db: no master), as
// many threads as cores, connections to the next hop reused.
const haproxyCommon = `global
  nbthread %d
  maxconn 8192
  ssl-default-bind-options ssl-min-ver TLSv1.3
  ssl-default-server-options ssl-min-ver TLSv1.3
defaults
  timeout connect 5s
  timeout client 2m
  timeout server 2m
  timeout http-keep-alive 2m
`

const haproxyA = `frontend http
  mode http
  option http-keep-alive
  bind %[1]s
  default_backend b
backend b
  mode http
  http-reuse always
  server b %[2]s ssl crt %[3]s ca-file %[4]s verify required
frontend redis
  mode tcp
  bind %[5]s
  default_backend redisb
backend redisb
  mode tcp
  server b %[6]s ssl crt %[3]s ca-file %[4]s verify required
`

const haproxyB = `frontend https
  mode http
  option http-keep-alive
  bind %[1]s ssl crt %[3]s ca-file %[4]s verify required
  default_backend app
backend app
  mode http
  http-reuse always
  server app %[2]s
frontend redis
  mode tcp
  bind %[5]s ssl crt %[3]s ca-file %[4]s verify required
  default_backend redis
backend redis
  mode tcp
  server redis %[6]s
`

// stunnel pair for Redis: A accepts plaintext and connects with TLS 1.3 and a client
// certificate; B requires and verifies it.
const stunnelConf = `foreground = yes
pid =
debug = warning
[redis]
%[1]s
accept = %[2]s
connect = %[3]s
cert = %[4]s
key = %[5]s
CAfile = %[6]s
verifyChain = yes
sslVersionMin = TLSv1.3
`

const policyYAML = `issuers:
  - url: %s
    caFile: %s
identities:
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

// setup starts the attestation service, the app, the Go, nginx and HAProxy pairs, three of
// our proxies (front, back, third), redis-server with a stunnel pair, and the counting relays,
// and waits for all to be ready.
func setup(ctx context.Context, o *Options, t *topology) error {
	dir := t.dir
	bin := func(n string) string { return filepath.Join(o.BinDir, n) }
	for _, n := range []string{o.ProxyBin, "attestation-service"} {
		if _, err := os.Stat(bin(n)); err != nil {
			return fmt.Errorf("%s: %w (run `make build`, or pass -bin)", bin(n), err)
		}
	}
	for _, tool := range []string{"nginx", "haproxy", "redis-server", "redis-benchmark", "stunnel4"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: the harness compares against it; install the packages of scripts/deps.d/proxy.txt and bench.txt (./scripts/install-deps.sh)", tool)
		}
	}
	t.proxyBuild = describeBuild(bin(o.ProxyBin))
	var err error
	ports := []*string{
		&t.app, &t.relayDirect, &t.relayChain, &t.goA, &t.goB, &t.goACount, &t.ngA, &t.ngB, &t.haA, &t.haB,
		&t.frontOut, &t.frontOut2, &t.frontCount, &t.thirdIn, &t.backIn, &t.backIn2, &t.backOut,
		&t.redis, &t.frontRedis, &t.backRedis, &t.stA, &t.stB, &t.haRedisA, &t.haRedisB,
	}
	for _, p := range ports {
		if *p, err = freePort(); err != nil {
			return err
		}
	}
	pk, err := newPKI(dir)
	if err != nil {
		return err
	}
	t.roots = pk.roots
	if t.goCount, err = newCounter(t.goB); err != nil {
		return err
	}
	if t.ourCount, err = newCounter(t.backIn); err != nil {
		return err
	}

	// The local attestation service and a simulated platform key it trusts.
	platform := filepath.Join(dir, "platform.pem")
	if out, err := exec.CommandContext(ctx, bin(o.ProxyBin), "sim-platform-key", "--out", platform).CombinedOutput(); err != nil {
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
	policy, err := writeFile(dir, "policy.yaml", fmt.Sprintf(policyYAML, issuer, caFile, mr["front"], mr["back"], mr["third"]))
	if err != nil {
		return err
	}

	type wait struct {
		p    *proc
		addr string
	}
	var waits []wait
	self, err := os.Executable()
	if err != nil {
		return err
	}
	// The app (and its relays) and the Go pair: this executable in helper roles.
	app, err := t.start("app", []string{RoleEnv + "=app"}, self, "-plain", t.app,
		"-relay-direct", t.relayDirect, "-relay-chain", t.relayChain, "-relay-chain-to", "http://"+t.backOut)
	if err != nil {
		return err
	}
	waits = append(waits, wait{app, t.app}, wait{app, t.relayDirect}, wait{app, t.relayChain})
	goproxy := func(name, listen, to string, serveTLS bool) error {
		args := []string{"-listen", listen, "-to", to, "-cert", pk.certFile, "-key", pk.keyFile, "-ca", pk.caFile}
		if serveTLS {
			args = append(args, "-tls")
		}
		p, err := t.start(name, []string{RoleEnv + "=goproxy"}, self, args...)
		waits = append(waits, wait{p, listen})
		return err
	}
	if err := errors.Join(
		goproxy("go-b", t.goB, "http://"+t.app, true),
		goproxy("go-a", t.goA, "https://"+t.goB, false),
		goproxy("go-a-count", t.goACount, "https://"+t.goCount.addr(), false),
	); err != nil {
		return err
	}

	// nginx pair.
	for _, n := range []struct{ name, conf, addr string }{
		{"nginx-b", fmt.Sprintf(nginxB, t.app, t.ngB, pk.certFile, pk.keyFile, pk.caFile), t.ngB},
		{"nginx-a", fmt.Sprintf(nginxA, t.ngB, t.ngA, pk.certFile, pk.keyFile, pk.caFile), t.ngA},
	} {
		conf, err := writeFile(dir, n.name+".conf", fmt.Sprintf(nginxCommon, o.Workers, dir, n.name)+n.conf)
		if err != nil {
			return err
		}
		p, err := t.start(n.name, nil, "nginx", "-p", dir, "-c", conf, "-e", filepath.Join(dir, n.name+"-error.log"))
		if err != nil {
			return err
		}
		waits = append(waits, wait{p, n.addr})
	}
	// HAProxy pair (HTTP and TCP).
	for _, h := range []struct{ name, conf, addr string }{
		{"haproxy-b", fmt.Sprintf(haproxyB, t.haB, t.app, pk.pemFile, pk.caFile, t.haRedisB, t.redis), t.haB},
		{"haproxy-a", fmt.Sprintf(haproxyA, t.haA, t.haB, pk.pemFile, pk.caFile, t.haRedisA, t.haRedisB), t.haA},
	} {
		conf, err := writeFile(dir, h.name+".cfg", fmt.Sprintf(haproxyCommon, o.Workers)+h.conf)
		if err != nil {
			return err
		}
		p, err := t.start(h.name, nil, "haproxy", "-db", "-f", conf)
		if err != nil {
			return err
		}
		waits = append(waits, wait{p, h.addr})
	}
	// redis-server and the stunnel pair.
	_, port, _ := net.SplitHostPort(t.redis)
	rs, err := t.start("redis-server", nil, "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--dir", dir)
	if err != nil {
		return err
	}
	waits = append(waits, wait{rs, t.redis})
	for _, s := range []struct{ name, mode, accept, connect string }{
		{"stunnel-b", "requireCert = yes", t.stB, t.redis},
		{"stunnel-a", "client = yes", t.stA, t.stB},
	} {
		conf, err := writeFile(dir, s.name+".conf", fmt.Sprintf(stunnelConf, s.mode, s.accept, s.connect, pk.certFile, pk.keyFile, pk.caFile))
		if err != nil {
			return err
		}
		p, err := t.start(s.name, nil, "stunnel4", conf)
		if err != nil {
			return err
		}
		waits = append(waits, wait{p, s.accept})
	}

	// Our proxies, as the built binary: `proxy run --config`.
	head := func(name string) (string, string, error) {
		adm, err := freePort()
		return fmt.Sprintf(proxyHead, platform, mr[name], issuer, caFile, policy, name, adm), adm, err
	}
	confs := map[string]string{
		"front": fmt.Sprintf(`outbound:
  - {name: to-back, listen: "%s", protocol: http, upstream: "%s", upstreamIdentity: [back], authority: back.internal}
  - {name: to-back-relay, listen: "%s", protocol: http, upstream: "%s", upstreamIdentity: [back], authority: back.internal}
  - {name: to-back-counted, listen: "%s", protocol: http, upstream: "%s", upstreamIdentity: [back], authority: back.internal}
  - {name: redis, listen: "%s", protocol: tcp, upstream: "%s", upstreamIdentity: [back]}
`, t.frontOut, t.backIn, t.frontOut2, t.backIn2, t.frontCount, t.ourCount.addr(), t.frontRedis, t.backRedis),
		"back": fmt.Sprintf(`inbound:
  - {name: api, listen: "%s", protocol: http, forwardTo: "%s", allow: [front]}
  - {name: relay, listen: "%s", protocol: http, forwardTo: "%s", allow: [front]}
  - {name: redis, listen: "%s", protocol: tcp, forwardTo: "%s", allow: [front]}
outbound:
  - {name: to-third, listen: "%s", protocol: http, upstream: "%s", upstreamIdentity: [third], authority: third.internal}
`, t.backIn, t.app, t.backIn2, t.relayChain, t.backRedis, t.redis, t.backOut, t.thirdIn),
		"third": fmt.Sprintf(`inbound:
  - {name: api, listen: "%s", protocol: http, forwardTo: "%s", allow: [back]}
chain:
  identities: [front, back]
`, t.thirdIn, t.app),
	}
	type ready struct {
		p     *proc
		admin string
	}
	var readies []ready
	for _, name := range []string{"third", "back", "front"} {
		h, adm, err := head(name)
		if err != nil {
			return err
		}
		cf, err := writeFile(dir, name+".yaml", h+confs[name])
		if err != nil {
			return err
		}
		p, err := t.start(name, nil, bin(o.ProxyBin), "run", "--config", cf, "--log-level", "warn")
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

// describeBuild says how the proxy binary was built: its -tags and whether it links the xDS
// client (go-control-plane among its modules), from the build information Go embeds.
func describeBuild(path string) string {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("%s (build information unreadable: %v)", path, err)
	}
	tags := "none"
	for _, s := range bi.Settings {
		if s.Key == "-tags" && s.Value != "" {
			tags = s.Value
		}
	}
	xds := "no"
	for _, d := range bi.Deps {
		if strings.Contains(d.Path, "go-control-plane") {
			xds = "yes"
		}
	}
	return fmt.Sprintf("%s (-tags %s; links the xDS client: %s)", filepath.Base(path), tags, xds)
}
