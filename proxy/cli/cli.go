// Package cli implements the proxy binary's subcommands. Each is a function from arguments and
// standard streams to an error; Main maps errors to exit codes, so only main exits.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/countersign/countersign/internal/version"
)

// Exit codes shared by every subcommand.
const (
	ExitOK       = 0
	ExitRejected = 1 // a verification said no
	ExitFailed   = 1 // `run`: the proxy stopped serving (a listener failed or could not be bound)
	ExitUsage    = 2 // usage, configuration or I/O error
)

// exitError carries an exit code with its message.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &exitError{code: ExitUsage, err: fmt.Errorf(format, args...)}
}

// Streams are a command's standard streams.
type Streams struct {
	In       io.Reader
	Out, Err io.Writer
}

// Command is a subcommand.
type Command struct {
	Summary string
	Run     func(ctx context.Context, args []string, s Streams) error
}

// Commands is the subcommand table; other files register theirs in init.
var Commands = map[string]Command{}

// Main runs the subcommand named by args[0] and returns the process exit code.
func Main(ctx context.Context, args []string, in io.Reader, out, errw io.Writer) int {
	s := Streams{In: in, Out: out, Err: errw}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(out)
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	if args[0] == "version" || args[0] == "--version" {
		fmt.Fprintln(out, "proxy", version.Version)
		return ExitOK
	}
	cmd, ok := Commands[args[0]]
	if !ok {
		fmt.Fprintf(errw, "proxy: unknown command %q\n\n", args[0])
		usage(errw)
		return ExitUsage
	}
	err := cmd.Run(ctx, args[1:], s)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	fmt.Fprintf(errw, "proxy %s: %v\n", args[0], err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return ExitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: proxy <command> [flags]")
	fmt.Fprintln(w, "\nCommands:")
	names := make([]string, 0, len(Commands))
	for n := range Commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-18s %s\n", n, Commands[n].Summary)
	}
	fmt.Fprintln(w, "\nRun `proxy <command> -h` for a command's flags.")
}

// newFlagSet returns a flag set that reports errors as usage errors.
func newFlagSet(name string, s Streams) *flag.FlagSet {
	fs := flag.NewFlagSet("proxy "+name, flag.ContinueOnError)
	fs.SetOutput(s.Err)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &exitError{code: ExitUsage, err: err}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	return nil
}
