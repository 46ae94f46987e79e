// Package cli implements the proxy binary's subcommands, listed in one table (commands). Each
// is a function from arguments and standard streams to an error; Main maps errors to exit
// codes through internal/cmdexit, so only main exits.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/countersign/countersign/internal/cmdexit"
	"github.com/countersign/countersign/internal/version"
)

// Exit codes shared by every subcommand (internal/cmdexit's, named for what they mean here).
const (
	ExitOK       = cmdexit.OK
	ExitRejected = cmdexit.Failure // a verification said no
	ExitFailed   = cmdexit.Failure // `run`: the proxy stopped serving (a listener failed or could not be bound)
	ExitUsage    = cmdexit.Usage   // usage, configuration or I/O error
)

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

// commands is the subcommand table, each command's Run in the file named for it.
var commands = map[string]Command{
	"attest": {
		Summary: "get a fresh attestation token from MAA or the local attestation service",
		Run:     runAttest,
	},
	"iptables": {
		Summary: "install (or print, or remove) the transparent-interception rules; run by the init container with NET_ADMIN",
		Run:     runIptables,
	},
	"run": {
		Summary: "serve: attested inbound, outbound and admin listeners from --config FILE",
		Run:     runRun,
	},
	"sim-platform-key": {
		Summary: "make a simulated platform key (private to FILE, public to FILE.pub)",
		Run:     runSimPlatformKey,
	},
	"verify": {
		Summary: "explain whether a token or a receipt satisfies a policy (exit 0 accepted, 1 rejected, 2 error)",
		Run:     runVerify,
	},
}

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
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(errw, "proxy: unknown command %q\n\n", args[0])
		usage(errw)
		return ExitUsage
	}
	err := cmd.Run(ctx, args[1:], s)
	if err != nil && !cmdexit.HasCode(err) {
		// The proxy's tools document exit 2 for configuration and I/O errors too: only a
		// rejection (`verify`, `attest`) or a serving failure (`run`) exits 1, explicitly.
		err = cmdexit.UsageError(err)
	}
	return cmdexit.Report("proxy "+args[0], err, errw)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: proxy <command> [flags]")
	fmt.Fprintln(w, "\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-18s %s\n", n, commands[n].Summary)
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
		return cmdexit.UsageError(err)
	}
	if fs.NArg() > 0 {
		return cmdexit.Usagef("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	return nil
}
