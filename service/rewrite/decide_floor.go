//go:build benchfloor

package rewrite

import (
	"context"
	"sync/atomic"

	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
	wirev1 "github.com/rewrited/rewrited/proto/rewrite/wire/v1"
)

// floorPrefix is what the bundled policy puts before the reply, so that the
// floor's answer has the size of the shipped server's.
const floorPrefix = "super fantastic!\n"

// floorVersion is the default policy's version, looked up once: the floor
// finds no policy per call.
var floorVersion atomic.Pointer[string]

// decide answers every request with the rewrite the bundled policy makes of
// it, without checking the request, finding its policy or evaluating
// anything: the server decodes the request and encodes an answer of the same
// size, and nothing else. It is the floor of any RewriteResponse server.
func (s *Service) decide(_ context.Context, req *wirev1.LazyRewriteRequest) (*rewritev1.RewriteResponseResponse, error) {
	version := floorVersion.Load()
	if version == nil {
		if p, ok := s.resolver.Policy(DefaultPolicy); ok {
			v := p.Version()
			version = &v
			floorVersion.Store(version)
		} else {
			version = new(string)
		}
	}
	return &rewritev1.RewriteResponseResponse{
		Status:        req.GetStatus(),
		Response:      floorPrefix + req.GetResponse(),
		Rewritten:     true,
		PolicyVersion: *version,
		Outcome:       rewritev1.Outcome_OUTCOME_REWRITTEN,
	}, nil
}
