package attester

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"syscall"

	"github.com/countersign/countersign/attestation/quote"
	"github.com/edgelesssys/ego/enclave"
)

// SGX gets quotes from the SGX hardware through EGo's enclave runtime. It builds with plain Go
// but works only inside an EGo enclave (`ego run`); outside one, Quote returns ErrNotInEnclave.
type SGX struct{}

// ErrNotInEnclave is returned by SGX.Quote when the process is not running inside an EGo
// enclave.
var ErrNotInEnclave = errors.New("the sgx attester works only inside an EGo enclave on SGX hardware (start the binary with `ego run`, or use the sim attester for development)")

// getRemoteReport is EGo's enclave.GetRemoteReport, replaceable in tests.
var getRemoteReport = enclave.GetRemoteReport

// Name implements Attester.
func (SGX) Name() string { return NameSGX }

// Quote implements Attester.
func (SGX) Quote(ctx context.Context, runtimeData []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h := sha256.Sum256(runtimeData)
	report, err := getRemoteReport(h[:])
	if err != nil {
		// Outside an enclave the EGo runtime's system call does not exist (ENOSYS), which
		// EGo reports as OE_UNSUPPORTED.
		var errno syscall.Errno
		if err.Error() == "OE_UNSUPPORTED" || (errors.As(err, &errno) && errno == syscall.ENOSYS) {
			return nil, ErrNotInEnclave
		}
		return nil, fmt.Errorf("sgx: get remote report: %w", err)
	}
	q, err := quote.UnwrapOEReport(report)
	if err != nil {
		return nil, fmt.Errorf("sgx: enclave returned a malformed report: %w", err)
	}
	return q, nil
}
