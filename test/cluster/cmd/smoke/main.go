// Command smoke is the workload of the cluster's own test (TestClusterSmoke): one static binary
// in an image with no shell, run as the sidecar, the app and the client of the test pods.
//
//	smoke serve [-delay D] ADDR TEXT   after D, serve TEXT on ADDR (GET / and /healthz)
//	smoke app URL ADDR                 GET URL once, first thing: exit 1 if it fails; then serve
//	                                   what it fetched on ADDR ("app saw: ...")
//	smoke sleep                        wait for SIGTERM
//	smoke get URL                      GET URL (names resolve through the pod's DNS), print the body
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "smoke:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: smoke serve|app|sleep|get ...")
	}
	switch verb, rest := args[0], args[1:]; verb {
	case "serve":
		delay := time.Duration(0)
		if len(rest) >= 2 && rest[0] == "-delay" {
			d, err := time.ParseDuration(rest[1])
			if err != nil {
				return err
			}
			delay, rest = d, rest[2:]
		}
		if len(rest) != 2 {
			return fmt.Errorf("usage: smoke serve [-delay D] ADDR TEXT")
		}
		fmt.Printf("sidecar starting, listening in %s\n", delay)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil
		}
		fmt.Printf("sidecar listening on %s\n", rest[0])
		return serve(ctx, rest[0], rest[1])
	case "app":
		if len(rest) != 2 {
			return fmt.Errorf("usage: smoke app URL ADDR")
		}
		body, err := get(ctx, rest[0])
		if err != nil {
			return fmt.Errorf("first fetch of %s: %w", rest[0], err)
		}
		fmt.Printf("app first fetch ok: %s\n", body)
		return serve(ctx, rest[1], "app saw: "+body)
	case "sleep":
		<-ctx.Done()
		return nil
	case "get":
		if len(rest) != 1 {
			return fmt.Errorf("usage: smoke get URL")
		}
		body, err := get(ctx, rest[0])
		if err != nil {
			return err
		}
		fmt.Println(body)
		return nil
	default:
		return fmt.Errorf("unknown verb %q", verb)
	}
}

func serve(ctx context.Context, addr, text string) error {
	srv := &http.Server{Addr: addr, ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, text) })}
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}

func get(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", url, resp.Status)
	}
	return strings.TrimSpace(string(b)), nil
}
