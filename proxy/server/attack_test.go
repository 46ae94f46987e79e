package server_test

import (
	"crypto/sha256"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/proxy/chain"
	"github.com/countersign/countersign/proxy/config"
)

func selfOf(p *proxyT) chain.Self {
	c := p.Identity.Current()
	return chain.Self{Key: c.Key, Token: c.Token.Raw}
}

func oneHop(t *testing.T, enc string) *chain.Chain {
	e, _, _, err := chain.ParseEntry(enc)
	if err != nil {
		t.Fatal(err)
	}
	return &chain.Chain{Hops: []chain.Hop{{Entry: e, Encoded: enc}}}
}

// TestChainAttacksRefused acts as the front proxy (its certificate and key) and sends crafted
// chains: a valid two-hop chain passes once; its replay, a reordered, a truncated and a
// spliced chain are refused with their reason codes.
//
// With chain.peerSignatures: channel every attack is refused the same way: only the ECDSA
// signature of the connected peer's own last entry is left unverified (the attested
// connection authenticates it), which the "last signature" case shows.
func TestChainAttacksRefused(t *testing.T) {
	for _, mode := range []string{config.PeerSignaturesVerify, config.PeerSignaturesChannel} {
		t.Run(mode, func(t *testing.T) { chainAttacks(t, mode) })
	}
}

// resigned is enc with the signature (and proof) of other: a well-formed entry whose
// signature is not over its payload.
func resigned(enc, other string) string {
	p := strings.SplitN(enc, ".", 2)
	q := strings.SplitN(other, ".", 2)
	return p[0] + "." + q[1]
}

func chainAttacks(t *testing.T, mode string) {
	e := newEnv(t, time.Hour)
	a, _ := newApp(t)
	bc := e.cfg("back", mrBack)
	bc.Chain.PeerSignatures = mode
	bc.Inbound = []config.Inbound{{
		Name:      "api",
		Listen:    "127.0.0.1:0",
		Protocol:  "http",
		ForwardTo: strings.TrimPrefix(a.URL, "http://"),
		Allow:     []string{"front"},
	}}
	bc.Chain.Identities = []string{"front", "third"}
	back := e.start(bc)
	withOut := func(c *config.Config) *config.Config {
		c.Outbound = []config.Outbound{{
			Name:             "o",
			Listen:           "127.0.0.1:0",
			Protocol:         "http",
			Upstream:         back.Addr("api"),
			UpstreamIdentity: []string{"back"},
		}}
		return c
	}
	front := e.start(withOut(e.cfg("front", mrFront)))
	third := e.start(withOut(e.cfg("third", mrThird)))
	client := attestedClient(&front.Identity.Current().Cert)
	empty := sha256.Sum256(nil)
	reqDigest := chain.RequestDigest("GET", "back.internal", "/x", empty[:])
	send := func(chainHdr, tokens string) *http.Response {
		req, _ := http.NewRequest("GET", "https://"+back.Addr("api")+"/x", nil)
		req.Host = "back.internal"
		req.Header.Set(chain.HeaderChain, chainHdr)
		if tokens != "" {
			req.Header.Set(chain.HeaderTokens, tokens)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	now := time.Now()
	t0, _, _ := chain.Append(nil, selfOf(third), [32]byte{1}, now)
	good, _, err := chain.Append(oneHop(t, t0), selfOf(front), reqDigest, now)
	if err != nil {
		t.Fatal(err)
	}
	tokens := selfOf(third).Token
	if r := send(good, tokens); r.StatusCode != 200 {
		t.Fatalf("valid chain: %d %s %s", r.StatusCode, r.Header.Get(chain.HeaderReject), r.Header.Get(chain.HeaderRejectCause))
	}
	parts := strings.Split(good, ",")
	otherT0, _, _ := chain.Append(nil, selfOf(third), [32]byte{2}, now)
	fresh := func() string { // a new valid last entry over t0
		h, _, _ := chain.Append(oneHop(t, t0), selfOf(front), reqDigest, time.Now())
		return strings.Split(h, ",")[1]
	}
	f0 := mustAppend(t, nil, selfOf(front), [32]byte{3})
	cases := []struct {
		name, chain, tokens, code string
	}{
		{"replayed", good, tokens, "chain_replayed"},
		{"reordered", fresh() + "," + parts[0], tokens, "chain_order_invalid"},
		{"truncated", fresh(), tokens, "chain_order_invalid"},
		{"spliced", otherT0 + "," + fresh(), tokens, "chain_link_broken"},
		{"duplicated", parts[0] + "," + parts[0] + "," + fresh(), tokens, "chain_duplicate_entry"},
		{"missing token", t0 + "," + fresh(), "", "chain_token_unavailable"},
		{"wrong request", good[:0] + t0 + "," + strings.Split(mustAppend(t, oneHop(t, t0), selfOf(front), [32]byte{9}), ",")[1], tokens, "chain_request_mismatch"},
		{"last hop not the peer", mustAppend(t, oneHop(t, f0), selfOf(third), reqDigest), tokens, "chain_last_hop_not_peer"},
		{"earlier signature", resigned(t0, otherT0) + "," + fresh(), tokens, "chain_signature_invalid"},
	}
	last := t0 + "," + resigned(fresh(), fresh())
	if mode == config.PeerSignaturesVerify {
		cases = append(cases, struct{ name, chain, tokens, code string }{"last signature", last, tokens, "chain_signature_invalid"})
	} else if r := send(last, tokens); r.StatusCode != 200 {
		t.Errorf("channel mode, the peer's own last entry with a bad signature: %d %s; want 200 (documented: the connection authenticates it)", r.StatusCode, r.Header.Get(chain.HeaderReject))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := send(c.chain, c.tokens)
			if r.StatusCode != http.StatusForbidden || r.Header.Get(chain.HeaderReject) != c.code {
				t.Errorf("status %d reason %q (%s), want 403 %s", r.StatusCode, r.Header.Get(chain.HeaderReject), r.Header.Get(chain.HeaderRejectCause), c.code)
			}
		})
	}
}

func mustAppend(t *testing.T, prev *chain.Chain, self chain.Self, req [32]byte) string {
	h, _, err := chain.Append(prev, self, req, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestAttestationServiceOutage: tokens live 4s. With the service down, traffic continues on
// the tokens already loaded; once they expire the path fails closed; when the service returns
// the proxies recover on their own.
func TestAttestationServiceOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for tokens to expire")
	}
	e := newEnv(t, 4*time.Second)
	front, back, _ := pair(t, e)
	url := "http://" + front.Addr("to-back") + "/"
	ok := func() (bool, string) {
		resp, err := http.Get(url)
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status + " " + resp.Header.Get(chain.HeaderReject)
	}
	if good, why := ok(); !good {
		t.Fatalf("before the outage: %s", why)
	}
	e.down.Store(true)
	downAt := time.Now()
	exp := front.Identity.Current().Expiry
	if be := back.Identity.Current().Expiry; be.Before(exp) {
		exp = be
	}
	// Still valid: traffic continues.
	for time.Until(exp) > 1500*time.Millisecond {
		if good, why := ok(); !good {
			t.Fatalf("%.1fs into the outage, before expiry: %s", time.Since(downAt).Seconds(), why)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// After expiry (plus the policy's 1s skew): fails closed.
	time.Sleep(time.Until(exp) + 1500*time.Millisecond)
	if good, why := ok(); good {
		t.Fatalf("after every token expired, a request still went through (%s)", why)
	}
	if front.Identity.Ready() {
		t.Error("front still ready after its token expired")
	}
	e.down.Store(false)
	deadline := time.Now().Add(15 * time.Second)
	for {
		good, why := ok()
		if good {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after the service returned: %s", why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func requireRedis(t *testing.T) {
	t.Helper()
	for _, b := range []string{"redis-server", "redis-cli", "redis-benchmark"} {
		if _, err := exec.LookPath(b); err != nil {
			if testing.Short() {
				t.Skipf("%s not installed (skipped under -short)", b)
			}
			t.Fatalf("%s is not installed: run scripts/install-deps.sh (Debian packages redis-server, redis-tools; listed in scripts/deps.d/proxy.txt)", b)
		}
	}
}
