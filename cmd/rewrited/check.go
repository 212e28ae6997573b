package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/rewrited/rewrited/service/policy"
)

// runCheck loads every file and prints FILE:LINE: message for each problem.
func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("check", stderr)
	luaPath := luaPathFlag(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: rewrited check [--lua-path TEMPLATES] FILE...\n\nLoads each policy file as `rewrited serve` would, with the global _VALIDATING_CONFIG set to true, and reports problems as FILE:LINE: message.\n\nFlags:")
		fs.PrintDefaults()
	}
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "rewrited check: no policy file given")
		return 2
	}
	status := 0
	for _, file := range fs.Args() {
		warnings, err := checkFile(file, *luaPath)
		for _, w := range warnings {
			fmt.Fprintln(stdout, w)
		}
		if err != nil {
			fmt.Fprintln(stdout, err)
			status = 1
		}
	}
	return status
}

func checkFile(file, luaPath string) ([]policy.Warning, error) {
	src, err := os.ReadFile(file)
	if err != nil {
		var pathErr *os.PathError
		if errors.As(err, &pathErr) {
			err = pathErr.Err
		}
		return nil, &policy.LoadError{File: file, Message: err.Error()}
	}
	p, warnings, err := policy.Compile(file, src, policy.Options{PoolSize: 1, LuaPath: luaPath, Validating: true})
	if err != nil {
		return warnings, err
	}
	p.Close()
	return warnings, nil
}
