// Command verdict runs infrastructure A/B experiments: it shifts a slice of a load balancer
// pool's traffic to a canary cluster, compares it against baseline clusters with anytime-valid
// statistics, and promotes or rolls back on its own.
package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/verdict-dev/verdict/server"
	"io"
	"os"
	"os/signal"
	"sync"
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
	ctx, again, stop := notifyInterrupts(context.Background())
	defer stop()

	root := newRootCmd(&streams{in: stdin, out: stdout, err: stderr, again: again})
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	// Under -o json a failure is a JSON document too, on stderr (stdout keeps whatever
	// the command printed before it failed), so a script parses one format either way.
	asJSON := false
	if f := root.PersistentFlags().Lookup("output"); f != nil && f.Value.String() == "json" {
		asJSON = true
	}
	report := func(code int, msg string, usage bool) int {
		if asJSON {
			writeJSON(stderr, server.ErrorDoc{TypeMeta: server.Meta(server.KindError), Error: msg, ExitCode: code})
			return code
		}
		fmt.Fprintln(stderr, "verdict:", msg)
		if usage {
			fmt.Fprintln(stderr, "Run 'verdict --help' for usage.")
		}
		return code
	}
	var ee *exitErr
	if errors.As(err, &ee) {
		if ee.err != nil && !ee.silent {
			return report(ee.code, ee.err.Error(), false)
		}
		return ee.code
	}
	// Commands wrap every runtime failure in an exitErr, so anything else comes from cobra
	// itself rejecting the command line (unknown command, bad flag, wrong argument count).
	return report(exitInvalid, err.Error(), true)
}

type streams struct {
	in       io.Reader
	out, err io.Writer
	// again receives the signals after the first (which cancels the command's context): a
	// command that goes on after an interrupt, as verdict run does to roll back, stops at
	// the next one.
	again <-chan os.Signal
}

// interruptError is the cause of the command's context once SIGINT or SIGTERM arrived.
type interruptError struct{ sig os.Signal }

func (e *interruptError) Error() string { return "interrupted by " + signalName(e.sig) }

// signalName is the conventional name of the signals verdict handles.
func signalName(s os.Signal) string {
	switch s {
	case os.Interrupt:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return s.String()
}

// interruptedBy names the signal that ended ctx ("SIGINT", "SIGTERM"), or says "an
// interrupt" when ctx ended otherwise.
func interruptedBy(ctx context.Context) string {
	var ie *interruptError
	if errors.As(context.Cause(ctx), &ie) {
		return signalName(ie.sig)
	}
	return "an interrupt"
}

// notifyInterrupts is signal.NotifyContext for SIGINT and SIGTERM that says which signal
// came (the context's cause is an *interruptError) and keeps listening: every later signal
// goes to again instead of killing the process, so a command rolling back after the first
// decides what the second means.
func notifyInterrupts(parent context.Context) (ctx context.Context, again <-chan os.Signal, stop func()) {
	c, cancel := context.WithCancelCause(parent)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	later := make(chan os.Signal, 4)
	done := make(chan struct{})
	go func() {
		first := true
		for {
			select {
			case s := <-sigs:
				if first {
					first = false
					cancel(&interruptError{sig: s})
					continue
				}
				select {
				case later <- s:
				default:
				}
			case <-done:
				return
			}
		}
	}()
	var once sync.Once
	return c, later, func() {
		once.Do(func() {
			signal.Stop(sigs)
			close(done)
			cancel(nil)
		})
	}
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
