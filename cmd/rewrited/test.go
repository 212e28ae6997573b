package main

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/rewrited/rewrited/service/policy"
	"github.com/rewrited/rewrited/service/policytest"
)

// testFileSuffix names the policy test files a directory argument runs.
const testFileSuffix = "_test.yaml"

const testUsage = `Usage: rewrited test [-v] [--eval-timeout DUR] [--lua-path TEMPLATES] PATH...

Runs policy test files (YAML; see docs/policy-guide.md). A PATH that is a
directory runs every *` + testFileSuffix + ` file below it. Prints one line per
failed expectation as FILE:LINE: CASE: expected ..., got ..., a warning line for
each case that turns a successful DATA reply into a failure, and a final line
"N passed, M failed". Exit status: 0 when every case passes, 1 when one fails,
2 on a bad invocation or a test file that cannot be read.

Flags:
`

func runTest(args []string, stdout, stderr io.Writer) int {
	fset := newFlagSet("test", stderr)
	verbose := fset.Bool("v", false, "print passing cases too, and the policies' kumo.log_* and print output (on stderr)")
	evalTimeout := fset.Duration("eval-timeout", policy.DefaultEvalTimeout, "time budget of one evaluation, as in rewrited serve")
	luaPath := luaPathFlag(fset)
	fset.Usage = func() {
		fmt.Fprint(stderr, testUsage)
		fset.PrintDefaults()
	}
	if code := parseFlags(fset, args); code >= 0 {
		return code
	}
	if fset.NArg() == 0 {
		fmt.Fprintln(stderr, "rewrited test: no test file or directory given")
		return 2
	}
	files, err := testFiles(fset.Args())
	if err != nil {
		fmt.Fprintf(stderr, "rewrited test: %v\n", err)
		return 2
	}
	opts := policy.Options{EvalTimeout: *evalTimeout, PoolSize: 1, LuaPath: *luaPath}
	if *verbose {
		opts.Logger = policyLogger(stderr)
	}
	exit := 0
	var passed, failed int
	for _, path := range files {
		f, err := policytest.Load(path)
		if err != nil {
			fmt.Fprintf(stderr, "rewrited test: %v\n", err)
			exit = 2
			continue
		}
		for _, r := range f.Run(context.Background(), opts) {
			where := fmt.Sprintf("%s:%d: %s: ", r.File, r.Case.Line, r.Case.Name)
			for _, failure := range r.Failures {
				fmt.Fprintln(stdout, where+failure)
			}
			for _, w := range r.Warnings {
				fmt.Fprintln(stdout, where+"warning: "+w)
			}
			if r.Passed() {
				passed++
				if *verbose {
					fmt.Fprintln(stdout, where+"ok")
				}
			} else {
				failed++
			}
		}
	}
	fmt.Fprintf(stdout, "%d passed, %d failed\n", passed, failed)
	if exit == 0 && failed > 0 {
		exit = 1
	}
	return exit
}

// testFiles expands the arguments: a file is taken as given, a directory
// yields its *_test.yaml files, recursively, in lexical order.
func testFiles(paths []string) ([]string, error) {
	var files []string
	for _, path := range paths {
		info, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		if !info.IsDir() {
			files = append(files, path)
			continue
		}
		var found []string
		err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && strings.HasSuffix(d.Name(), testFileSuffix) {
				found = append(found, p)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if len(found) == 0 {
			return nil, fmt.Errorf("%s: no *%s files", path, testFileSuffix)
		}
		sort.Strings(found)
		files = append(files, found...)
	}
	return files, nil
}
