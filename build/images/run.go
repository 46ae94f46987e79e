package images

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// FindRoot returns the repository root: the closest parent of dir holding go.mod and build/images.
func FindRoot(dir string) (string, error) {
	d, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "build/images/debian.txt")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", errors.New("not inside the countersign repository (no build/images/debian.txt above the working directory)")
		}
		d = parent
	}
}

// DefaultCache is $COUNTERSIGN_CACHE/images, or .cache/images in the repository.
func DefaultCache(root string) string {
	if c := os.Getenv("COUNTERSIGN_CACHE"); c != "" {
		return filepath.Join(c, "images")
	}
	return filepath.Join(root, ".cache", "images")
}

// Run is the images command.
func Run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: images build|push|pin|pin-debian [flags]")
	}
	root, err := FindRoot(".")
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("images "+args[0], flag.ContinueOnError)
	cache := fs.String("cache", DefaultCache(root), "cache folder: debs/, oci/ (the OCI layout), images.tsv")
	registry := fs.String("registry", "127.0.0.1:5000/countersign", "push: host[:port][/path] the images go under, as <registry>/<name>")
	tag := fs.String("tag", "", "push: the tag set beside the digest (default: the chart's appVersion)")
	insecure := fs.Bool("insecure", false, "push: plain HTTP even to a non-loopback registry")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	layoutDir, tsv := filepath.Join(*cache, "oci"), filepath.Join(*cache, "images.tsv")
	switch args[0] {
	case "build":
		start := time.Now()
		b, err := NewBuilder(root, *cache, out)
		if err != nil {
			return err
		}
		rs, err := b.Build(fs.Args())
		if err != nil {
			return err
		}
		list, err := WriteLayout(layoutDir, tsv, rs)
		if err != nil {
			return err
		}
		for _, l := range list {
			fmt.Fprintf(out, "  %-20s %s %7.1f MiB\n", l.Name, l.Digest, float64(l.Size)/(1<<20))
		}
		fmt.Fprintf(out, "  %d images in %s (OCI layout), list in %s; %.0fs\n", len(list), layoutDir, tsv, time.Since(start).Seconds())
		return nil
	case "push":
		t := *tag
		if t == "" {
			if t, err = ChartAppVersion(root); err != nil {
				return err
			}
		}
		_, err := Push(ctx, layoutDir, *registry, t, *insecure, out)
		return err
	case "pin":
		list, err := ReadList(tsv)
		if err != nil {
			return err
		}
		changed, err := PinCharts(root, list)
		if err != nil {
			return err
		}
		if len(changed) == 0 {
			fmt.Fprintln(out, "  the charts already pin these digests")
		}
		for _, c := range changed {
			fmt.Fprintln(out, "  "+c)
		}
		return nil
	case "pin-debian":
		lock, err := PinDebian(root)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "  %s: %d packages pinned to the archive's candidates; now run make images pin-images\n", LockFile, len(lock))
		return nil
	}
	return fmt.Errorf("unknown subcommand %q (want %s)", args[0], strings.Join([]string{"build", "push", "pin", "pin-debian"}, ", "))
}
