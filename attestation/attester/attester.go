// Package attester produces enclave evidence: a quote whose report data commits to runtime
// data. Two attesters stand behind one interface: "sgx" (EGo's enclave package, real hardware)
// and "sim" (a software quote signed by a simulated platform key, for development and CI).
package attester

import (
	"context"
	"fmt"
)

// Attester produces a quote over SHA-256 of runtimeData (the first 32 bytes of the report
// data; the rest is zero). The quote has no Open Enclave header.
type Attester interface {
	// Name is "sgx" or "sim".
	Name() string
	// Quote returns a fresh quote committing to runtimeData.
	Quote(ctx context.Context, runtimeData []byte) ([]byte, error)
}

// Names of the attesters.
const (
	NameSGX = "sgx"
	NameSim = "sim"
)

// Options configure New.
type Options struct {
	// SimPlatformKey is the simulated platform's private key file (sim only).
	SimPlatformKey string
	// SimIdentity overrides the simulated measurements (sim only). Zero values get defaults.
	SimIdentity SimIdentity
}

// New returns the named attester.
func New(name string, opts Options) (Attester, error) {
	switch name {
	case NameSGX:
		return SGX{}, nil
	case NameSim:
		if opts.SimPlatformKey == "" {
			return nil, fmt.Errorf("the sim attester needs a simulated platform key file (make one with `proxy sim-platform-key --out FILE`)")
		}
		return NewSimFromFile(opts.SimPlatformKey, opts.SimIdentity)
	}
	return nil, fmt.Errorf("unknown attester %q, expected %q or %q", name, NameSGX, NameSim)
}
