package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/countersign/countersign/proxy/config"
)

type verifiedSummary struct {
	Peer string `json:"peer"`
	Hops []struct {
		Identity string `json:"identity"`
	} `json:"hops"`
}

func hopsOf(t *testing.T, h http.Header) []string {
	t.Helper()
	var s verifiedSummary
	if err := json.Unmarshal([]byte(h.Get("Countersign-Verified")), &s); err != nil {
		t.Fatalf("Countersign-Verified %q: %v", h.Get("Countersign-Verified"), err)
	}
	var ids []string
	for _, hop := range s.Hops {
		ids = append(ids, hop.Identity)
	}
	return ids
}

// TestChainContinuesThroughRelayApp: front → back's app, which calls third through back's
// outbound listener while it handles the request, passing the chain headers on. third sees a
// chain of two hops (front, back). A call the app makes with the same headers after it
// answered starts a new chain: the inbound side forgets a chain once its request is done.
func TestChainContinuesThroughRelayApp(t *testing.T) {
	e := newEnv(t, 0)
	app3, last3 := newApp(t)
	tc := e.cfg("third", mrThird)
	tc.Inbound = []config.Inbound{{
		Name:      "api",
		Listen:    "127.0.0.1:0",
		Protocol:  "http",
		ForwardTo: strings.TrimPrefix(app3.URL, "http://"),
		Allow:     []string{"back"},
	}}
	tc.Chain.Identities = []string{"front", "back"}
	third := e.start(tc)

	var backOut atomic.Value // back's outbound address, known once back has started
	var saved atomic.Pointer[http.Header]
	relay := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := http.Header{}
		for k, v := range r.Header {
			if strings.HasPrefix(k, "Countersign-Chain") {
				h[k] = v
			}
		}
		saved.Store(&h)
		req, _ := http.NewRequest(http.MethodGet, "http://"+backOut.Load().(string)+"/onward", nil)
		for k, v := range h {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		fmt.Fprintf(w, "relayed: %s", b)
	}))
	defer relay.Close()
	bc := e.cfg("back", mrBack)
	bc.Inbound = []config.Inbound{{
		Name:      "api",
		Listen:    "127.0.0.1:0",
		Protocol:  "http",
		ForwardTo: strings.TrimPrefix(relay.URL, "http://"),
		Allow:     []string{"front"},
	}}
	bc.Outbound = []config.Outbound{{
		Name:             "to-third",
		Listen:           "127.0.0.1:0",
		Protocol:         "http",
		Upstream:         third.Addr("api"),
		UpstreamIdentity: []string{"third"},
	}}
	back := e.start(bc)
	backOut.Store(back.Addr("to-third"))
	fc := e.cfg("front", mrFront)
	fc.Outbound = []config.Outbound{{
		Name:             "to-back",
		Listen:           "127.0.0.1:0",
		Protocol:         "http",
		Upstream:         back.Addr("api"),
		UpstreamIdentity: []string{"back"},
	}}
	front := e.start(fc)

	resp, body := get(t, "http://"+front.Addr("to-back")+"/start", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, "relayed: GET") {
		t.Fatalf("through front, back's relay and third: %d %s (%s)", resp.StatusCode, body, resp.Header.Get("Countersign-Reject-Detail"))
	}
	if got := hopsOf(t, *last3.Load()); strings.Join(got, ",") != "front,back" {
		t.Fatalf("third saw hops %v, want [front back]", got)
	}

	// After the response: the same chain headers no longer continue anything.
	req, _ := http.NewRequest(http.MethodGet, "http://"+back.Addr("to-third")+"/late", nil)
	for k, v := range *saved.Load() {
		req.Header[k] = v
	}
	late, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	late.Body.Close()
	if late.StatusCode != 200 {
		t.Fatalf("late call: %d %s", late.StatusCode, late.Header.Get("Countersign-Reject-Detail"))
	}
	if got := hopsOf(t, *last3.Load()); strings.Join(got, ",") != "back" {
		t.Fatalf("a call after the answer continued the old chain: third saw hops %v, want [back]", got)
	}
}
