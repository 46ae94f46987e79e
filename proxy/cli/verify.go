package cli

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/attestation/policy"
	"github.com/countersign/countersign/attestation/token"
	"github.com/countersign/countersign/internal/cmdexit"
)

func runVerify(ctx context.Context, args []string, s Streams) error {
	fs := newFlagSet("verify", s)
	policyFile := fs.String("policy", "", "policy file (YAML, see docs/policy.md) (required)")
	identity := fs.String("identity", "", "identity the token must satisfy, or with --receipt a comma-separated list every hop must satisfy one of (default: any identity in the policy)")
	tokenFile := fs.String("token", "", "token file, or - for standard input")
	receiptFile := fs.String("receipt", "", "receipt file (JSON or the Countersign-Receipt header value), or - for standard input: verify the chain and countersignature offline")
	answerer := fs.String("answerer", "", "with --receipt: comma-separated identities the answering hop must satisfy (default: any)")
	issuerKeys := keyFiles{}
	fs.Var(issuerKeys, "issuer-keys", "with --receipt: ISSUER_URL=FILE, the issuer's /certs document saved in FILE, to verify without the network (repeatable)")
	keyFile := fs.String("key", "", "optional PEM public key, certificate or PKCS#8 private key whose public key the token's runtime data must name")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the issuer's keys")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *policyFile == "" {
		return cmdexit.Usagef("--policy FILE is required")
	}
	if (*tokenFile == "") == (*receiptFile == "") {
		return cmdexit.Usagef("exactly one of --token FILE|- and --receipt FILE|- is required")
	}
	p, err := policy.Load(*policyFile)
	if err != nil {
		return cmdexit.Usagef("%v", err)
	}
	if *receiptFile != "" {
		if *keyFile != "" {
			return cmdexit.Usagef("--key applies to --token only")
		}
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		return verifyReceipt(ctx, s, p, *receiptFile, idList(*identity), idList(*answerer), issuerKeys)
	}
	if *answerer != "" || len(issuerKeys) > 0 {
		return cmdexit.Usagef("--answerer and --issuer-keys apply to --receipt only")
	}
	raw, err := readInput(*tokenFile, s, token.DefaultMaxTokenSize*2)
	if rerr, ok := rejectTooLarge(s, "token", attestation.CodeTooLarge, err); ok {
		return rerr
	}
	if err != nil {
		return cmdexit.Usagef("--token: %v", err)
	}
	var pub crypto.PublicKey
	if *keyFile != "" {
		if pub, err = loadPublicKey(*keyFile); err != nil {
			return cmdexit.Usagef("--key: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	log := slog.New(slog.NewTextHandler(s.Err, &slog.HandlerOptions{Level: slog.LevelError}))
	eng, err := policy.NewEngine(p, log, nil)
	if err != nil {
		return cmdexit.Usagef("%v", err)
	}
	if err := eng.Verifier.Prefetch(ctx); err != nil {
		return cmdexit.Usagef("cannot fetch the issuers' keys: %v", err)
	}
	var ids []string
	if *identity != "" {
		ids = []string{*identity}
	}
	d, t := eng.Check(ctx, string(bytes.TrimSpace(raw)), ids, pub)
	if !d.Allowed() {
		if d.Rejection.Code == attestation.CodeUnknownIdentity {
			return cmdexit.Usagef("--identity: %s", d.Rejection.Sentence())
		}
		fmt.Fprintf(s.Out, "rejected: %s\n", d.Rejection.Code)
		fmt.Fprintf(s.Out, "  %s\n", d.Rejection.Sentence())
		if t != nil {
			describe(s, t)
		}
		return cmdexit.WithCode(ExitRejected, fmt.Errorf("token rejected: %s", d.Rejection.Code))
	}
	fmt.Fprintf(s.Out, "accepted: identity %s\n", d.Identity)
	describe(s, t)
	return nil
}

func describe(s Streams, t *token.Verified) {
	c := t.Claims
	b := func(p *bool) string {
		if p == nil {
			return "absent"
		}
		return fmt.Sprint(*p)
	}
	u := func(p *uint64) string {
		if p == nil {
			return "absent"
		}
		return fmt.Sprint(*p)
	}
	fmt.Fprintf(s.Out, "  issuer          %s\n", c.Issuer)
	fmt.Fprintf(s.Out, "  type            %s\n", c.AttestationType)
	fmt.Fprintf(s.Out, "  mrenclave       %s\n", c.SGXMREnclave)
	fmt.Fprintf(s.Out, "  mrsigner        %s\n", c.SGXMRSigner)
	fmt.Fprintf(s.Out, "  product id/svn  %s/%s\n", u(c.SGXProductID), u(c.SGXSVN))
	fmt.Fprintf(s.Out, "  debuggable      %s\n", b(c.SGXIsDebuggable))
	if c.Sim != nil && *c.Sim {
		fmt.Fprintf(s.Out, "  simulated       true (software attester: not hardware-backed)\n")
	}
	fmt.Fprintf(s.Out, "  policy hash     %s\n", c.PolicyHash)
	fmt.Fprintf(s.Out, "  issued/expires  %s / %s\n", c.IssuedAt.Time().UTC().Format(time.RFC3339), c.Expiry.Time().UTC().Format(time.RFC3339))
	if t.Runtime != nil {
		fmt.Fprintf(s.Out, "  runtime keys    %d\n", len(t.Runtime.Keys))
		for k, v := range t.Runtime.Claimed {
			fmt.Fprintf(s.Out, "  claimed %-7s %s (reported by the enclave, not measured)\n", k, v)
		}
	}
}

// loadPublicKey reads a PEM public key or certificate.
func loadPublicKey(path string) (crypto.PublicKey, error) {
	b, err := readInput(path, Streams{}, 1<<20)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	switch strings.ToUpper(block.Type) {
	case "PUBLIC KEY":
		return x509.ParsePKIXPublicKey(block.Bytes)
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		signer, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%s: a %T key cannot sign", path, k)
		}
		return signer.Public(), nil
	case "CERTIFICATE":
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		return c.PublicKey, nil
	}
	return nil, fmt.Errorf("%s: PEM block %q, expected PUBLIC KEY, CERTIFICATE or PRIVATE KEY", path, block.Type)
}
