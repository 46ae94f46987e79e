package cli

import (
	"errors"
	"fmt"
	"io"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/internal/cmdexit"
)

// tooLarge is readAtMost's error for an input over its cap. For a token or a receipt that is
// a verdict about the input (token_too_large, receipt_malformed: exit 1), not a usage error.
type tooLarge struct{ max int }

func (e *tooLarge) Error() string { return fmt.Sprintf("more than %d bytes", e.max) }

func readAtMost(r io.Reader, max int) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, int64(max)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > max {
		return nil, &tooLarge{max}
	}
	return b, nil
}

// rejectTooLarge reports an over-cap input as the rejection code says, exit 1; ok is false
// when err is another error.
func rejectTooLarge(s Streams, what string, code attestation.Code, err error) (error, bool) {
	var tl *tooLarge
	if !errors.As(err, &tl) {
		return nil, false
	}
	fmt.Fprintf(s.Out, "rejected: %s\n  the %s is over the size cap: %v\n", code, what, err)
	return cmdexit.WithCode(ExitRejected, fmt.Errorf("%s rejected: %s", what, code)), true
}
