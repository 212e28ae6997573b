package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/rewrited/rewrited/internal/decisiongen"
)

// replayBench times `rewrited replay` over a generated file of cfg.records
// decision records, cfg.reps times, and reports wall time, CPU and memory.
func replayBench(cfg config, bin, tmp string, w io.Writer) error {
	records := filepath.Join(tmp, "decisions.jsonl")
	candidate := filepath.Join(tmp, "candidate.lua")
	f, err := os.Create(records)
	if err != nil {
		return err
	}
	err = errors.Join(decisiongen.Write(f, cfg.records), f.Close())
	if err != nil {
		return fmt.Errorf("generating the records: %w", err)
	}
	if err := os.WriteFile(candidate, []byte(decisiongen.Candidate), 0o644); err != nil {
		return err
	}
	fi, err := os.Stat(records)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "`rewrited replay --policy candidate.lua decisions.jsonl` over %d generated records (%.0f MB, `internal/decisiongen`), %d runs.\n\n", cfg.records, float64(fi.Size())/1e6, cfg.reps)
	fmt.Fprintln(w, "| run | wall | user CPU | system CPU | µs CPU per record | max RSS |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|")
	want := fmt.Sprintf("%d decision records: %d replayed, %d skipped\n", cfg.records, cfg.records-cfg.records/4, cfg.records/4)
	for i := 1; i <= cfg.reps; i++ {
		var out bytes.Buffer
		cmd := exec.Command(bin, "replay", "--policy", candidate, records)
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		err := cmd.Run()
		wall := time.Since(start)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(out.String(), want) {
			return fmt.Errorf("rewrited replay: %v, want exit 1 and %q:\n%s", err, want, out.String())
		}
		st := cmd.ProcessState
		cpu := st.UserTime() + st.SystemTime()
		rss := int64(0)
		if ru, ok := st.SysUsage().(*syscall.Rusage); ok {
			rss = ru.Maxrss // KiB on Linux
		}
		fmt.Fprintf(w, "| %d | %.1f s | %.1f s | %.1f s | %.1f | %d MiB |\n", i, wall.Seconds(), st.UserTime().Seconds(), st.SystemTime().Seconds(),
			float64(cpu.Microseconds())/float64(cfg.records), rss/1024)
		fmt.Fprintf(os.Stderr, "replay run %d: %v wall, %v CPU\n", i, wall.Round(time.Millisecond), cpu.Round(time.Millisecond))
	}
	fmt.Fprintf(w, "\nLoad average after: %s.\n", loadavg())
	return nil
}
