package policy

import (
	"context"
	"testing"
	"time"
)

// TestWatchdogSleepsAndStillStops: with no evaluation running the watchdog
// sleeps, and a runaway evaluation armed while it sleeps is still stopped
// at its budget, by the alarm; then it sleeps again.
func TestWatchdogSleepsAndStillStops(t *testing.T) {
	src := `kumo.on('smtp_server_rewrite_response', function(status, response, command)
  if command == 'loop' then while true do end end
end)`
	p, _, err := Compile("loop.lua", []byte(src), Options{EvalTimeout: 50 * time.Millisecond, PoolSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, command := range []string{"quick", "loop", "quick"} {
		waitAsleep(t)
		d := p.Evaluate(context.Background(), Input{Status: 250, Response: "ok", Command: &command})
		want := OutcomeUnchanged
		if command == "loop" {
			want = OutcomeTimeout
		}
		if d.Outcome != want {
			t.Errorf("%s evaluated while the watchdog slept: outcome %v (%v), want %v", command, d.Outcome, d.Err, want)
		}
	}
	waitAsleep(t)
}

func waitAsleep(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for watchdog.now.Load() != asleep {
		if time.Now().After(deadline) {
			t.Fatal("the watchdog still ticks with no evaluation running")
		}
		time.Sleep(time.Millisecond)
	}
}
