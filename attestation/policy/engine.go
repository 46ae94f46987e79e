package policy

import (
	"context"
	"crypto"
	"errors"
	"log/slog"
	"time"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/attestation/token"
)

// Engine verifies a token, checks it against the policy and, when given a key, checks that the
// token binds that key. It is what every caller of the trust core uses.
type Engine struct {
	Policy   *Policy
	Verifier *token.Verifier
	Now      func() time.Time
}

// NewEngine builds the token verifier from the policy's issuers. tweak, if not nil, may adjust
// the token configuration (tests set the clock and fetch intervals).
func NewEngine(p *Policy, log *slog.Logger, tweak func(*token.Config)) (*Engine, error) {
	cfg := p.TokenConfig()
	cfg.Logger = log
	if tweak != nil {
		tweak(&cfg)
	}
	v, err := token.New(cfg)
	if err != nil {
		return nil, err
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Engine{Policy: p, Verifier: v, Now: now}, nil
}

// Check verifies raw, evaluates it against the named identities (all when none are named) and,
// when pub is not nil, requires the token's runtime data to name pub. The verified token is
// returned whenever its signature and times were valid, even if policy rejected it, so callers
// can explain the decision.
func (e *Engine) Check(ctx context.Context, raw string, identities []string, pub crypto.PublicKey) (Decision, *token.Verified) {
	t, err := e.Verifier.Verify(ctx, raw)
	if err != nil {
		var rej *attestation.Rejection
		if !errors.As(err, &rej) {
			rej = attestation.Rejectf(attestation.CodeMalformed, "%v", err)
		}
		return Decision{Rejection: rej}, nil
	}
	var d Decision
	switch len(identities) {
	case 0:
		d = e.Policy.Evaluate(t.Claims, "", e.Now())
	case 1:
		d = e.Policy.Evaluate(t.Claims, identities[0], e.Now())
	default:
		d = e.Policy.EvaluateAny(t.Claims, identities, e.Now())
	}
	if d.Allowed() && pub != nil {
		if rej := t.Binds(pub); rej != nil {
			return Decision{Rejection: rej}, t
		}
	}
	return d, t
}
