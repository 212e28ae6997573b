// Command loadgen drives rewrited from a process of its own, as a fleet of
// SMTP frontends would: -clients Clients (one connection each), -workers
// goroutines per Client calling Rewrite back to back (or -pause apart) for
// -duration. It prints
// the load.Summary of every call as JSON.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/rewrited/rewrited/client"
	"github.com/rewrited/rewrited/test/reliability/load"
)

func main() {
	target := flag.String("target", "127.0.0.1:7070", "rewrited address, or a comma-separated list")
	duration := flag.Duration("duration", 5*time.Second, "how long to drive the load")
	clients := flag.Int("clients", 4, "Clients, each with its own connection")
	workers := flag.Int("workers", 32, "goroutines calling Rewrite back to back, per Client")
	timeout := flag.Duration("timeout", 100*time.Millisecond, "the per-call budget (client.WithTimeout)")
	breaker := flag.Int("breaker", client.DefaultBreakerThreshold, "consecutive failures that open a Client's breaker (0: no breaker)")
	slack := flag.Duration("slack", 50*time.Millisecond, "scheduling slack over the budget before a call counts as over budget")
	pause := flag.Duration("pause", 0, "pause between a worker's calls")
	flag.Parse()
	if err := run(*target, *duration, *clients, *workers, *timeout, *breaker, *slack, *pause); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run(target string, duration time.Duration, clients, workers int, timeout time.Duration, breaker int, slack, pause time.Duration) error {
	rec := load.NewRecorder()
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	var wg sync.WaitGroup
	for range clients {
		c, err := client.New(target, client.WithTimeout(timeout), client.WithBreaker(breaker, 100*time.Millisecond))
		if err != nil {
			return err
		}
		defer c.Close()
		wg.Go(func() { rec.Drive(ctx, c, workers, pause) })
	}
	wg.Wait()
	sum := load.Summarize(rec.Events(), 0, rec.Since()+time.Second, timeout+slack)
	return json.NewEncoder(os.Stdout).Encode(sum)
}
