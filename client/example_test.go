package client_test

import (
	"context"
	"fmt"
	"time"

	"github.com/rewrited/rewrited/client"
)

// A frontend passes its DATA reply through rewrited and writes whatever
// comes back; with no rewrited reachable that is the original reply.
func Example() {
	rw, err := client.New("127.0.0.1:1", // nothing listens here
		client.WithTimeout(100*time.Millisecond),
		client.WithBreaker(5, time.Second),
	)
	if err != nil {
		panic(err) // only invalid options fail
	}
	defer rw.Close()

	// One per SMTP connection.
	meta := client.NewConnMeta(map[string]any{
		"received_from":      "192.0.2.7:50123",
		"received_via":       "192.0.2.1:25",
		"hostname":           "mx.example.com",
		"reception_protocol": "ESMTP",
	})
	res := rw.RewriteConn(context.Background(), client.Reply{Status: 250, Text: "OK ids=8f2c", Command: "DATA"}, meta)
	fmt.Printf("%q rewritten=%v fallback=%v close=%v\n", res.Wire(), res.Rewritten, res.Err != nil, res.CloseConnection)
	// Output: "250 OK ids=8f2c\r\n" rewritten=false fallback=true close=false
}

// The wire form follows KumoMTA: "NNN-" on every line but the last.
func ExampleReply_Wire() {
	fmt.Printf("%q\n", client.Reply{Status: 250, Text: "super fantastic!\nOK ids=8f2c"}.Wire())
	// Output: "250-super fantastic!\r\n250 OK ids=8f2c\r\n"
}
