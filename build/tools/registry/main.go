// Command registry is CNCF distribution's registry v3.1.2, built from the Go module proxy for
// the images the charts pull (scripts/registry.sh, docs/images.md). Only the filesystem storage
// driver is linked: the registry serves 127.0.0.1 from a folder under .cache, nothing else.
package main

import (
	"os"

	"github.com/distribution/distribution/v3/registry"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
)

func main() {
	if err := registry.RootCmd.Execute(); err != nil {
		os.Exit(1)
	}
}
