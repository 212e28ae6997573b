package policy

import (
	"fmt"
	"runtime"
	"runtime/metrics"
)

// DefaultMaxStateBytes caps the memory of one Lua state once the policy's
// top level has run: every warm state of the pool holds as much, so a
// policy that builds large globals at load multiplies them by the pool.
const DefaultMaxStateBytes = 32 << 20

// liveHeap is the sample of the Go heap's live bytes, as of the last GC.
const liveHeap = "/gc/heap/live:bytes"

// newMeasuredState builds the policy's first state and refuses the policy
// when the state grew the live Go heap by more than opts.MaxStateBytes.
// gopher-lua allocates from the Go heap and has no allocator hook; the live
// heap around one state's construction, between two collections, measures
// it, give or take what other goroutines allocated meanwhile. Only the first
// state is measured: the others run the same top level.
func (p *Policy) newMeasuredState() (*state, []Warning, error) {
	limit := p.opts.MaxStateBytes
	if limit <= 0 {
		limit = DefaultMaxStateBytes
	}
	sample := []metrics.Sample{{Name: liveHeap}}
	runtime.GC()
	metrics.Read(sample)
	before := sample[0].Value.Uint64()
	s, warnings, err := p.newState(true)
	if err != nil {
		return nil, nil, err
	}
	runtime.GC()
	metrics.Read(sample)
	grown := int64(sample[0].Value.Uint64()) - int64(before)
	if grown > int64(limit) {
		s.close()
		return nil, nil, &LoadError{File: p.file, Message: fmt.Sprintf(
			"a Lua state holds about %.1f MiB once the policy's top level has run, over the limit of %.1f MiB (--max-state-bytes), and every warm state holds as much: build large tables lazily or keep them smaller",
			float64(grown)/(1<<20), float64(limit)/(1<<20))}
	}
	return s, warnings, nil
}
