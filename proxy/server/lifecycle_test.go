package server_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/testproxy"
	"github.com/countersign/countersign/proxy/config"
	"github.com/countersign/countersign/proxy/server"
)

// errKilled is what a killed listener's Accept returns: not temporary, not net.ErrClosed, as
// a listener the kernel took away would.
var errKilled = errors.New("listener killed by the test")

// killable wraps a listener so that the test can make its Accept fail.
type killable struct {
	net.Listener
	once   sync.Once
	killed chan struct{}
}

func (k *killable) kill() { k.once.Do(func() { close(k.killed) }) }

func (k *killable) Accept() (net.Conn, error) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := k.Listener.Accept(); ch <- res{c, err} }()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-k.killed:
		k.Listener.Close()
		if r := <-ch; r.c != nil {
			r.c.Close()
		}
		return nil, errKilled
	}
}

// TestListenerFailureStopsProxy kills one data-path listener of a running proxy and checks
// the three things the kubelet relies on: /readyz turns false at once (while the rest drains),
// Run returns the failure (the binary then exits non-zero), and nothing is left serving.
func TestListenerFailureStopsProxy(t *testing.T) {
	for _, victim := range []string{"api", "db", "admin"} {
		t.Run(victim, func(t *testing.T) {
			e := newEnv(t, time.Hour)
			release := make(chan struct{})
			entered := make(chan struct{}, 1)
			slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				entered <- struct{}{}
				<-release
				io.WriteString(w, "late")
			}))
			defer slow.Close()
			defer func() {
				select {
				case <-release:
				default:
					close(release)
				}
			}()
			c := e.cfg("back", mrBack)
			c.Inbound = []config.Inbound{
				{
					Name:      "api",
					Listen:    "127.0.0.1:0",
					Protocol:  "http",
					ForwardTo: strings.TrimPrefix(slow.URL, "http://"),
					Allow:     []string{"front"},
				},
				{
					Name:      "db",
					Listen:    "127.0.0.1:0",
					Protocol:  "tcp",
					ForwardTo: "127.0.0.1:1",
					Allow:     []string{"front"},
				},
			}
			c.SetDefaults()
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			lns := map[string]*killable{}
			var mu sync.Mutex
			logs := &testproxy.Logs{}
			srv, err := server.New(c, server.Options{
				Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
				Listen: func(name, addr string) (net.Listener, error) {
					ln, err := net.Listen("tcp", addr)
					if err != nil {
						return nil, err
					}
					k := &killable{Listener: ln, killed: make(chan struct{})}
					mu.Lock()
					lns[name] = k
					mu.Unlock()
					return k, nil
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if t.Failed() {
					t.Logf("logs:\n%s", logs.String())
				}
			}()
			runErr := make(chan error, 1)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() { runErr <- srv.Run(ctx) }()
			readyz := func() (int, error) {
				resp, err := http.Get("http://" + srv.Addr("admin") + "/readyz")
				if err != nil {
					return 0, err
				}
				resp.Body.Close()
				return resp.StatusCode, nil
			}
			for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if code, _ := readyz(); code == http.StatusOK {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the proxy never became ready")
				}
			}

			// A request in flight through "api" holds the drain open, so /readyz can be read
			// between the failure and the end of Run.
			front := e.start(frontTo(e, srv.Addr("api")))
			inflight := make(chan error, 1)
			go func() {
				resp, err := http.Get("http://" + front.Addr("to-back") + "/")
				if err == nil {
					resp.Body.Close()
				}
				inflight <- err
			}()
			select {
			case <-entered:
			case <-time.After(10 * time.Second):
				t.Fatal("the request never reached the app")
			}

			mu.Lock()
			lns[victim].kill()
			mu.Unlock()
			for deadline := time.Now().Add(5 * time.Second); srv.Ready(); time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("still ready 5 s after a listener failed")
				}
			}
			if victim != "admin" {
				code, err := readyz()
				if err != nil || code != http.StatusServiceUnavailable {
					t.Fatalf("/readyz after the %s listener failed = %d, %v; want 503 while draining", victim, code, err)
				}
			}
			if f := srv.Failure(); f == nil || !errors.Is(f, errKilled) {
				t.Fatalf("Failure() = %v, want the killed listener's error", f)
			}
			select {
			case err := <-runErr:
				t.Fatalf("Run returned (%v) before the in-flight request drained", err)
			default:
			}
			close(release)
			select {
			case err := <-runErr:
				if err == nil || !errors.Is(err, errKilled) || !strings.Contains(err.Error(), "listener "+victim) {
					t.Fatalf("Run() = %v, want the failure of listener %s", err, victim)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return after a listener failed and the drain ended")
			}
			if err := <-inflight; err != nil {
				t.Errorf("the in-flight request was cut instead of drained: %v", err)
			}
			// Nothing is left serving: every listener of the proxy refuses connections.
			for _, name := range []string{"api", "db", "admin"} {
				if c, err := net.DialTimeout("tcp", srv.Addr(name), time.Second); err == nil {
					c.Close()
					t.Errorf("listener %s still accepts connections after Run returned", name)
				}
			}
		})
	}
}

// frontTo is a front proxy with an HTTP outbound to a back proxy at addr.
func frontTo(e *env, addr string) *config.Config {
	fc := e.cfg("front", mrFront)
	fc.Outbound = []config.Outbound{{
		Name:             "to-back",
		Listen:           "127.0.0.1:0",
		Protocol:         "http",
		Upstream:         addr,
		UpstreamIdentity: []string{"back"},
		Authority:        "back.internal",
	}}
	return fc
}
