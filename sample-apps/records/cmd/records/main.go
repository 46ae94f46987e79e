// Command records is the healthcare demo's records API: patients, records and scan diagnoses
// over plain HTTP, stored in Redis, diagnosed by the inference server. It knows nothing about
// attestation: its Countersign sidecar owns the ports it listens behind and dials. See
// docs/healthcare-demo.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/countersign/countersign/internal/cmdexit"
	"github.com/countersign/countersign/sample-apps/records/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := app.Run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(cmdexit.Report("records", err, os.Stderr))
}
