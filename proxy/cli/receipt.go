package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/attestation/maa"
	"github.com/countersign/countersign/attestation/policy"
	"github.com/countersign/countersign/attestation/token"
	"github.com/countersign/countersign/internal/cmdexit"
	"github.com/countersign/countersign/proxy/chain"
)

// maxReceiptHops bounds the chains `verify --receipt` accepts (the proxy's own limit is 32).
const maxReceiptHops = 32

// verifyReceipt checks a receipt offline: the chain of hops, every hop's token at the time the
// receipt was countersigned, and the countersignature over the last entry and the response.
// The issuers' keys come from their /certs or, fully offline, from files (--issuer-keys).
func verifyReceipt(ctx context.Context, s Streams, p *policy.Policy, receiptFile string, hopIDs, answerer []string, issuerKeys map[string]string) error {
	raw, err := readInput(receiptFile, s, chain.MaxReceiptSize)
	if rerr, ok := rejectTooLarge(s, "receipt", chain.CodeReceiptMalformed, err); ok {
		return rerr
	}
	if err != nil {
		return cmdexit.Usagef("--receipt: %v", err)
	}
	r, err := chain.ParseReceipt(raw)
	if err != nil {
		code, why := chain.CodeReceiptMalformed, err.Error()
		var rej *attestation.Rejection
		if errors.As(err, &rej) {
			code, why = rej.Code, rej.Sentence()
		}
		fmt.Fprintf(s.Out, "rejected: %s\n  %s\n", code, why)
		return cmdexit.WithCode(ExitRejected, fmt.Errorf("receipt rejected: %s", code))
	}
	when, err := chain.ReceiptTime(r)
	if err != nil {
		var rej *attestation.Rejection
		if !errors.As(err, &rej) {
			return cmdexit.Usagef("%v", err)
		}
		fmt.Fprintf(s.Out, "rejected: %s\n  %s (so the receipt has no time)\n", rej.Code, rej.Sentence())
		return cmdexit.WithCode(ExitRejected, fmt.Errorf("receipt rejected: %s", rej.Code))
	}
	log := slog.New(slog.NewTextHandler(s.Err, &slog.HandlerOptions{Level: slog.LevelError}))
	var tweakErr error
	eng, err := policy.NewEngine(p, log, func(c *token.Config) {
		c.Now = func() time.Time { return when } // judge every token at the receipt's time
		for i := range c.Issuers {
			if f, ok := issuerKeys[c.Issuers[i].URL]; ok {
				doc, err := os.ReadFile(f)
				if err != nil {
					tweakErr = fmt.Errorf("--issuer-keys %s: %w", f, err)
					return
				}
				if _, err := token.ParseKeySet(doc); err != nil {
					tweakErr = fmt.Errorf("--issuer-keys %s: %w", f, err)
					return
				}
				c.Issuers[i].HTTPClient = &http.Client{Transport: fileKeySet{url: c.Issuers[i].URL + maa.PathCerts, doc: doc}}
				delete(issuerKeys, c.Issuers[i].URL)
			}
		}
	})
	if tweakErr != nil {
		return cmdexit.Usagef("%v", tweakErr)
	}
	if err != nil {
		return cmdexit.Usagef("%v", err)
	}
	for u := range issuerKeys {
		return cmdexit.Usagef("--issuer-keys: %q is not an issuer of the policy", u)
	}
	if err := eng.Verifier.Prefetch(ctx); err != nil {
		return cmdexit.Usagef("cannot fetch the issuers' keys (give them with --issuer-keys URL=FILE to verify offline): %v", err)
	}
	res, err := chain.VerifyReceipt(ctx, eng, r, hopIDs, answerer, maxReceiptHops)
	if err != nil {
		var rej *attestation.Rejection
		if !errors.As(err, &rej) {
			return cmdexit.Usagef("%v", err)
		}
		fmt.Fprintf(s.Out, "rejected: %s\n  %s\n", rej.Code, rej.Sentence())
		return cmdexit.WithCode(ExitRejected, fmt.Errorf("receipt rejected: %s", rej.Code))
	}
	fmt.Fprintf(s.Out, "accepted: receipt countersigned at %s by %s\n", when.UTC().Format(time.RFC3339Nano), res.Answerer)
	fmt.Fprintf(s.Out, "  response        status %d, body sha256 %s\n", r.Status, r.BodySHA256)
	for i, h := range res.Chain.Hops {
		c := h.Token.Claims
		sim := ""
		if c.Sim != nil && *c.Sim {
			sim = ", simulated"
		}
		fmt.Fprintf(s.Out, "  hop %d           %s (mrenclave %s, mrsigner %s, svn %d%s) at %s\n", i+1, h.Identity,
			short(c.SGXMREnclave), short(c.SGXMRSigner), deref(c.SGXSVN), sim, time.UnixMilli(h.Entry.TS).UTC().Format(time.RFC3339Nano))
	}
	return nil
}

func short(h string) string {
	if len(h) > 16 {
		return h[:16] + "…"
	}
	return h
}

func deref(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}

// fileKeySet answers GET {issuer}/certs from a file and refuses everything else, so an offline
// verification never touches the network.
type fileKeySet struct {
	url string
	doc []byte
}

func (f fileKeySet) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet || req.URL.String() != f.url {
		return nil, fmt.Errorf("offline verification: no request to %s allowed", req.URL)
	}
	return &http.Response{
		StatusCode: http.StatusOK,
		Status:     "200 OK",
		Header:     http.Header{"Content-Type": {"application/json"}},
		Body:       io.NopCloser(bytes.NewReader(f.doc)),
		Request:    req,
	}, nil
}

// keyFiles parses repeated URL=FILE flags.
type keyFiles map[string]string

func (k keyFiles) String() string { return fmt.Sprint(map[string]string(k)) }
func (k keyFiles) Set(v string) error {
	u, f, ok := strings.Cut(v, "=")
	if !ok || u == "" || f == "" {
		return fmt.Errorf("expected ISSUER_URL=FILE, got %q", v)
	}
	k[u] = f
	return nil
}

// idList parses a comma-separated list of identity names.
func idList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
