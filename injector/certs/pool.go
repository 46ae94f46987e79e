package certs

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"
)

// PoolSource is a set of CA certificates read from a PEM file (e.g. the CA that issues the
// proxies' control-plane client certificates), reloaded when the file changes; a failed
// reload keeps the previous pool. Handshakes read it from memory.
type PoolSource struct {
	File string
	Log  *slog.Logger

	cur    atomic.Pointer[x509.CertPool]
	curPEM []byte
}

// Reload reads the file once.
func (p *PoolSource) Reload() error {
	b, err := os.ReadFile(p.File)
	if err != nil {
		return err
	}
	if bytes.Equal(b, p.curPEM) && p.cur.Load() != nil {
		return nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return fmt.Errorf("%s: no PEM certificate", p.File)
	}
	p.cur.Store(pool)
	p.curPEM = b
	p.Log.Info("CA certificates loaded", "file", p.File, "cas", bytes.Count(b, []byte("BEGIN CERTIFICATE")))
	return nil
}

// Run reloads every interval until ctx ends.
func (p *PoolSource) Run(ctx context.Context, interval time.Duration) {
	reloadEvery(ctx, interval, p.Reload, func(err error) {
		p.Log.Warn("CA certificates reload failed; keeping the previous ones", "file", p.File, "err", err)
	})
}

// Pool is the current pool.
func (p *PoolSource) Pool() (*x509.CertPool, error) {
	c := p.cur.Load()
	if c == nil {
		return nil, errors.New("no CA certificates loaded")
	}
	return c, nil
}
