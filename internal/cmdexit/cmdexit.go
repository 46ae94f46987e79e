// Package cmdexit is the one mapping from a binary's error to its exit status, shared by every
// Countersign binary: 0 for success (and for -h), 2 for a usage error (a bad flag, argument,
// environment variable or configuration the user must fix), 1 for anything else. A command
// with a documented status of its own (`proxy verify` exits 1 on a rejection) attaches it
// with WithCode. Only main exits; everything else returns errors made here.
package cmdexit

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// Exit statuses.
const (
	OK      = 0
	Failure = 1 // the command ran and failed
	Usage   = 2 // the command was called wrongly: fix the flags, arguments or configuration
)

// usageError marks a usage error.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// UsageError marks err as a usage error (exit status 2); nil stays nil.
func UsageError(err error) error {
	if err == nil {
		return nil
	}
	return usageError{err}
}

// Usagef is UsageError(fmt.Errorf(format, args...)).
func Usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// IsUsage reports whether err is, or wraps, a usage error.
func IsUsage(err error) bool { return errors.As(err, new(usageError)) }

// codeError carries an explicit exit status.
type codeError struct {
	code int
	err  error
}

func (e *codeError) Error() string { return e.err.Error() }
func (e *codeError) Unwrap() error { return e.err }

// WithCode gives err the exit status code; nil stays nil.
func WithCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &codeError{code: code, err: err}
}

// HasCode reports whether err carries an exit status of its own (WithCode or UsageError).
func HasCode(err error) bool { return errors.As(err, new(*codeError)) || IsUsage(err) }

// Code is the exit status for err: OK for nil and flag.ErrHelp, the outermost WithCode's
// status, Usage for a usage error, Failure otherwise.
func Code(err error) int {
	var ce *codeError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return OK
	case errors.As(err, &ce):
		return ce.code
	case IsUsage(err):
		return Usage
	default:
		return Failure
	}
}

// Report writes "name: err" to w unless the status is OK, and returns the status: main's
// os.Exit(cmdexit.Report("name", run(ctx), os.Stderr)).
func Report(name string, err error, w io.Writer) int {
	code := Code(err)
	if code != OK {
		fmt.Fprintf(w, "%s: %v\n", name, err)
	}
	return code
}
