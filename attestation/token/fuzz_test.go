package token

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/internal/fuzzcorpus"
	"github.com/countersign/countersign/internal/testmaa"
)

// FuzzVerify feeds arbitrary strings to the verifier. The committed seeds are token-shaped but
// signed by a key generated at test time, so they exercise the parser and the rejection paths;
// the good token is added at run time with f.Add.
func FuzzVerify(f *testing.F) {
	is := testmaa.New(f)
	clk := &clock{t: time.Now()}
	v := newVerifier(f, is, clk, func(c *Config) { c.MinFetchInterval = time.Hour })
	good := is.Sign(is.Header(), is.Claims(clk.now()))
	parts := strings.Split(good, ".")
	seeds := [][]any{
		{good}, {parts[0] + "." + parts[1] + "."}, {good + "."}, {"a.b.c"}, {"..."}, {""},
		{`{"payload":"e30","signatures":[]}`},
		{testmaa.Encode(map[string]any{"alg": "none"}) + "." + parts[1] + "."},
		{testmaa.Encode(map[string]any{"alg": "RS256", "kid": is.Kid, "crit": []string{"x"}}) + "." + parts[1] + "." + parts[2]},
		{testmaa.Encode(map[string]any{"alg": "RS256", "kid": 7}) + "." + parts[1] + "." + parts[2]},
		{parts[0] + "." + testmaa.Encode(map[string]any{"iss": is.URL, "exp": "x"}) + "." + parts[2]},
	}
	if *fuzzcorpus.Update {
		if err := fuzzcorpus.Write("FuzzVerify", seeds...); err != nil {
			f.Fatal(err)
		}
	}
	for _, s := range seeds {
		f.Add(s[0].(string))
	}
	f.Fuzz(func(t *testing.T, raw string) {
		tok, err := v.Verify(context.Background(), raw)
		if err != nil {
			var rej *attestation.Rejection
			if !errors.As(err, &rej) || rej.Code == "" || rej.Sentence() == "" {
				t.Fatalf("error is not an explained rejection: %#v", err)
			}
			return
		}
		// Anything accepted was signed by the issuer: only the seeds built from real tokens
		// can get here, and their claims must be the checked ones.
		c := tok.Claims
		if c.Issuer != is.URL || c.Expiry == nil || c.NotBefore == nil || c.IssuedAt == nil {
			t.Fatalf("accepted a token without the required claims: %+v", c)
		}
		if !clk.now().Before(c.Expiry.Time().Add(time.Minute)) {
			t.Fatal("accepted an expired token")
		}
	})
}
