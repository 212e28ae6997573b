package main

import (
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/rewrited/rewrited/internal/rewritedtest"
)

// TestMetricsShowHedgesAndEjections pauses one of two replicas behind the
// frontend: its calls are hedged and it is ejected, then returns once it is
// resumed, and the frontend's metrics count all of it.
func TestMetricsShowHedgesAndEjections(t *testing.T) {
	procs := []*rewritedtest.Proc{rewritedtest.Start(t), rewritedtest.Start(t)}
	m := newFrontendMetrics(prometheus.NewRegistry())
	addr := startFrontend(t, procs[0].Addr+","+procs[1].Addr, m.options()...)
	c := dialSMTP(t, addr, "EHLO")
	sendUntil := func(what string, done func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !done() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 20s", what)
			}
			if r := c.send("alice@client.test", "bob@mx.test"); r.code != 250 {
				t.Fatalf("DATA reply %+v, want 250", r)
			}
		}
	}
	sendUntil("both replicas answering", func() bool { return count(t, m.calls.WithLabelValues("rewritten")) >= 10 })

	if err := procs[1].Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	ejected := m.fleet.WithLabelValues("ejected", procs[1].Addr)
	sendUntil("the paused replica ejected", func() bool { return count(t, ejected) >= 1 })
	if n := count(t, m.hedged); n == 0 {
		t.Error("no hedge counted while a replica was paused")
	}
	if err := procs[1].Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	returned := m.fleet.WithLabelValues("returned", procs[1].Addr)
	sendUntil("the resumed replica returned", func() bool { return count(t, returned) >= 1 })
	if n := count(t, m.fleet.WithLabelValues("ejected", procs[0].Addr)); n != 0 {
		t.Errorf("the replica that kept answering was ejected %v times", n)
	}
}

// count reads a counter's value.
func count(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}
