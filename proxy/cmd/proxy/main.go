// Command proxy is the Countersign sidecar: `proxy run` serves; `proxy attest`, `proxy verify`
// and `proxy sim-platform-key` are tools for operators. See `proxy help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/countersign/countersign/proxy/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
