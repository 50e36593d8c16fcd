// Command verdict runs infrastructure A/B experiments: it shifts a slice of a load balancer
// pool's traffic to a canary cluster, compares it against baseline clusters with anytime-valid
// statistics, and promotes or rolls back on its own.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes are part of the CLI contract (docs/cli.md); scripts branch on them.
const (
	exitOK           = 0
	exitError        = 1 // runtime error
	exitInvalid      = 2 // invalid input or usage
	exitRolledBack   = 3
	exitAborted      = 4
	exitInconclusive = 5
	exitCheckFailed  = 6
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is main without the process: tests call it with their own streams.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	root := newRootCmd(&streams{in: stdin, out: stdout, err: stderr})
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ee *exitErr
	if errors.As(err, &ee) {
		if ee.err != nil && !ee.silent {
			fmt.Fprintln(stderr, "verdict:", ee.err)
		}
		return ee.code
	}
	// Commands wrap every runtime failure in an exitErr, so anything else comes from cobra
	// itself rejecting the command line (unknown command, bad flag, wrong argument count).
	fmt.Fprintln(stderr, "verdict:", err)
	fmt.Fprintln(stderr, "Run 'verdict --help' for usage.")
	return exitInvalid
}

type streams struct {
	in       io.Reader
	out, err io.Writer
}

// exitErr carries a specific exit code out of a command. silent means the command has
// already told the user what went wrong.
type exitErr struct {
	code   int
	err    error
	silent bool
}

func (e *exitErr) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

func (e *exitErr) Unwrap() error { return e.err }

func usageErrorf(format string, a ...any) error {
	return &exitErr{code: exitInvalid, err: fmt.Errorf(format, a...)}
}

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitErr{code: code, err: err}
}

// silentExit ends the command with code after its view has already reported the problem.
func silentExit(code int) error { return &exitErr{code: code, silent: true} }

// usageError marks a command-line mistake caught by cobra's flag parsing.
type usageError struct{ error }
