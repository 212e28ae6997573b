// Command rewrited serves SMTP reply-rewrite decisions over gRPC and gives
// policy authors commands to check, evaluate and test their policies.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/rewrited/rewrited/service/policy"
)

const usage = `rewrited: SMTP reply-rewrite decisions over gRPC, with KumoMTA-compatible Lua policies

Usage:
  rewrited serve [--listen ADDR] [--policy FILE] [--eval-timeout DUR] [flags]
  rewrited check [--lua-path TEMPLATES] FILE...
  rewrited eval --policy FILE --status CODE [--response TEXT] [--command LINE] [--meta KEY=VALUE] [--json]
  rewrited test [-v] PATH...
  rewrited replay --policy FILE [--json] [DECISIONS.jsonl...]
  rewrited version        (or rewrited --version)

Run "rewrited COMMAND --help" for a command's flags.
`

type command func(args []string, stdout, stderr io.Writer) int

var commands = map[string]command{
	"serve":   runServe,
	"check":   runCheck,
	"eval":    runEval,
	"test":    runTest,
	"replay":  runReplay,
	"version": runVersion,
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "-version", "--version":
		return runVersion(args[1:], stdout, stderr)
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "rewrited: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	return cmd(args[1:], stdout, stderr)
}

// newFlagSet returns a flag set that reports errors on stderr and is
// parsed with parseFlags.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("rewrited "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args and returns the exit status to use when parsing
// stopped the command (0 for --help, 2 for a bad flag), or -1 to go on.
func parseFlags(fs *flag.FlagSet, args []string) int {
	switch err := fs.Parse(args); {
	case err == nil:
		return -1
	case errors.Is(err, flag.ErrHelp):
		return 0
	default:
		return 2
	}
}

// luaPathFlag binds --lua-path, where require looks after the policy's
// folder, on the commands that load policies.
func luaPathFlag(fs *flag.FlagSet) *string {
	return fs.String("lua-path", policy.DefaultLuaPath, "where require looks for modules after the policy's folder: `templates` in Lua's package.path syntax (DIR/?.lua;DIR/?/init.lua)")
}
