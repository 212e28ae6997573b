//go:build rewritedprofile

// This file is not part of the load generator: `go run ./bench -mode
// profile` builds it into cmd/rewrited through -overlay, so the profile is
// taken from the real `rewrited serve` binary. SIGUSR1 starts a CPU profile,
// SIGUSR2 writes it to $REWRITED_BENCH_CPUPROFILE. Each signal also writes
// the allocation profile, to PATH.allocs-start and PATH.allocs-end, so that
// their difference is the allocations of the profiled run.

package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
)

func init() {
	path := os.Getenv("REWRITED_BENCH_CPUPROFILE")
	if path == "" {
		return
	}
	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		tmp := path + ".tmp"
		var f *os.File
		for sig := range sigc {
			switch sig {
			case syscall.SIGUSR1:
				writeAllocs(path + ".allocs-start")
				var err error
				if f, err = os.Create(tmp); err == nil {
					err = pprof.StartCPUProfile(f)
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, "cpu profile:", err)
				}
			case syscall.SIGUSR2:
				pprof.StopCPUProfile()
				if f != nil {
					f.Close()
				}
				writeAllocs(path + ".allocs-end")
				// Renamed only once complete: the generator waits for path.
				if err := os.Rename(tmp, path); err != nil {
					fmt.Fprintln(os.Stderr, "cpu profile:", err)
				}
			}
		}
	}()
}

func writeAllocs(path string) {
	f, err := os.Create(path)
	if err == nil {
		err = errors.Join(pprof.Lookup("allocs").WriteTo(f, 0), f.Close())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "allocation profile:", err)
	}
}
