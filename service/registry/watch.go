package registry

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/rewrited/rewrited/internal/watch"
)

// DefaultDebounce is how long Watch waits after the last change before
// reloading: editors and Kubernetes change several files in a burst.
const DefaultDebounce = 150 * time.Millisecond

// Watch reloads the policies whenever something changes in the watched
// directory, until ctx ends. It watches the directory rather than the files:
// editors replace a file by renaming another over it, and Kubernetes updates
// a mounted ConfigMap by swapping the ..data symlink the files point
// through, and a watch on the file itself misses both. Every burst of
// events brings one Reload, debounce after the last event; the reload skips
// unchanged files, so unrelated events cost one directory scan.
//
// The folders of the modules the policies require are watched too.
//
// Watch returns once the watch is in place, after a reload that catches
// changes made since Open. It does nothing for a policy compiled from Src.
func (r *Registry) Watch(ctx context.Context, debounce time.Duration) error {
	if r.cfg.Dir == "" && r.cfg.Src != nil {
		return nil
	}
	dir := r.cfg.Dir
	if dir == "" {
		dir = filepath.Dir(r.cfg.File)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching %s: %w", dir, err)
	}
	if err := w.Add(dir); err != nil {
		w.Close()
		return fmt.Errorf("watching %s: %w", dir, err)
	}
	_ = r.Reload() // failures are logged and counted by Reload
	watched := map[string]bool{filepath.Clean(dir): true}
	r.watchModules(w, watched)
	go r.watch(ctx, w, dir, watched, debounce)
	return nil
}

// watchModules adds the folders of the modules the served policies loaded,
// so that editing a module reloads the policies that use it.
func (r *Registry) watchModules(w *fsnotify.Watcher, watched map[string]bool) {
	for _, p := range r.Policies() {
		for _, file := range p.Modules() {
			dir := filepath.Clean(filepath.Dir(file))
			if watched[dir] {
				continue
			}
			if err := w.Add(dir); err != nil {
				r.cfg.Logger.Warn("module folder not watched: SIGHUP reloads its changes", "dir", dir, "error", err.Error())
			}
			watched[dir] = true
		}
	}
}

func (r *Registry) watch(ctx context.Context, w *fsnotify.Watcher, dir string, watched map[string]bool, debounce time.Duration) {
	watch.Loop(ctx, w, debounce,
		func(ev fsnotify.Event) bool {
			if ev.Has(fsnotify.Remove) && filepath.Clean(ev.Name) == filepath.Clean(dir) {
				r.cfg.Logger.Error("policy directory removed: files are no longer watched; SIGHUP still reloads", "dir", dir)
			}
			return true
		},
		func(err error) { r.cfg.Logger.Warn("watching the policy directory", "dir", dir, "error", err.Error()) },
		func() {
			_ = r.Reload()
			r.watchModules(w, watched)
		})
}
