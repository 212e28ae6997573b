package client

import (
	"errors"

	"github.com/rewrited/rewrited/smtpreply"
)

// Reply is one SMTP reply a frontend is about to write.
type Reply struct {
	Status  int    // SMTP status code, e.g. 250
	Text    string // reply text without the code; lines separated by "\n"
	Command string // the command being answered, as the client sent it; "" means none (Lua nil); invalid UTF-8 reaches the policy as U+FFFD
}

// Wire returns the reply as written on the wire, e.g.
// "250-super fantastic!\r\n250 OK\r\n".
func (r Reply) Wire() string { return smtpreply.Wire(r.Status, r.Text) }

// Result is the outcome of one Rewrite call.
type Result struct {
	Reply                          // the reply to send: rewritten, or the original on any failure
	Rewritten       bool           // Reply differs from the original
	CloseConnection bool           // the final status is 421: close after writing
	MetaUpdates     map[string]any // conn_meta:set_meta calls to keep for the connection
	PolicyVersion   string         // digest of the policy that decided, when one did
	Replica         string         // address of the replica that answered, when one did
	Hedged          bool           // a second request went to another replica (see WithHedgeBudget)
	Err             error          // non-nil when the original was kept because the call failed
}

// Errors wrapped by Result.Err; test with errors.Is. For ErrRPC and
// ErrTimeout the gRPC status is wrapped too, so status.Code(res.Err) works.
var (
	// ErrBreakerOpen: the circuit breaker is open (or its single half-open
	// probe is in flight) and the call was not sent.
	ErrBreakerOpen = errors.New("client: circuit breaker open")
	// ErrInvalidRequest: the reply or the conn_meta given to Rewrite cannot
	// be sent (invalid status, a bare CR or other control character in the
	// text, a meta value with no protobuf form).
	ErrInvalidRequest = errors.New("client: invalid rewrite request")
	// ErrInvalidAnswer: rewrited answered with a status or text that is not
	// a valid SMTP reply.
	ErrInvalidAnswer = errors.New("client: invalid rewrite answer")
	// ErrTimeout: the per-call budget ran out.
	ErrTimeout = errors.New("client: rewrite budget exceeded")
	// ErrRPC: any other gRPC failure (unavailable, unknown policy, ...).
	ErrRPC = errors.New("client: rewrite call failed")
	// ErrPolicy: the policy failed (Lua error, policy timeout, invalid
	// return values) and rewrited kept the original reply.
	ErrPolicy = errors.New("client: policy failed")
	// ErrCallerDone: the caller cancelled its context (or passed one already
	// done); not counted by the breaker. A caller deadline that expires
	// during the call is reported as ErrTimeout.
	ErrCallerDone = errors.New("client: caller context done")
	// ErrClosed: the Client is closed (or nil).
	ErrClosed = errors.New("client: closed")
	// ErrPanic: a panic inside Rewrite (an observer's included) was recovered.
	ErrPanic = errors.New("client: recovered panic")
)

// keep is the Result for sending the original reply unchanged.
func keep(r Reply, err error) Result {
	return Result{Reply: r, CloseConnection: r.Status == 421, Err: err}
}
