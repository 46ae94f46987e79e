// Command inference-server serves the models of a model repository over the Open Inference
// Protocol v2 REST API with ONNX Runtime. See docs/inference-server.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/countersign/countersign/internal/cmdexit"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(cmdexit.Report("inference-server", err, os.Stderr))
}
