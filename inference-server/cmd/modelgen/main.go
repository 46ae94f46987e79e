// Command modelgen regenerates the demo chest-scan model into a model repository folder:
// model.onnx, config.json (with the model's SHA-256), MODEL_CARD.md and sample scans. With
// -model bench it writes the benchmark model instead (demomodel.BenchModel).
//
//	go run ./inference-server/cmd/modelgen -out inference-server/models
//	go run ./inference-server/cmd/modelgen -model bench -out /tmp/bench-models
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"time"

	"github.com/countersign/countersign/inference-server/demomodel"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "modelgen:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("modelgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "inference-server/models", "model repository folder to write into")
	which := fs.String("model", "demo", "demo: the committed chest-scan classifier; bench: the 224×224 benchmark model (untrained, not committed)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("--out must not be empty")
	}
	start := time.Now()
	var files demomodel.Files
	var err error
	switch *which {
	case "demo":
		files, err = demomodel.Generate()
	case "bench":
		files, err = demomodel.BenchModel()
	default:
		return fmt.Errorf("--model %q: want demo or bench", *which)
	}
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		p := filepath.Join(*out, filepath.FromSlash(n))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, files[n], 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "  wrote %s (%d bytes)\n", p, len(files[n]))
	}
	fmt.Fprintf(stdout, "  generated in %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}
