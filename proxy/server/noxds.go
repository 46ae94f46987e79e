//go:build noxds

package server

// The lean build (-tags noxds): no xDS client, and none of the Envoy and gRPC types it links
// (about 11 MiB of resident pages). The injector injects it into pods that do not use the
// control plane (docs/xds.md).

import (
	"errors"

	"github.com/countersign/countersign/attestation"
)

// HasXDS is whether this build links the xDS client.
const HasXDS = false

// meshCodes are the control plane side's reason codes: none in this build.
var meshCodes []attestation.Code

// ErrNoXDS is the configuration error of the lean build given an xds section.
var ErrNoXDS = errors.New("xds: this proxy is the lean build without an xDS client (-tags noxds); a pod that uses the control plane needs the xDS-capable image (image.proxySimXDS)")

func (s *Server) newControlPlane() (controlPlane, error) { return nil, ErrNoXDS }
