// Command attestation-service is Countersign's local attestation service: an MAA-compatible
// REST service for development, CI and air-gapped sites. See docs/attestation-service.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/countersign/countersign/attestation/app"
	"github.com/countersign/countersign/internal/cmdexit"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := app.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(cmdexit.Report("attestation-service", err, os.Stderr))
}
