package client

import (
	"maps"
	"sync"
)

// ConnMeta is the conn_meta of one SMTP connection. A frontend keeps one per
// connection, passes Map() to Rewrite and merges Result.MetaUpdates back, so
// values a policy stores with conn_meta:set_meta persist for the rest of the
// connection, as in KumoMTA. It is safe for concurrent use; the zero value is
// an empty ConnMeta. Values are treated as immutable once stored.
type ConnMeta struct {
	mu sync.Mutex
	m  map[string]any
}

// NewConnMeta returns a ConnMeta holding a copy of initial.
func NewConnMeta(initial map[string]any) *ConnMeta {
	return &ConnMeta{m: maps.Clone(initial)}
}

// Set stores value under key; a nil value removes the key.
func (cm *ConnMeta) Set(key string, value any) {
	cm.mu.Lock()
	defer cm.mu.Unlock()
	cm.setLocked(key, value)
}

func (cm *ConnMeta) setLocked(key string, value any) {
	if value == nil {
		// get_meta returns nil for a missing key, so nil and absent are the same to a policy.
		delete(cm.m, key)
		return
	}
	if cm.m == nil {
		cm.m = make(map[string]any)
	}
	cm.m[key] = value
}

// Get returns the value stored under key.
func (cm *ConnMeta) Get(key string) (any, bool) {
	cm.mu.Lock()
	defer cm.mu.Unlock()
	v, ok := cm.m[key]
	return v, ok
}

// Map returns a snapshot of the metadata to pass to Rewrite; later changes
// to the ConnMeta do not affect it. It is nil when the ConnMeta is empty.
func (cm *ConnMeta) Map() map[string]any {
	cm.mu.Lock()
	defer cm.mu.Unlock()
	if len(cm.m) == 0 {
		return nil
	}
	return maps.Clone(cm.m)
}

// Merge applies updates, e.g. Result.MetaUpdates; nil values remove keys.
func (cm *ConnMeta) Merge(updates map[string]any) {
	if len(updates) == 0 {
		return
	}
	cm.mu.Lock()
	defer cm.mu.Unlock()
	for k, v := range updates {
		cm.setLocked(k, v)
	}
}
