package cli

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"

	"github.com/countersign/countersign/attestation/quote"
	"github.com/countersign/countersign/internal/cmdexit"
)

func runSimPlatformKey(_ context.Context, args []string, s Streams) error {
	fs := newFlagSet("sim-platform-key", s)
	out := fs.String("out", "", "file for the private key (PKCS#8 PEM); the public key goes to FILE.pub (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return cmdexit.Usagef("--out FILE is required")
	}
	priv, err := quote.GeneratePlatformKey(*out)
	if err != nil {
		return cmdexit.Usagef("%v", err)
	}
	id := quote.PlatformKeyID(priv.Public().(ed25519.PublicKey))
	fmt.Fprintf(s.Out, "simulated platform key written to %s (public half: %s.pub, key id %s)\n", *out, *out, hex.EncodeToString(id[:8]))
	fmt.Fprintf(s.Out, "trust it with: attestation-service --sim-platform-key %s.pub\n", *out)
	return nil
}
