package attestedtls_test

import (
	"github.com/countersign/countersign/attestation/maa"
	"github.com/countersign/countersign/attestation/policy"
	"github.com/countersign/countersign/proxy/attestedtls"
	"github.com/countersign/countersign/proxy/identity"
)

// The implementations the proxy wires in satisfy the interfaces defined here. (In a test file,
// so that the pinned proxy images do not change for it.)
var (
	_ attestedtls.Checker    = (*policy.Engine)(nil)
	_ attestedtls.CertSource = (*identity.Source)(nil)
)

// identity.Source gets its tokens from the attestation service's client.
var _ identity.TokenIssuer = (*maa.Client)(nil)
