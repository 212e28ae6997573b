package policy

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// watchdogTick is how often running evaluations are checked against their
// deadlines, and so how late past its budget a runaway policy may stop.
const watchdogTick = time.Millisecond

// asleep is the coarse clock's value while the watchdog sleeps: far in the
// future, so that arm knows to read the clock itself and set the alarm.
const asleep = math.MaxInt64 / 4

// deadline bounds one state's running evaluation. Arming and disarming it
// costs two atomic operations, where a time.Timer costs a clock read and a
// runtime lock each: on a sub-microsecond evaluation that difference shows.
type deadline struct {
	at     atomic.Int64 // clock time the evaluation must end by; 0 when idle, -1 once cancelled
	cancel context.CancelFunc
}

// arm starts the budget d and returns the token disarm needs.
func (dl *deadline) arm(d time.Duration) int64 {
	w := watchdog
	now := w.now.Load()
	if now == asleep {
		now = w.clock()
	}
	at := now + int64(d) + int64(watchdogTick)
	dl.at.Store(at)
	// The watchdog publishes asleep before its last look at the deadlines,
	// and this check follows the store: either it saw this deadline and
	// ticks, or the alarm wakes it by the deadline.
	if w.now.Load() == asleep {
		w.alarmBy(at)
	}
	return at
}

// disarm ends the budget and reports whether the evaluation finished within
// it; when it did not, the state's context has been cancelled.
func (dl *deadline) disarm(at int64) bool {
	return dl.at.CompareAndSwap(at, 0)
}

// watchdog is one goroutine for the process that cancels the contexts of
// states past their deadline. It runs while any state exists. While an
// evaluation runs it ticks, advancing the coarse clock arm reads; once a
// tick finds none running it sleeps, and an evaluation armed then sets an
// alarm for its deadline, so a server between calls is not woken a thousand
// times a second. Calls a few microseconds long almost never meet a tick:
// under load the watchdog wakes about once per budget.
var watchdog = &watchdogT{start: time.Now(), wakeup: make(chan struct{}, 1)}

type watchdogT struct {
	start  time.Time
	now    atomic.Int64  // nanoseconds since start, advanced every tick; asleep while asleep
	wakeup chan struct{} // the alarm's token

	alarmMu sync.Mutex
	alarmAt atomic.Int64 // the deadline the alarm is set for; 0 when not set
	alarm   *time.Timer

	mu     sync.Mutex
	states map[*deadline]struct{}
	stop   chan struct{}
	done   chan struct{}
}

// clock is the time since start, read now.
func (w *watchdogT) clock() int64 { return int64(time.Since(w.start)) }

// alarmBy makes sure the sleeping watchdog wakes by at.
func (w *watchdogT) alarmBy(at int64) {
	if a := w.alarmAt.Load(); a != 0 && a <= at {
		return // set already, for no later
	}
	w.alarmMu.Lock()
	defer w.alarmMu.Unlock()
	if a := w.alarmAt.Load(); a != 0 && a <= at {
		return
	}
	w.alarmAt.Store(at)
	d := time.Duration(at - w.clock())
	if w.alarm == nil {
		w.alarm = time.AfterFunc(d, func() {
			select {
			case w.wakeup <- struct{}{}:
			default: // a token is waiting already
			}
		})
		return
	}
	w.alarm.Reset(d)
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
		w.now.Store(w.clock())
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
		// The alarm is left set: its token, if it comes, is a spurious check
		// for the next goroutine, and clearing alarmAt here could undo an
		// alarm that goroutine needs.
		<-done
	}
}

func (w *watchdogT) run(stop, done chan struct{}) {
	defer close(done)
	ticker := time.NewTicker(watchdogTick)
	defer ticker.Stop()
	ticking := true
	for {
		select {
		case <-stop:
			return
		case <-ticker.C:
		case <-w.wakeup:
			// Cleared before the look at the deadlines: an evaluation that
			// found the alarm set is seen below, one armed later sets it again.
			w.alarmAt.Store(0)
		}
		now := w.clock()
		if ticking {
			w.now.Store(now)
		}
		if w.check(now) {
			if !ticking {
				w.now.Store(now)
				ticker.Reset(watchdogTick)
				ticking = true
			}
			continue
		}
		if !ticking {
			continue
		}
		// Nothing runs: sleep. Publish asleep before looking once more, so
		// an evaluation armed meanwhile is either seen or sets the alarm.
		w.now.Store(asleep)
		if now = w.clock(); w.check(now) {
			w.now.Store(now)
			continue
		}
		ticker.Stop()
		ticking = false
	}
}

// check cancels the evaluations past their deadline at now and reports
// whether any is still running.
func (w *watchdogT) check(now int64) (running bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for dl := range w.states {
		at := dl.at.Load()
		if at > 0 && at <= now && dl.at.CompareAndSwap(at, -1) {
			dl.cancel()
			continue
		}
		running = running || at > 0
	}
	return running
}
