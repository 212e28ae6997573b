package main

import (
	"sync"

	"github.com/rewrited/rewrited/service/registry"
	"github.com/rewrited/rewrited/service/server"
)

// readiness keeps the gRPC health status in step with the registry: SERVING
// while every policy file is loaded, NOT_SERVING while one is not.
type readiness struct {
	mu  sync.Mutex
	reg *registry.Registry
	srv *server.Server
}

// attach starts reporting once the server exists.
func (r *readiness) attach(reg *registry.Registry, srv *server.Server) {
	r.mu.Lock()
	r.reg, r.srv = reg, srv
	r.mu.Unlock()
	r.update()
}

// update sets the health status from the registry; it matches
// registry.Config.OnReload. Reading the state under the lock makes the
// last update win with the latest state.
func (r *readiness) update() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv != nil {
		r.srv.SetServing(r.reg.Ready())
	}
}
