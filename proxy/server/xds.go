//go:build !noxds

package server

// The control plane's side of the proxy (proxy/mesh), linked unless built with -tags noxds.

import (
	"github.com/countersign/countersign/proxy/mesh"
	"github.com/countersign/countersign/proxy/xdsclient"
)

// HasXDS is whether this build links the xDS client.
const HasXDS = true

// meshCodes are the control plane side's reason codes.
var meshCodes = mesh.Codes

func (s *Server) newControlPlane() (controlPlane, error) {
	return mesh.New(mesh.Config{
		Proxy:     s.cfg,
		Engine:    s.Engine,
		Identity:  s.Identity,
		Metrics:   s.Metrics,
		Logger:    s.log,
		Deps:      s.deps,
		ConnGauge: s.connGauge,
	})
}

// XDS returns the xDS client, nil without a control plane.
func (s *Server) XDS() *xdsclient.Client {
	if m, ok := s.cp.(*mesh.Mesh); ok {
		return m.Client()
	}
	return nil
}
