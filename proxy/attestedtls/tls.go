package attestedtls

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/attestation/policy"
	"github.com/countersign/countersign/attestation/token"
)

// Checker decides whether a token satisfies one of identities and binds pub;
// *policy.Engine is one.
type Checker interface {
	Check(ctx context.Context, raw string, identities []string, pub crypto.PublicKey) (policy.Decision, *token.Verified)
}

// CertSource hands out this proxy's current certificate; identity.Source is one. It returns
// an error when no valid certificate is loaded, which fails the handshake.
type CertSource interface {
	Certificate() (*tls.Certificate, error)
}

// Rejecter is told about every refused peer (for logs and metrics).
type Rejecter func(listener string, rej *attestation.Rejection)

// CodeNotAttested is the reason code for a peer certificate without a usable token.
const CodeNotAttested attestation.Code = "peer_not_attested"

// CodeCertOutlivesToken is the reason for a peer certificate valid beyond its token's exp.
const CodeCertOutlivesToken attestation.Code = "certificate_outlives_token"

// Expiry is when a connection authenticated with the attested certificate cert must end: the
// earlier of its NotAfter and its token's exp (read from the token the handshake verified).
func Expiry(cert *x509.Certificate) time.Time {
	end := cert.NotAfter
	raw, err := tokenOf(cert)
	if err != nil {
		return end
	}
	if exp, ok := token.UnverifiedExpiry(raw); ok && exp.Before(end) {
		end = exp
	}
	return end
}

// CodeCheckTimeout is the reason when the check did not finish in time.
const CodeCheckTimeout attestation.Code = "check_timeout"

// CheckTimeout bounds a peer check inside a handshake (a cold key cache may fetch keys).
const CheckTimeout = 5 * time.Second

// Peer is a verified peer.
type Peer struct {
	Identity string
	Token    *token.Verified
	Key      crypto.PublicKey
}

// Verify checks a peer certificate: a token extension, the token valid and satisfying one of
// identities, and the runtime data naming the certificate's key. Errors are *attestation.Rejection.
func Verify(ctx context.Context, c Checker, cert *x509.Certificate, identities []string) (*Peer, error) {
	if _, err := CheckKey(cert.PublicKey); err != nil {
		return nil, attestation.Rejectf(CodeNotAttested, "%v", err)
	}
	raw, err := tokenOf(cert)
	if err != nil {
		return nil, attestation.Rejectf(CodeNotAttested, "%v", err)
	}
	if len(identities) == 0 {
		return nil, attestation.Rejectf(attestation.CodeNoIdentity, "no identities are allowed here")
	}
	d, t := c.Check(ctx, raw, identities, cert.PublicKey)
	if !d.Allowed() {
		return nil, d.Rejection
	}
	// The peer chooses its certificate's NotAfter; the token's exp is the attestation
	// service's. A certificate valid beyond its token would let a stream (closed at NotAfter)
	// outlive the attestation that allowed it.
	if exp := t.Expiry(); cert.NotAfter.After(exp) {
		return nil, attestation.Reject(CodeCertOutlivesToken, "certificate NotAfter", cert.NotAfter.UTC().Format(time.RFC3339), "no later than the token's exp ("+exp.UTC().Format(time.RFC3339)+")")
	}
	return &Peer{Identity: d.Identity, Token: t, Key: cert.PublicKey}, nil
}

func verifyState(c Checker, identities []string, current func() (Checker, []string), listener string, log *slog.Logger, onReject Rejecter) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		c, identities := c, identities
		if current != nil {
			c, identities = current()
		}
		var err error
		if len(cs.PeerCertificates) == 0 {
			err = attestation.Rejectf(CodeNotAttested, "the peer presented no certificate")
		} else if len(cs.PeerCertificates) > 1 {
			err = attestation.Rejectf(CodeNotAttested, "the peer presented %d certificates, expected its single attested certificate", len(cs.PeerCertificates))
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), CheckTimeout)
			_, err = Verify(ctx, c, cs.PeerCertificates[0], identities)
			cancel()
		}
		if err != nil {
			var rej *attestation.Rejection
			if !errors.As(err, &rej) {
				rej = attestation.Rejectf(CodeNotAttested, "%v", err)
			}
			if log != nil {
				log.Warn("peer refused", "listener", listener, "reason", string(rej.Code), "detail", rej.Sentence())
			}
			if onReject != nil {
				onReject(listener, rej)
			}
			return fmt.Errorf("countersign: %w", rej)
		}
		return nil
	}
}

// Options configure the TLS configs.
type Options struct {
	Listener   string // for logs and metrics
	Identities []string
	// Current, if set, is read at every handshake instead of the Checker and Identities
	// given: the policy in force now (e.g. narrowed by the control plane).
	Current    func() (Checker, []string)
	Logger     *slog.Logger
	OnReject   Rejecter
	NextProtos []string
}

// ServerConfig is the config of an attested inbound listener: TLS 1.3 only, a client
// certificate required and checked against opts.Identities.
func ServerConfig(src CertSource, c Checker, opts Options) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			c, err := src.Certificate()
			if err == nil {
				if rec, ok := hello.Context().Value(recorderKey{}).(*Recorded); ok {
					rec.set(c)
				}
			}
			return c, err
		},
		// The peer's certificate is self-signed; trust comes from its token, checked in
		// VerifyConnection, not from a CA.
		ClientAuth:       tls.RequestClientCert, // VerifyConnection refuses a missing certificate, with a reason code
		VerifyConnection: verifyState(c, opts.Identities, opts.Current, opts.Listener, opts.Logger, opts.OnReject),
		NextProtos:       opts.NextProtos,
	}
}

// ClientConfig is the config of a connection to an upstream proxy that must prove one of
// opts.Identities.
func ClientConfig(src CertSource, c Checker, serverName string, opts Options) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		ServerName: serverName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return src.Certificate()
		},
		// No CA verifies the upstream's self-signed certificate: VerifyConnection checks its
		// token against policy and that the token names the certificate's key, and the
		// handshake proves possession of that key. VerifyConnection runs even when
		// InsecureSkipVerify is set.
		InsecureSkipVerify: true, //nolint:gosec // replaced by VerifyConnection, see above
		VerifyConnection:   verifyState(c, opts.Identities, opts.Current, opts.Listener, opts.Logger, opts.OnReject),
		NextProtos:         opts.NextProtos,
	}
}

// PeerOf re-derives the verified peer of an established connection (the token check is
// cached by the verifier, so this is cheap).
func PeerOf(ctx context.Context, c Checker, cs *tls.ConnectionState, identities []string) (*Peer, error) {
	if cs == nil || len(cs.PeerCertificates) != 1 {
		return nil, attestation.Rejectf(CodeNotAttested, "no attested peer certificate on this connection")
	}
	return Verify(ctx, c, cs.PeerCertificates[0], identities)
}

type recorderKey struct{}

// Recorded remembers which certificate this side presented on a connection, so that what it
// signs on that connection is signed with the key the peer saw.
type Recorded struct {
	mu   sync.Mutex
	cert *tls.Certificate
}

func (r *Recorded) set(c *tls.Certificate) {
	r.mu.Lock()
	r.cert = c
	r.mu.Unlock()
}

// Cert is the certificate presented, or nil before the handshake.
func (r *Recorded) Cert() *tls.Certificate {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cert
}

// WithRecorder returns a context whose handshakes (server side) record the certificate
// presented; use it from http.Server.ConnContext.
func WithRecorder(ctx context.Context) context.Context {
	return context.WithValue(ctx, recorderKey{}, &Recorded{})
}

// WithRecorded returns a context that carries r: for connections whose handshake ran before the
// server saw them (proxy/server's ALPN split), in the context the handshake used.
func WithRecorded(ctx context.Context, r *Recorded) context.Context {
	return context.WithValue(ctx, recorderKey{}, r)
}

// RecordedFrom returns the recorder in ctx, or nil.
func RecordedFrom(ctx context.Context) *Recorded {
	r, _ := ctx.Value(recorderKey{}).(*Recorded)
	return r
}

// Dialer is the one builder of attested TCP transports: a dialer of TLS connections to an
// upstream proxy at serverName that must prove one of opts.Identities, presenting src's
// certificate.
func Dialer(src CertSource, c Checker, serverName string, timeout time.Duration, opts Options) *tls.Dialer {
	return &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: ClientConfig(src, c, serverName, opts)}
}

// Codes lists every reason code of this package (docs/protocol.md section 6).
var Codes = []attestation.Code{CodeNotAttested, CodeCertOutlivesToken, CodeCheckTimeout}
