//go:build rewritedprofile

// This file is not part of the load generator: `go run ./bench -mode
// profile` builds it into cmd/rewrited through -overlay, so the profile is
// taken from the real `rewrited serve` binary. SIGUSR1 starts a CPU profile,
// SIGUSR2 writes it to $REWRITED_BENCH_CPUPROFILE.

package main

import (
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
				// Renamed only once complete: the generator waits for path.
				if err := os.Rename(tmp, path); err != nil {
					fmt.Fprintln(os.Stderr, "cpu profile:", err)
				}
			}
		}
	}()
}
