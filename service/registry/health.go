package registry

import (
	"io/fs"
	"maps"
	"slices"
	"time"
)

// Refusal is a policy whose file the last reload refused.
type Refusal struct {
	Policy string
	File   string
	Err    error
	// Serving says whether a previous version of the policy is served.
	Serving bool
}

// Ready reports whether every policy file found is served and at least one
// policy is: true once every file loaded, even if a later change to one of
// them was refused while its previous version keeps serving.
func (r *Registry) Ready() bool {
	if len(*r.cur.Load()) == 0 {
		return false
	}
	for _, f := range *r.refused.Load() {
		if !f.Serving {
			return false
		}
	}
	return true
}

// Refused returns the policies whose file the last reload refused, sorted
// by name.
func (r *Registry) Refused() []Refusal {
	m := *r.refused.Load()
	out := make([]Refusal, 0, len(m))
	for _, name := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[name])
	}
	return out
}

// RefusedPolicies implements metrics.LoadState.
func (r *Registry) RefusedPolicies() map[string]bool {
	out := map[string]bool{}
	for name, f := range *r.refused.Load() {
		out[name] = f.Serving
	}
	return out
}

// settle publishes the refusals, logs a change of readiness and tells
// Config.OnReload; it is called with mu held after every change, and waits
// for the last compilation running, since readiness is told of a whole
// reload.
func (r *Registry) settle() {
	if len(r.pending) > 0 {
		return
	}
	wasReady := r.Ready()
	refused := maps.Clone(r.refusals)
	r.refused.Store(&refused)
	ready := r.Ready()
	switch {
	case !ready:
		var missing []string
		for _, f := range r.Refused() {
			if !f.Serving {
				missing = append(missing, f.Policy)
			}
		}
		if len(*r.cur.Load()) == 0 && len(missing) == 0 {
			r.cfg.Logger.Error("no policy file (NAME.lua) found: not ready until one loads", "dir", r.cfg.Dir)
		} else {
			r.cfg.Logger.Error("not ready until every policy loads: fix the files, they are watched", "not_loaded", missing, "served", r.Names())
		}
	case !wasReady:
		r.cfg.Logger.Info("every policy loaded: ready", "served", r.Names())
	}
	if r.cfg.OnReload != nil {
		r.cfg.OnReload()
	}
}

// skip warns once about a file whose name cannot be served, and again only
// when the file changes; seen collects the files skipped by this scan.
func (r *Registry) skip(e fs.DirEntry, file string, seen map[string]time.Time) {
	var mod time.Time
	if fi, err := e.Info(); err == nil {
		mod = fi.ModTime()
	}
	seen[file] = mod
	if last, ok := r.skipped[file]; ok && last.Equal(mod) {
		return
	}
	r.cfg.Logger.Warn("policy file skipped: its name cannot be asked for (letters, digits, '_', '-', '.')", "file", file)
}
