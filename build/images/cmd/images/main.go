// Command images builds, pushes and pins the container images (mk/images.mk, docs/images.md):
//
//	images build [name...]          build into .cache/images/oci and .cache/images/images.tsv
//	images push --registry R        push the layout's images to R/<name>, by digest plus a tag
//	images pin                      write images.tsv's digests into the charts' values.yaml
//	images pin-debian               re-pin build/images/debian.lock to the archive's candidates
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/countersign/countersign/build/images"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := images.Run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}
