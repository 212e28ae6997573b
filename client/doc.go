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
// A/AAAA record is a replica and calls are spread with round_robin, which
// only picks replicas with a ready connection: a replica that goes away costs
// at most the calls in flight on it. gRPC re-resolves the name on any
// connection loss (at most every 30s), and rewrited closes connections after
// a maximum age of 5 minutes, so new replicas are picked up within minutes
// without a frontend restart. A comma-separated list
// ("10.0.0.1:7070,10.0.0.2:7070") is served by a static resolver, for tests
// and small fixed fleets.
//
// Connections send keepalive pings after 10s without activity while calls are
// in flight (2s ack timeout, none when idle), compatible with rewrited's
// enforcement policy (minimum ping interval 5s): a replica that stops
// answering without closing its connections (paused, partitioned) is dropped
// within about 12s, its calls timing out until then. WithDialOptions can
// override this and any other dial setting.
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
// reports every Result and its duration to the frontend's own metrics.
package client
