//go:build noxds

package server_test

import (
	"errors"
	"testing"
	"time"

	"github.com/countersign/countersign/proxy/config"
	"github.com/countersign/countersign/proxy/server"
)

// TestLeanBuildRefusesXDS: the lean build (-tags noxds), given a configuration that names a
// control plane, refuses to start and says which image it needs, rather than run without
// the policy narrowings and routes the control plane would push.
func TestLeanBuildRefusesXDS(t *testing.T) {
	if server.HasXDS {
		t.Fatal("built with -tags noxds but HasXDS is true")
	}
	e := newEnv(t, time.Hour)
	c := e.cfg("back", mrBack)
	c.Inbound = []config.Inbound{{
		Name:      "api",
		Listen:    "127.0.0.1:0",
		Protocol:  "http",
		ForwardTo: "127.0.0.1:1",
		Allow:     []string{"front"},
	}}
	c.XDS = &config.XDS{Server: "127.0.0.1:1", CAFile: e.caFile, CertFile: e.caFile, KeyFile: e.caFile}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := server.New(c, server.Options{}); !errors.Is(err, server.ErrNoXDS) {
		t.Fatalf("New with an xds section in the lean build: %v, want ErrNoXDS", err)
	}
}
