package policy

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// watchdogTick is how often running evaluations are checked against their
// deadlines, and so how late past its budget a runaway policy may stop.
const watchdogTick = time.Millisecond

// deadline bounds one state's running evaluation. Arming and disarming it
// costs two atomic operations, where a time.Timer costs a clock read and a
// runtime lock each: on a sub-microsecond evaluation that difference shows.
type deadline struct {
	at     atomic.Int64 // coarse-clock time the evaluation must end by; 0 when idle
	cancel context.CancelFunc
}

// arm starts the budget d and returns the token disarm needs.
func (dl *deadline) arm(d time.Duration) int64 {
	at := watchdog.now.Load() + int64(d) + int64(watchdogTick)
	dl.at.Store(at)
	return at
}

// disarm ends the budget and reports whether the evaluation finished within
// it; when it did not, the state's context has been cancelled.
func (dl *deadline) disarm(at int64) bool {
	return dl.at.CompareAndSwap(at, 0)
}

// watchdog is one goroutine for the process that advances the coarse clock
// and cancels the contexts of states past their deadline. It runs while any
// state exists.
var watchdog = &watchdogT{start: time.Now()}

type watchdogT struct {
	start time.Time
	now   atomic.Int64 // nanoseconds since start, advanced every tick

	mu     sync.Mutex
	states map[*deadline]struct{}
	stop   chan struct{}
	done   chan struct{}
}

// add watches dl, starting the goroutine for the first one.
func (w *watchdogT) add(dl *deadline) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.states == nil {
		w.states = make(map[*deadline]struct{})
	}
	w.states[dl] = struct{}{}
	if w.stop == nil {
		w.now.Store(int64(time.Since(w.start)))
		w.stop, w.done = make(chan struct{}), make(chan struct{})
		go w.run(w.stop, w.done)
	}
}

// remove stops watching dl, and stops the goroutine after the last one.
func (w *watchdogT) remove(dl *deadline) {
	w.mu.Lock()
	delete(w.states, dl)
	var done chan struct{}
	if len(w.states) == 0 && w.stop != nil {
		close(w.stop)
		done = w.done
		w.stop, w.done = nil, nil
	}
	w.mu.Unlock()
	if done != nil {
		<-done
	}
}

func (w *watchdogT) run(stop, done chan struct{}) {
	defer close(done)
	ticker := time.NewTicker(watchdogTick)
	defer ticker.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ticker.C:
		}
		now := int64(time.Since(w.start))
		w.now.Store(now)
		w.mu.Lock()
		for dl := range w.states {
			if at := dl.at.Load(); at != 0 && at <= now && dl.at.CompareAndSwap(at, -1) {
				dl.cancel()
			}
		}
		w.mu.Unlock()
	}
}
