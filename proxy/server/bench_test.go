package server_test

import (
	"context"
	"io"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/countersign/countersign/proxy/attestedtls"
	"github.com/countersign/countersign/proxy/chain"
	"github.com/countersign/countersign/proxy/config"
)

// BenchmarkHTTPPair sends GETs through an attested pair (front's outbound → back's inbound →
// app), all in this process, over 8 keep-alive connections. Besides ns/op it reports the
// process's CPU time per request (cpu-µs/req), which other load on a shared machine disturbs
// less than wall time.
func BenchmarkHTTPPair(b *testing.B) {
	e := newEnv(b, time.Hour)
	front, _, _ := pair(b, e)
	url := "http://" + front.Addr("to-back") + "/x"
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	do := func() error {
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d: %s", resp.StatusCode, resp.Header.Get("Countersign-Reject-Detail"))
		}
		return err
	}
	for range 100 {
		if err := do(); err != nil {
			b.Fatal(err)
		}
	}
	cpu := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b.SetParallelism(4) // 4 × GOMAXPROCS goroutines: 8 on 2 cores
	start := cpu()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := do(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(cpu()-start)/float64(time.Microsecond)/float64(b.N), "cpu-µs/req")
}

// BenchmarkChainVerify is the inbound side's chain check of one request (chain.Live.Verify of
// a one-entry chain from the connected peer): token check (cached), entry signature, last-hop
// key, request digest, replay window. Entries are signed before the timer starts.
func BenchmarkChainVerify(b *testing.B) {
	e := newEnv(b, time.Hour)
	front := e.start(func() *config.Config {
		c := e.cfg("front", mrFront)
		c.Outbound = []config.Outbound{{
			Name:             "o",
			Listen:           "127.0.0.1:0",
			Protocol:         "http",
			Upstream:         "127.0.0.1:1",
			UpstreamIdentity: []string{"back"},
		}}
		return c
	}())
	ctx := context.Background()
	cur := front.Identity.Current()
	peer, err := attestedtls.Verify(ctx, front.Engine, cur.Cert.Leaf, []string{"front"})
	if err != nil {
		b.Fatal(err)
	}
	self := chain.Self{Key: cur.Key, Token: cur.Token.Raw}
	req := chain.RequestDigest("GET", "back.internal", "/x", nil)
	now := time.Now()
	hdrs := make([]string, b.N)
	for i := range hdrs {
		if hdrs[i], _, err = chain.Append(nil, self, req, now); err != nil {
			b.Fatal(err)
		}
	}
	live := &chain.Live{Checker: front.Engine, Window: 30 * time.Second, Replay: chain.NewTTLSet[[32]byte, struct{}](b.N + 1),
		Limits: chain.Limits{MaxHops: 8, MaxBytes: 65536, MaxAge: 5 * time.Minute, Skew: 30 * time.Second}}
	b.ResetTimer()
	for i := range b.N {
		if _, err := live.Verify(ctx, []string{hdrs[i]}, nil, peer, req, []string{"front"}, now); err != nil {
			b.Fatal(err)
		}
	}
}
