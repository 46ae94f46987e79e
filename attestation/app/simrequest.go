package app

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/countersign/countersign/attestation/maa"
	"github.com/countersign/countersign/attestation/quote"
	"github.com/countersign/countersign/internal/cmdexit"
)

// simRequest is the sim-request subcommand: it prints the JSON body of an attest request with
// a simulated quote, for trying the service by hand with curl. The platform key is generated
// (with its .pub beside it) when the file does not exist.
func simRequest(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("attestation-service sim-request", flag.ContinueOnError)
	fs.SetOutput(stderr)
	platformKey := fs.String("platform-key", "", "simulated platform private key, PEM; generated with FILE.pub when missing (required)")
	runtimeData := fs.String("runtime-data", `{"keys":[]}`, "runtime data to bind into the quote")
	dataType := fs.String("data-type", maa.DataTypeJSON, "runtimeData dataType: Binary or JSON")
	mrenclave := fs.String("mrenclave", hex.EncodeToString(make([]byte, 32)), "MRENCLAVE, 64 hex digits")
	mrsigner := fs.String("mrsigner", hex.EncodeToString(make([]byte, 32)), "MRSIGNER, 64 hex digits")
	productID := fs.Uint("product-id", 1, "ISV product ID")
	svn := fs.Uint("svn", 1, "ISV SVN")
	openEnclave := fs.Bool("openenclave", false, "print an /attest/OpenEnclave body (report with an OE header) instead of /attest/SgxEnclave")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return cmdexit.UsageError(err)
	}
	if *platformKey == "" {
		return cmdexit.UsageError(errors.New("sim-request --platform-key: required"))
	}
	if *productID > 0xffff || *svn > 0xffff {
		return cmdexit.UsageError(errors.New("sim-request --product-id and --svn: expected at most 65535"))
	}
	if *dataType != maa.DataTypeBinary && *dataType != maa.DataTypeJSON {
		return cmdexit.UsageError(fmt.Errorf("sim-request --data-type: %q, expected Binary or JSON", *dataType))
	}
	r := &quote.Report{ProductID: uint16(*productID), SVN: uint16(*svn), ReportData: maa.ReportDataFor([]byte(*runtimeData))}
	r.SetDebug(true)
	for flagName, v := range map[string]struct {
		s   string
		dst *[32]byte
	}{"--mrenclave": {*mrenclave, &r.MREnclave}, "--mrsigner": {*mrsigner, &r.MRSigner}} {
		b, err := hex.DecodeString(v.s)
		if err != nil || len(b) != 32 {
			return cmdexit.UsageError(fmt.Errorf("sim-request %s: %q, expected 64 hex digits", flagName, v.s))
		}
		copy(v.dst[:], b)
	}
	priv, err := quote.LoadPlatformKey(*platformKey)
	if errors.Is(err, os.ErrNotExist) {
		if priv, err = quote.GeneratePlatformKey(*platformKey); err == nil {
			fmt.Fprintf(stderr, "generated simulated platform key %s (trust %s.pub with --sim-platform-key)\n", *platformKey, *platformKey)
		}
	}
	if err != nil {
		return fmt.Errorf("sim-request --platform-key: %w", err)
	}
	q := quote.NewSim(r, priv)
	body := map[string]any{
		"runtimeData": maa.Data{Data: base64.RawURLEncoding.EncodeToString([]byte(*runtimeData)), DataType: *dataType},
	}
	if *openEnclave {
		body["report"] = base64.RawURLEncoding.EncodeToString(quote.WrapOEReport(q))
	} else {
		body["quote"] = base64.RawURLEncoding.EncodeToString(q)
	}
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	return enc.Encode(body)
}
