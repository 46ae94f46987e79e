package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/countersign/countersign/attestation/attester"
	"github.com/countersign/countersign/attestation/maa"
	"github.com/countersign/countersign/internal/cmdexit"
)

func runAttest(ctx context.Context, args []string, s Streams) error {
	fs := newFlagSet("attest", s)
	name := fs.String("attester", "sim", "attester: sgx (inside an EGo enclave) or sim")
	svc := fs.String("service", "", "attestation service base URL, e.g. https://127.0.0.1:8443 (required)")
	ca := fs.String("ca", "", "PEM file of CA certificates to trust for the service (default: system roots)")
	simKey := fs.String("sim-platform-key", "", "simulated platform private key (sim attester)")
	rdFile := fs.String("runtime-data", "", "runtime data JSON to bind (default: a fresh P-256 key as {\"keys\":[JWK]})")
	keyOut := fs.String("key-out", "", "with no --runtime-data: write the fresh private key here (PKCS#8 PEM)")
	endpoint := fs.String("endpoint", string(maa.EndpointSgxEnclave), "MAA API: SgxEnclave or OpenEnclave")
	mrenclave := fs.String("mrenclave", "", "sim: MRENCLAVE to claim (64 hex; default SHA-256 of this binary)")
	mrsigner := fs.String("mrsigner", "", "sim: MRSIGNER to claim (64 hex; default SHA-256(\"countersign-sim-signer\"))")
	productID := fs.Uint("product-id", 0, "sim: ISV product ID to claim")
	svn := fs.Uint("svn", 0, "sim: ISV SVN to claim")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the service")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *svc == "" {
		return cmdexit.Usagef("--service URL is required")
	}
	if *productID > 0xffff || *svn > 0xffff {
		return cmdexit.Usagef("--product-id and --svn must be at most 65535")
	}
	id := attester.SimIdentity{ProductID: uint16(*productID), SVN: uint16(*svn)}
	for _, m := range []struct {
		flag, val string
		dst       *[32]byte
	}{{"--mrenclave", *mrenclave, &id.MREnclave}, {"--mrsigner", *mrsigner, &id.MRSigner}} {
		if m.val == "" {
			continue
		}
		v, err := attester.ParseMeasurement(m.val)
		if err != nil {
			return cmdexit.Usagef("%s: %v", m.flag, err)
		}
		*m.dst = v
	}
	a, err := attester.New(*name, attester.Options{SimPlatformKey: *simKey, SimIdentity: id})
	if err != nil {
		return cmdexit.Usagef("--attester: %v", err)
	}

	var runtimeData []byte
	if *rdFile != "" {
		if *keyOut != "" {
			return cmdexit.Usagef("--key-out applies only when no --runtime-data is given")
		}
		runtimeData, err = readInput(*rdFile, s, maa.MaxRuntimeDataSize)
		if err != nil {
			return cmdexit.Usagef("--runtime-data: %v", err)
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(runtimeData, &obj); err != nil {
			return cmdexit.Usagef("--runtime-data %s: expected a JSON object: %v", *rdFile, err)
		}
	} else {
		runtimeData, err = freshRuntimeData(*keyOut)
		if err != nil {
			return cmdexit.Usagef("%v", err)
		}
	}

	httpc, err := maa.NewHTTPClient(*ca, *timeout)
	if err != nil {
		return cmdexit.Usagef("--ca: %v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	q, err := a.Quote(ctx, runtimeData)
	if err != nil {
		return cmdexit.WithCode(ExitRejected, err)
	}
	c := &maa.Client{BaseURL: *svc, Endpoint: maa.Endpoint(*endpoint), HTTP: httpc}
	tok, err := c.Attest(ctx, q, runtimeData, maa.DataTypeJSON)
	if err != nil {
		return cmdexit.WithCode(ExitRejected, err)
	}
	fmt.Fprintln(s.Out, tok)
	return nil
}

func freshRuntimeData(keyOut string) ([]byte, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	j, err := maa.NewJWK(&k.PublicKey, "tls")
	if err != nil {
		return nil, err
	}
	rd := maa.RuntimeData{Keys: []maa.JWK{j}}
	b, err := rd.Marshal()
	if err != nil {
		return nil, err
	}
	if keyOut != "" {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(keyOut, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, fmt.Errorf("--key-out: %w", err)
		}
	}
	return b, nil
}

// readInput reads a file, or standard input for "-", refusing more than max bytes.
func readInput(path string, s Streams, max int) ([]byte, error) {
	var b []byte
	var err error
	if path == "-" {
		b, err = readAtMost(s.In, max)
	} else {
		var f *os.File
		f, err = os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		b, err = readAtMost(f, max)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", displayName(path), err)
	}
	return b, nil
}

func displayName(path string) string {
	if path == "-" {
		return "standard input"
	}
	return strconv.Quote(path)
}
