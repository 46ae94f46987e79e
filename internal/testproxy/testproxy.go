// Package testproxy starts a Countersign proxy in-process for tests: validated configuration,
// debug logs kept in memory (printed when the test fails), stopped with the test, and returned
// only once it holds a valid token.
package testproxy

import (
	"context"
	"github.com/countersign/countersign/internal/syncbuf"
	"log/slog"
	"testing"
	"time"

	"github.com/countersign/countersign/proxy/config"
	"github.com/countersign/countersign/proxy/server"
)

// Logs is a concurrency-safe log buffer.
type Logs = syncbuf.Buffer

// Start validates c, starts the proxy, and waits (up to 20 s) until it is ready.
func Start(t testing.TB, c *config.Config) (*server.Server, *Logs) {
	t.Helper()
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	logs := &Logs{}
	s, err := server.New(c, server.Options{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := s.Wait(); err != nil {
			t.Errorf("%s: %v", c.Identity, err)
		}
		if t.Failed() {
			t.Logf("logs of %s:\n%s", c.Identity, logs.String())
		}
	})
	for deadline := time.Now().Add(20 * time.Second); !s.Identity.Ready(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s never became ready; logs:\n%s", c.Identity, logs.String())
		}
	}
	return s, logs
}
