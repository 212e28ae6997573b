// Package watch runs the debounced loop over an fsnotify watcher that the
// policy registry and the TLS files share: a burst of file events brings
// one action, debounce after the last relevant event.
package watch

import (
	"context"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Loop reads w until ctx ends or w closes, then closes w. relevant says
// whether an event counts (and may report it); failed is told of the
// watcher's errors; fire runs debounce after the last relevant event.
func Loop(ctx context.Context, w *fsnotify.Watcher, debounce time.Duration, relevant func(fsnotify.Event) bool, failed func(error), fire func()) {
	defer w.Close()
	timer := time.NewTimer(debounce)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if relevant(ev) {
				timer.Reset(debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			failed(err)
		case <-timer.C:
			if ctx.Err() == nil {
				fire()
			}
		}
	}
}
