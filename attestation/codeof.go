package attestation

import "errors"

// CodeOf is the reason code of err if it is, or wraps, a *Rejection, and "" otherwise.
func CodeOf(err error) Code {
	var rej *Rejection
	if errors.As(err, &rej) {
		return rej.Code
	}
	return ""
}
