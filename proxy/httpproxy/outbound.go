package httpproxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/proxy/attestedtls"
	"github.com/countersign/countersign/proxy/chain"
	"github.com/countersign/countersign/proxy/config"
	"github.com/countersign/countersign/proxy/identity"
)

// Outbound serves an outbound (loopback) listener: the app's plaintext requests go to the
// upstream proxy over attested mTLS with this hop's chain entry.
type Outbound struct {
	d    *Deps
	cfg  config.Outbound
	rp   *httputil.ReverseProxy
	mu   sync.Mutex
	gen  atomic.Pointer[generation]
	host string
}

// generation pairs an identity with the transport whose connections present it, so that an
// entry is always signed with the key the upstream sees on the connection.
type generation struct {
	cur *identity.Current
	tr  *http.Transport
}

type outState struct {
	gen         *generation
	chainHdr    string
	tokens      map[string]string // every token the receipt needs, by digest
	tokensHdr   string
	entryDigest string
	wantReceipt bool // the app asked for the receipt (Countersign-Want-Receipt: inline)
	// sent digests the request body as it goes upstream, for a streamed exchange's
	// countersignature (docs/protocol.md section 11).
	sent *bodyHash
}

type outKey struct{}

// fixedCert presents one generation's certificate.
type fixedCert struct{ c *identity.Current }

func (f fixedCert) Certificate() (*tls.Certificate, error) { return &f.c.Cert, nil }

// NewOutbound returns the handler of an outbound listener.
func NewOutbound(d *Deps, cfg config.Outbound) *Outbound {
	o := &Outbound{d: d, cfg: cfg}
	o.host, _, _ = net.SplitHostPort(cfg.Upstream)
	authority := cfg.Authority
	if authority == "" {
		authority = cfg.Upstream
	}
	o.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			st := pr.In.Context().Value(outKey{}).(*outState)
			pr.Out.URL.Scheme, pr.Out.URL.Host = "https", cfg.Upstream
			pr.Out.Host = authority
			d.variantsDropped(cfg.Name, "request", deleteOurs(pr.Out.Header))
			pr.Out.Body = d.filterTrailers(&pr.Out.Trailer, pr.Out.Body, cfg.Name)
			pr.Out.Header.Set(chain.HeaderChain, st.chainHdr)
			if st.tokensHdr != "" {
				pr.Out.Header.Set(chain.HeaderTokens, st.tokensHdr)
			}
		},
		Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
			return r.Context().Value(outKey{}).(*outState).gen.tr.RoundTrip(r)
		}),
		BufferPool:     &bufferPool,
		ErrorLog:       slog.NewLogLogger(d.Logger.Handler(), slog.LevelDebug),
		ModifyResponse: o.modifyResponse,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			d.Reject(w, r, cfg.Name, http.StatusBadGateway, asRejection(err, CodeUpstream))
		},
	}
	if config.IsHTTP2(cfg.Protocol) {
		o.rp.FlushInterval = -1 // a stream's messages go on as they come
	}
	return o
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (o *Outbound) generation(cur *identity.Current) *generation {
	if g := o.gen.Load(); g != nil && g.cur == cur {
		return g
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	old := o.gen.Load()
	if old != nil && old.cur == cur {
		return old
	}
	l := o.d.Limits
	h2 := config.IsHTTP2(o.cfg.Protocol)
	protos := []string{"http/1.1"}
	if h2 {
		protos = []string{"h2", "http/1.1"} // HTTP/1.1 with a peer that only speaks it
	}
	tlsCfg := attestedtls.ClientConfig(fixedCert{cur}, o.d.Checker, o.host, attestedtls.Options{
		Listener:   o.cfg.Name,
		Identities: o.cfg.UpstreamIdentity,
		Logger:     o.d.Logger,
		OnReject:   func(listener string, rej *attestation.Rejection) { o.d.Metrics.Reject(listener, rej.Code) },
		NextProtos: protos,
	})
	g := &generation{cur: cur, tr: &http.Transport{
		DialContext:            (&net.Dialer{Timeout: l.DialTimeout.D(), KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:        tlsCfg,
		TLSHandshakeTimeout:    l.HandshakeTimeout.D(),
		MaxIdleConns:           1024,
		MaxIdleConnsPerHost:    256,
		IdleConnTimeout:        l.IdleTimeout.D(),
		ResponseHeaderTimeout:  l.RequestTimeout.D(),
		MaxResponseHeaderBytes: int64(l.MaxHeaderBytes),
		ForceAttemptHTTP2:      false,
	}}
	if h2 {
		g.tr.Protocols = new(http.Protocols)
		g.tr.Protocols.SetHTTP1(true)
		g.tr.Protocols.SetHTTP2(true)
		g.tr.HTTP2 = h2Config(l)
	}
	o.gen.Store(g)
	if old != nil {
		old.tr.CloseIdleConnections()
		time.AfterFunc(l.RequestTimeout.D(), old.tr.CloseIdleConnections)
	}
	return g
}

func (o *Outbound) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w, done := o.d.counted(o.cfg.Name, w)
	defer done()
	if rej := hygiene(r); rej != nil {
		o.d.Reject(w, r, o.cfg.Name, http.StatusBadRequest, rej)
		return
	}
	cur := o.d.Identity.Current()
	if cur == nil {
		o.d.Reject(w, r, o.cfg.Name, http.StatusServiceUnavailable, attestation.Rejectf(CodeNoIdentity, "%v", identity.ErrNoIdentity))
		return
	}
	now := o.d.Now()
	// A chain from the app is continued only if this proxy's inbound side verified it and
	// handed it to the app; anything else is dropped (and counted), never forwarded.
	var prev *chain.Chain
	if vals := r.Header.Values(chain.HeaderChain); len(vals) > 0 {
		prev = o.forwarded(vals, now)
		if prev == nil {
			o.d.Logger.Warn("dropping a chain header from the app that this proxy did not hand it", "listener", o.cfg.Name)
			o.d.Metrics.Reject(o.cfg.Name, CodeChainForged)
		} else if len(prev.Hops) >= o.d.Chain.MaxHops {
			o.d.Reject(w, r, o.cfg.Name, http.StatusForbidden, attestation.Reject(chain.CodeChainTooLong, "", strconv.Itoa(len(prev.Hops)+1)+" entries", fmt.Sprintf("at most %d", o.d.Chain.MaxHops)))
			return
		}
	}
	wantReceipt, rej := wantsReceipt(r)
	if rej != nil {
		o.d.Reject(w, r, o.cfg.Name, http.StatusBadRequest, rej)
		return
	}
	o.d.variantsDropped(o.cfg.Name, "request", deleteOurs(r.Header))
	h2 := config.IsHTTP2(o.cfg.Protocol)
	// On HTTP/2 listeners a body of unknown length (a gRPC stream) is never buffered.
	bodySum, rej := readBody(r, w, o.d.Limits.MaxBodyBytes, !h2)
	if rej != nil {
		o.d.Reject(w, r, o.cfg.Name, http.StatusRequestEntityTooLarge, rej)
		return
	}
	authority := o.cfg.Authority
	if authority == "" {
		authority = o.cfg.Upstream
	}
	reqDigest := chain.RequestDigest(r.Method, authority, r.URL.RequestURI(), bodySum)
	self := selfFromCert(cur)
	self.Version = o.d.Chain.SignVersion
	hdr, entry, err := chain.Append(prev, self, reqDigest, now)
	if err != nil {
		o.d.Reject(w, r, o.cfg.Name, http.StatusInternalServerError, attestation.Rejectf(CodeNoIdentity, "signing the chain entry: %v", err))
		return
	}
	st := &outState{gen: o.generation(cur), chainHdr: hdr, entryDigest: entry, wantReceipt: wantReceipt}
	if h2 || bodySum == nil {
		// The answer may be streamed and countersign the body it received, whatever its length.
		st.sent = newBodyHash(r.Body, r.ContentLength)
		if st.sent.rc != http.NoBody {
			r.Body = st.sent
		}
	}
	if wantReceipt {
		st.tokens = map[string]string{chain.TokenDigest(self.Token): self.Token}
	}
	if prev != nil {
		st.tokensHdr = prev.TokensHeader("")
		if wantReceipt {
			for k, v := range prev.Tokens {
				st.tokens[k] = v
			}
		}
	}
	if n := len(hdr) + len(st.tokensHdr); n > o.d.Chain.MaxBytes {
		o.d.Reject(w, r, o.cfg.Name, http.StatusForbidden, attestation.Reject(chain.CodeChainTooLarge, "", fmt.Sprintf("%d bytes", n), fmt.Sprintf("at most %d", o.d.Chain.MaxBytes)))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), o.d.Limits.RequestTimeout.D())
	defer cancel()
	o.rp.ServeHTTP(interimFilter{w, o.d, o.cfg.Name}, r.WithContext(context.WithValue(ctx, outKey{}, st)))
}

func (o *Outbound) modifyResponse(resp *http.Response) error {
	st := resp.Request.Context().Value(outKey{}).(*outState)
	peer, err := attestedtls.PeerOf(resp.Request.Context(), o.d.Checker, resp.TLS, o.cfg.UpstreamIdentity)
	if err != nil {
		return err
	}
	pk, err := chain.PeerKey(peer)
	if err != nil {
		return attestation.Rejectf(attestedtls.CodeNotAttested, "%v", err)
	}
	peerTok := chain.TokenDigest(peer.Token.Raw)
	cs := resp.Header.Values(chain.HeaderCountersig)
	if len(cs) == 0 && config.IsHTTP2(o.cfg.Protocol) && st.sent != nil {
		// Streamed: relay as it comes, check the countersignature in the trailers at the end.
		o.d.variantsDropped(o.cfg.Name, "response", deleteOurs(resp.Header))
		body := resp.Body
		if body == nil {
			body = http.NoBody
		}
		resp.Body = &verifyBody{
			ReadCloser: body,
			resp:       resp,
			h:          sha256.New(),
			o:          o,
			st:         st,
			peerPK:     pk,
			peerTk:     peerTok,
			peerRw:     peer.Token.Raw,
			grpc:       o.cfg.Protocol == config.ProtocolGRPC || isGRPC(resp.Request.Header),
		}
		resp.Trailer = nil // everything verifyBody sets goes out as trailers
		return nil
	}
	if len(cs) == 0 && st.sent != nil {
		return o.bufferStreamed(resp, st, pk, peer.Token.Raw)
	}
	resp.Body = o.d.filterTrailers(&resp.Trailer, resp.Body, o.cfg.Name)
	b, sum, rej := bufferResponse(resp, o.d.Limits.MaxResponseBytes, "the upstream", CodeUpstream)
	if rej != nil {
		return rej
	}
	if len(cs) > 1 {
		return attestation.Rejectf(chain.CodeCountersig, "%d countersignatures", len(cs))
	}
	enc := ""
	if len(cs) == 1 {
		enc = cs[0]
	}
	if _, err := o.checkCountersig(enc, st, peerTok, pk, chain.ResponseDigest(resp.StatusCode, sum[:])); err != nil {
		return err
	}
	// The countersignature is verified and goes to the app only inside the receipt it asked
	// for, not as a header of its own (docs/protocol.md section 9).
	o.d.variantsDropped(o.cfg.Name, "response", deleteOurs(resp.Header))
	if !st.wantReceipt {
		setBody(resp, b)
		return nil
	}
	st.tokens[peerTok] = peer.Token.Raw
	rc := chain.Receipt{
		V:                1,
		Chain:            st.chainHdr,
		Countersignature: enc,
		Status:           resp.StatusCode,
		BodySHA256:       b64(sum[:]),
	}
	for _, t := range st.tokens {
		rc.Tokens = append(rc.Tokens, t)
	}
	receipt, err := rc.Encode()
	if err != nil {
		return err
	}
	resp.Header.Set(chain.HeaderReceipt, receipt)
	setBody(resp, b)
	return nil
}

// bufferStreamed handles, on an HTTP/1.1 listener, an answer streamed because the request body
// was not digested up front (B is "-"): the response is buffered as usual, and its
// countersignature, in the trailers, covers the request body the answering proxy received.
func (o *Outbound) bufferStreamed(resp *http.Response, st *outState, pk *ecdsa.PublicKey, peerRaw string) error {
	peerTok := chain.TokenDigest(peerRaw)
	v := &verifyBody{
		ReadCloser: resp.Body,
		resp:       resp,
		h:          sha256.New(),
		o:          o,
		st:         st,
		peerPK:     pk,
		peerTk:     peerTok,
		peerRw:     peerRaw,
	}
	b, _, rej := bufferResponse(resp, o.d.Limits.MaxResponseBytes, "the upstream", CodeUpstream)
	if rej != nil {
		return rej
	}
	v.h.Write(b)
	if rej := v.finish(); rej != nil {
		return rej
	}
	o.d.variantsDropped(o.cfg.Name, "response", deleteOurs(resp.Header))
	setBody(resp, b)
	if r := resp.Trailer.Get(chain.HeaderReceipt); r != "" {
		resp.Header.Set(chain.HeaderReceipt, r) // the body is buffered: the receipt goes ahead of it
		resp.Trailer.Del(chain.HeaderReceipt)
	}
	if len(resp.Trailer) > 0 {
		resp.Header.Del("Content-Length") // chunked, so that the app's trailers go on
		resp.ContentLength = -1
	}
	return nil
}

// channel reports whether this exchange relies on the attested connection for the peer's own
// countersignature (chain.peerSignatures: channel, and no receipt asked for).
func (o *Outbound) channel(st *outState) bool {
	return o.d.Chain.PeerSignatures == config.PeerSignaturesChannel && !st.wantReceipt
}

func (o *Outbound) checkCountersig(enc string, st *outState, peerTok string, pk *ecdsa.PublicKey, resp [32]byte) (*chain.Countersig, error) {
	if o.channel(st) {
		return chain.CheckCountersigChannel(enc, st.entryDigest, peerTok, resp)
	}
	return chain.VerifyCountersig(enc, st.entryDigest, peerTok, pk, resp)
}

// wantsReceipt reads Countersign-Want-Receipt: only the exact spelling asks (variants are
// dropped with the rest of ours), and only with the one value "inline".
func wantsReceipt(r *http.Request) (bool, *attestation.Rejection) {
	vals, ok := r.Header[chain.HeaderWantReceipt]
	if !ok {
		return false, nil
	}
	if len(vals) != 1 || vals[0] != chain.ReceiptInline {
		return false, attestation.Reject(CodeWantReceipt, chain.HeaderWantReceipt, fmt.Sprintf("%q", vals), fmt.Sprintf("one value, %q", chain.ReceiptInline))
	}
	return true, nil
}

// forwarded is the chain the app passed (the values of its Countersign-Chain header) if this
// proxy's inbound side handed it that chain and its request is still in flight, else nil.
func (o *Outbound) forwarded(vals []string, now time.Time) *chain.Chain {
	if len(vals) != 1 || len(vals[0]) > o.d.Chain.MaxBytes {
		return nil
	}
	parts, err := chain.Split(vals[0], o.d.Chain.MaxHops)
	if err != nil {
		return nil
	}
	prev, _ := o.d.Forwarded.Get(chain.Digest(parts[len(parts)-1]), now)
	return prev
}

// CloseIdleConnections closes this handler's idle upstream connections. The xDS wiring calls
// it on a handler whose endpoint left the cluster; requests in flight finish on their own
// connections.
func (o *Outbound) CloseIdleConnections() {
	if g := o.gen.Load(); g != nil {
		g.tr.CloseIdleConnections()
	}
}
