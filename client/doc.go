// Package client is the Go client SMTP frontends embed to have rewrited rewrite their replies within a fixed budget, keeping the original reply on any failure.
//
// # Usage
//
// Create one Client per process; New does no I/O:
//
//	rw, err := client.New("dns:///rewrited.internal:7070",
//		client.WithTimeout(100*time.Millisecond),
//		client.WithPolicy("inbound"),
//	)
//	if err != nil { ... } // only for invalid options
//	defer rw.Close()
//
// Keep one ConnMeta per SMTP connection and pass every reply through the
// client just before writing it:
//
//	meta := client.NewConnMeta(map[string]any{
//		"received_from": conn.RemoteAddr().String(),
//		"received_via":  conn.LocalAddr().String(),
//		"hostname":      "mx.example.com",
//	})
//	res := rw.RewriteConn(ctx, client.Reply{Status: 250, Text: "OK ids=" + id, Command: "DATA"}, meta)
//	io.WriteString(conn, res.Wire())
//	if res.CloseConnection {
//		conn.Close()
//	}
//
// RewriteConn is Rewrite(ctx, reply, meta.Map()) followed by
// meta.Merge(res.MetaUpdates), so values a policy stores with
// conn_meta:set_meta are visible to later calls on the same connection.
//
// # Failure handling
//
// Rewrite always returns a reply to send. On a timeout, a refused or hung
// connection, an unknown policy, any other gRPC error, or an answer that is
// not a valid SMTP reply (status outside 2xx-5xx or second digit above 5;
// text that is empty, holds a bare CR, NUL or another control character, or
// has a line over the RFC 5321 limit) it returns the original reply with
// Result.Err set; test the cause with errors.Is against ErrTimeout, ErrRPC,
// ErrInvalidAnswer, ErrBreakerOpen and the other Err variables, or
// status.Code(res.Err) for the gRPC code. A request that is itself invalid
// (a bad status, text that is not empty and fails the same checks, a meta
// value with no protobuf form) is not sent.
//
// The budget (WithTimeout, default 100ms) covers the whole call, connection
// setup included; a caller context with an earlier deadline, or cancelled,
// shortens it. Calls never wait for a connection to become ready beyond it
// (no WaitForReady), and a circuit breaker (WithBreaker) stops calling a
// fleet that keeps failing: while open, Rewrite returns the original at once,
// without network I/O or allocation, until a probe call succeeds.
//
// # Fleets
//
// The target is any gRPC target. With "dns:///rewrited.internal:7070" every
// A/AAAA record is a replica and calls go to the ready replicas in turn (the
// client's own load-balancing policy: grpc-go's round_robin, whose picker
// also steers hedges and skips ejected replicas). A replica that goes away
// costs at most the calls in flight on it. gRPC re-resolves the name on any
// connection loss (at most every 30s), and rewrited closes connections after
// a maximum age of 5 minutes, so new replicas are picked up within minutes
// without a frontend restart. A comma-separated list
// ("10.0.0.1:7070,10.0.0.2:7070") is served by a static resolver, for tests
// and small fixed fleets.
//
// # Hedging
//
// A replica can stall without closing its connection (a long GC pause, a
// frozen VM, a half-dead host). A call that has no answer after the hedge
// delay sends the same request to another replica; the first answer wins
// and the other request is cancelled. A call whose replica fails it with
// Unavailable before that is sent to another replica at once. The delay
// adapts: it is the 98th percentile of the latency of recent answers (each
// window closes after a second with at least 50 answers), at least 5ms
// (DefaultHedgeFloor) and at most half the budget; WithHedgeDelay fixes it
// instead. Hedges are bounded by a budget in the manner of gRPC's retry
// throttling: every call earns a tenth of a token (WithHedgeBudget,
// DefaultHedgeBudget), every hedge spends one, the bucket holds 20; so a
// slowdown of the whole fleet adds at most a tenth to its load, after a
// burst of 20. Result.Hedged tells which calls sent a second request and
// Result.Replica which replica answered.
//
// # Outlier ejection
//
// A replica whose calls fail 5 times in a row (DefaultEjectAfter: timeouts,
// Unavailable, or calls outrun by a hedge; not load shedding nor the
// caller's cancellations), over at least half the budget (a busy host
// that stalls a replica for a few milliseconds makes all its calls in
// flight lose to hedges at once), is ejected: it gets no calls for a second
// (DefaultEjectFor); then one call probes it. An answered probe returns it
// to the rotation; a failed one ejects it again for twice as long, up to
// 4 times DefaultEjectFor. At most half of the ready replicas
// (DefaultEjectMaxShare, and always one of two or more) are ejected at
// once; a lone replica never is. With hedging the calls that find the
// stalled replica before its ejection, and its probes, are answered by
// another replica. WithEjection changes the settings; WithFleetObserver
// reports ejections and returns.
//
// Connections send keepalive pings after 10s without activity while calls are
// in flight (2s ack timeout, none when idle), compatible with rewrited's
// enforcement policy (minimum ping interval 5s): a replica that stops
// answering without closing its connections (paused, partitioned) is
// dropped within about 12s, long after ejection has stopped sending it
// calls. WithDialOptions can override this and any other dial setting;
// a load-balancing policy set there replaces the client's, and with it
// ejection and the choice of another replica for a hedge.
//
// The breaker opens when the fleet as a whole fails: 5 failures in a row
// (WithBreaker) and nine in ten calls of the last second. One replica dying
// out of several fails only its calls in flight, and the others' successes
// keep the breaker closed.
//
// # Security
//
// The default is plaintext. WithTLS enables TLS (and mutual TLS when the
// config carries a client certificate). WithBearerToken adds
// "authorization: Bearer <token>" to every call; New refuses it without
// WithTLS unless WithInsecureBearer is also given.
//
// The package imports neither Lua nor a metrics library: WithObserver
// reports every Result (with Hedged and Replica) and its duration, and
// WithFleetObserver every ejection and return, to the frontend's own
// metrics.
package client
