package rewrite

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	wirev1 "github.com/rewrited/rewrited/proto/rewrite/wire/v1"
	"github.com/rewrited/rewrited/service/policy"
	"github.com/rewrited/rewrited/smtpreply"
)

// Default request limits. A reply of 128 KiB is far beyond any real SMTP
// reply; an AUTH line may reach 12 KiB (RFC 4954), hence the command limit.
// conn_meta is bounded by the request size cap alone: counting its keys
// would cost every request a walk over metadata the policy may never read.
const (
	DefaultMaxResponseBytes = 128 << 10
	DefaultMaxCommandBytes  = 16 << 10
)

// Limits bound the fields of a request.
type Limits struct {
	MaxResponseBytes int
	MaxCommandBytes  int
}

func (l Limits) withDefaults() Limits {
	if l.MaxResponseBytes <= 0 {
		l.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if l.MaxCommandBytes <= 0 {
		l.MaxCommandBytes = DefaultMaxCommandBytes
	}
	return l
}

// input checks a request and converts it for the engine. Every error is
// InvalidArgument and names the field.
func (l Limits) input(req *wirev1.LazyRewriteRequest) (policy.Input, error) {
	code := int(req.GetStatus())
	if err := smtpreply.CheckStatus(code); err != nil {
		return policy.Input{}, status.Errorf(codes.InvalidArgument, "status: %v", err)
	}
	text := req.GetResponse()
	if len(text) > l.MaxResponseBytes {
		return policy.Input{}, status.Errorf(codes.InvalidArgument, "response: %d bytes, the limit is %d", len(text), l.MaxResponseBytes)
	}
	if text != "" {
		clean, err := smtpreply.Sanitize(text)
		if err != nil {
			return policy.Input{}, status.Errorf(codes.InvalidArgument, "response: %v", err)
		}
		text = clean
	}
	if len(req.GetCommand()) > l.MaxCommandBytes {
		return policy.Input{}, status.Errorf(codes.InvalidArgument, "command: %d bytes, the limit is %d", len(req.GetCommand()), l.MaxCommandBytes)
	}
	if name := req.GetPolicy(); name != "" && !policy.ValidName(name) {
		return policy.Input{}, status.Errorf(codes.InvalidArgument, "policy: %q is not a policy name (letters, digits, '_', '-', '.'; at most %d bytes)", policy.BoundText(name, policy.MaxEchoBytes), policy.MaxNameBytes)
	}
	return policy.Input{Status: code, Response: text, Command: req.Command, Meta: req.GetConnMeta()}, nil
}
