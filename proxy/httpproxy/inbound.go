package httpproxy

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"time"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/proxy/attestedtls"
	"github.com/countersign/countersign/proxy/chain"
	"github.com/countersign/countersign/proxy/config"
)

// Inbound serves an inbound listener and forwards to the app on loopback.
type Inbound struct {
	d        *Deps
	cfg      config.Inbound
	chainIDs []string
	rp       *httputil.ReverseProxy
	// policy, if set, gives the checker and allowed identities in force for each request
	// (the control plane may narrow them); otherwise Deps.Checker and cfg.Allow.
	policy func() (attestedtls.Checker, []string)
}

// WithPolicy makes every request's caller be checked against the policy f returns at that
// moment instead of the pinned allow list; f must only ever narrow it (proxy/xdsclient).
func (h *Inbound) WithPolicy(f func() (attestedtls.Checker, []string)) *Inbound {
	h.policy = f
	return h
}

type inState struct {
	entryDigest string // the request entry answered
	self        chain.Self
	// A streamed exchange (docs/protocol.md section 11) countersigns in the trailers, with the
	// digest of the request body as received.
	streamed bool
	reqBody  *bodyHash
}

type inKey struct{}

// NewInbound returns the handler of an inbound listener.
func NewInbound(d *Deps, cfg config.Inbound) *Inbound {
	h := &Inbound{d: d, cfg: cfg, chainIDs: d.Chain.Identities}
	if len(h.chainIDs) == 0 {
		h.chainIDs = cfg.Allow
	}
	app := &url.URL{Scheme: "http", Host: cfg.ForwardTo}
	h.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = app.Scheme, app.Host
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
			d.variantsDropped(cfg.Name, "request", deleteOurs(pr.Out.Header))
			pr.Out.Body = d.filterTrailers(&pr.Out.Trailer, pr.Out.Body, cfg.Name)
			if st, ok := pr.In.Context().Value(fwdKey{}).(*fwdHeaders); ok {
				pr.Out.Header.Set(chain.HeaderChain, st.chain)
				pr.Out.Header.Set(chain.HeaderVerified, st.summary)
			}
		},
		Transport:      appTransport(d.Limits, config.IsHTTP2(cfg.Protocol)),
		BufferPool:     &bufferPool,
		ErrorLog:       slog.NewLogLogger(d.Logger.Handler(), slog.LevelDebug),
		ModifyResponse: h.modifyResponse,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			d.Reject(w, r, cfg.Name, http.StatusBadGateway, asRejection(err, CodeApp))
		},
	}
	if config.IsHTTP2(cfg.Protocol) {
		h.rp.FlushInterval = -1 // a stream's messages go on as they come
	}
	return h
}

// fwdHeaders are what the app is handed: the verified chain, enough to continue it (the
// outbound side keeps its tokens while the request is in flight), and its summary. The
// tokens themselves reach an app only in the receipts it asks for.
type fwdHeaders struct{ chain, summary string }
type fwdKey struct{}

// appTransport calls the app: HTTP/1.1, or for http2 and grpc listeners HTTP/2 over cleartext
// with prior knowledge (the app is on loopback).
func appTransport(l config.Limits, h2 bool) *http.Transport {
	t := &http.Transport{
		DialContext:            (&net.Dialer{Timeout: l.DialTimeout.D(), KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:           1024,
		MaxIdleConnsPerHost:    256,
		IdleConnTimeout:        l.IdleTimeout.D(),
		ResponseHeaderTimeout:  l.RequestTimeout.D(),
		MaxResponseHeaderBytes: int64(l.MaxHeaderBytes),
		ForceAttemptHTTP2:      false,
	}
	if h2 {
		t.Protocols = new(http.Protocols)
		t.Protocols.SetUnencryptedHTTP2(true)
		t.HTTP2 = h2Config(l)
	}
	return t
}

func (h *Inbound) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w, done := h.d.counted(h.cfg.Name, w)
	defer done()
	if rej := hygiene(r); rej != nil {
		h.d.Reject(w, r, h.cfg.Name, http.StatusBadRequest, rej)
		return
	}
	if h.cfg.Public {
		h.d.variantsDropped(h.cfg.Name, "request", deleteOurs(r.Header))
		if r.ContentLength > h.d.Limits.MaxBodyBytes {
			h.d.Reject(w, r, h.cfg.Name, http.StatusRequestEntityTooLarge, attestation.Reject(CodeBodyTooLarge, "Content-Length", strconv.FormatInt(r.ContentLength, 10), fmt.Sprintf("at most %d", h.d.Limits.MaxBodyBytes)))
			return
		}
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, h.d.Limits.MaxBodyBytes)
		}
		h.rp.ServeHTTP(interimFilter{w, h.d, h.cfg.Name}, r)
		return
	}
	ctx := r.Context()
	checker, allow := h.d.Checker, h.cfg.Allow
	if h.policy != nil {
		checker, allow = h.policy()
	}
	peer, err := attestedtls.PeerOf(ctx, checker, r.TLS, allow)
	if err != nil {
		h.d.Reject(w, r, h.cfg.Name, http.StatusForbidden, asRejection(err, attestedtls.CodeNotAttested))
		return
	}
	self := h.connSelf(ctx)
	if self.Key == nil {
		h.d.Reject(w, r, h.cfg.Name, http.StatusServiceUnavailable, attestation.Rejectf(CodeNoIdentity, "cannot tell which certificate this connection presented"))
		return
	}
	bodySum, rej := readBody(r, w, h.d.Limits.MaxBodyBytes, false)
	if rej != nil {
		h.d.Reject(w, r, h.cfg.Name, http.StatusRequestEntityTooLarge, rej)
		return
	}
	reqDigest := chain.RequestDigest(r.Method, r.Host, r.RequestURI, bodySum)
	ch, err := h.d.Live.Verify(ctx, r.Header.Values(chain.HeaderChain), r.Header.Values(chain.HeaderTokens), peer, reqDigest, h.chainIDs, h.d.Now())
	if err != nil {
		h.d.Reject(w, r, h.cfg.Name, http.StatusForbidden, asRejection(err, chain.CodeChainMalformed))
		return
	}
	tail := ch.Tail()
	// The app may continue this chain on its onward calls while it handles this request (at
	// most maxAge): the outbound side looks it up by tail digest. Once the app has answered,
	// the chain is forgotten, so memory follows the requests in flight, not the request rate.
	if added, full := h.d.Forwarded.Add(tail, ch, h.d.Now().Add(h.d.Chain.MaxAge.D()), h.d.Now()); added {
		defer h.d.Forwarded.Remove(tail)
	} else if full {
		h.d.Logger.Warn("too many chains in flight to remember this one; the app's onward calls will start new chains",
			"listener", h.cfg.Name, "in_flight", h.d.Forwarded.Len())
	}
	fwd := &fwdHeaders{chain: ch.Header(), summary: summarize(peer.Identity, ch)}
	ctx = context.WithValue(ctx, fwdKey{}, fwd)
	self.Version = ch.Hops[len(ch.Hops)-1].Entry.V // answer in the version the caller speaks
	ist := &inState{entryDigest: tail, self: self, streamed: r.ProtoMajor == 2 || bodySum == nil}
	if ist.streamed {
		ist.reqBody = newBodyHash(r.Body, r.ContentLength)
		if ist.reqBody.rc != http.NoBody {
			r.Body = ist.reqBody
		}
	}
	ctx = context.WithValue(ctx, inKey{}, ist)
	h.rp.ServeHTTP(interimFilter{w, h.d, h.cfg.Name}, r.WithContext(ctx))
}

func (h *Inbound) modifyResponse(resp *http.Response) error {
	h.d.variantsDropped(h.cfg.Name, "response", deleteOurs(resp.Header))
	resp.Body = h.d.filterTrailers(&resp.Trailer, resp.Body, h.cfg.Name)
	st, ok := resp.Request.Context().Value(inKey{}).(*inState)
	if !ok {
		return nil // public listener: nothing to countersign
	}
	if st.streamed && !bodiless(resp.Request.Method, resp.StatusCode) {
		h.streamAnswer(resp, st)
		return nil
	}
	b, sum, rej := bufferResponse(resp, h.d.Limits.MaxResponseBytes, "the app", CodeApp)
	if rej != nil {
		return rej
	}
	cs, err := chain.Countersign(st.self, st.entryDigest, chain.ResponseDigest(resp.StatusCode, sum[:]), h.d.Now())
	if err != nil {
		return err
	}
	resp.Header.Set(chain.HeaderCountersig, cs)
	setBody(resp, b)
	return nil
}

// connSelf is what this proxy signs with on the connection of ctx: the certificate it presented
// there (recorded at the handshake), or a zero Self when that cannot be told.
func (h *Inbound) connSelf(ctx context.Context) chain.Self {
	rec := attestedtls.RecordedFrom(ctx)
	if rec == nil {
		return chain.Self{}
	}
	c := rec.Cert()
	if c == nil || c.Leaf == nil {
		return chain.Self{}
	}
	// Usually the certificate presented is the identity's current one, whose token and key are
	// at hand; after a refresh an older connection still signs with its own.
	if cur := h.d.Identity.Current(); cur != nil && &cur.Cert == c {
		return selfFromCert(cur)
	}
	tok, terr := attestedtls.TokenFromCertificate(c.Leaf)
	key, ok := c.PrivateKey.(*ecdsa.PrivateKey)
	if terr != nil || !ok {
		return chain.Self{}
	}
	return chain.Self{Key: key, Token: tok}
}
