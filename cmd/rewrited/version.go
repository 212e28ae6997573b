package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/rewrited/rewrited/service/metrics"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func runVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("version", stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: rewrited version\n\nPrints the version, the VCS revision and the Go version rewrited was built with.\n")
	}
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "rewrited version: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	fmt.Fprintf(stdout, "rewrited %s (revision %s, %s)\n", buildVersion(), buildRevision(), runtime.Version())
	return 0
}

// buildVersion is the version set by -ldflags, else the module version of
// a `go install`ed binary, else "devel".
func buildVersion() string {
	if version != "" {
		return version
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return "devel"
}

// buildRevision is the VCS revision the Go toolchain stamped into the
// binary, with "-dirty" for uncommitted changes, or "unknown".
func buildRevision() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	var revision, dirty string
	for _, s := range info.Settings {
		switch {
		case s.Key == "vcs.revision":
			revision = s.Value
		case s.Key == "vcs.modified" && s.Value == "true":
			dirty = "-dirty"
		}
	}
	if revision == "" {
		return "unknown"
	}
	return revision + dirty
}

// registerBuildInfo exports rewrited_build_info.
func registerBuildInfo(m *metrics.Metrics) {
	m.SetBuildInfo(buildVersion(), buildRevision(), runtime.Version())
}
