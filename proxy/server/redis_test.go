package server_test

import (
	"github.com/countersign/countersign/internal/testnet"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/proxy/config"
)

// TestRedisThroughTCPPair: redis-server behind back's inbound TCP listener; redis-cli and
// redis-benchmark talk to front's outbound listener.
func TestRedisThroughTCPPair(t *testing.T) {
	requireRedis(t)
	port := testnet.FreePort(t)
	srv := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	redisAddr := "127.0.0.1:" + strconv.Itoa(port)
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", redisAddr); err == nil {
			c.Close()
			break
		}
		if i > 100 {
			t.Fatal("redis-server did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	e := newEnv(t, time.Hour)
	bc := e.cfg("back", mrBack)
	bc.Inbound = []config.Inbound{{
		Name:      "redis",
		Listen:    "127.0.0.1:0",
		Protocol:  "tcp",
		ForwardTo: redisAddr,
		Allow:     []string{"front"},
	}}
	back := e.start(bc)
	fc := e.cfg("front", mrFront)
	fc.Outbound = []config.Outbound{{
		Name:             "redis",
		Listen:           "127.0.0.1:0",
		Protocol:         "tcp",
		Upstream:         back.Addr("redis"),
		UpstreamIdentity: []string{"back"},
	}}
	front := e.start(fc)
	_, p, _ := net.SplitHostPort(front.Addr("redis"))
	cli := func(args ...string) string {
		out, err := exec.Command("redis-cli", append([]string{"-h", "127.0.0.1", "-p", p}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("redis-cli %v: %v: %s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := cli("SET", "patient:1", "x-ray ok"); got != "OK" {
		t.Fatalf("SET: %q", got)
	}
	if got := cli("GET", "patient:1"); got != "x-ray ok" {
		t.Fatalf("GET: %q", got)
	}
	out, err := exec.Command("redis-benchmark", "-h", "127.0.0.1", "-p", p, "-q", "-n", "2000", "-c", "4", "-t", "set,get").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "requests per second") {
		t.Fatalf("redis-benchmark through the pair: %v: %s", err, out)
	}
	t.Logf("redis-benchmark through the pair:\n%s", out)

	// A rogue proxy cannot reach redis through back.
	rc := e.cfg("rogue", mrRogue)
	rc.Outbound = []config.Outbound{{
		Name:             "redis",
		Listen:           "127.0.0.1:0",
		Protocol:         "tcp",
		Upstream:         back.Addr("redis"),
		UpstreamIdentity: []string{"back"},
	}}
	rogue := e.start(rc)
	_, rp, _ := net.SplitHostPort(rogue.Addr("redis"))
	if out, err := exec.Command("redis-cli", "-h", "127.0.0.1", "-p", rp, "GET", "patient:1").CombinedOutput(); err == nil && strings.Contains(string(out), "x-ray") {
		t.Fatalf("a rogue proxy read redis: %s", out)
	}
	waitMetric(t, back, "redis", "mrenclave_mismatch", 1)
}
