// Command injector is Countersign's mutating admission webhook: it adds the attestation proxy as
// a native sidecar to pods that opt in. See docs/injection.md; `injector -h` lists the flags.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/countersign/countersign/injector/app"
	"github.com/countersign/countersign/internal/cmdexit"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := app.Run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	stop()
	os.Exit(cmdexit.Report("injector", err, os.Stderr))
}
