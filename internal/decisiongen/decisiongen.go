// Package decisiongen writes generated decision records, the input of
// replay tests and benchmarks.
package decisiongen

import (
	"bufio"
	"fmt"
	"io"
)

// Candidate is a policy that changes the 550 records Write generates,
// reading conn_meta, and keeps the others.
const Candidate = `kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  if status == 550 then return 550, response .. ' (see ' .. (conn_meta:get_meta('help') or 'nothing') .. ')' end
end)
`

// Write writes n decision records of policy "default", a quarter each of:
// RCPT 550 with a 2-key conn_meta (which Candidate changes), DATA 250 and
// MAIL 250 with a 1-key conn_meta, and a 220 banner whose conn_meta was
// recorded as keys only (which a replay skips).
func Write(w io.Writer, n int) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	const head = `{"schema":1,"time":"2026-01-01T00:00:00Z","policy":"default","version":"v1",`
	for i := range n {
		switch i % 4 {
		case 0:
			fmt.Fprintf(bw, head+`"status":550,"response":"5.1.1 user %d unknown","command":"RCPT TO:<u%d@example.com>","conn_meta":{"help":"https://example.com/%d","received_from":"192.0.2.7:5210"},"outcome":"unchanged","reply":{"status":550,"response":"5.1.1 user %d unknown"},"elapsed_us":12.5}`+"\n", i, i, i, i)
		case 1:
			fmt.Fprintf(bw, head+`"status":250,"response":"OK id=%d","command":"DATA","conn_meta":{"received_from":"192.0.2.7:5210"},"outcome":"unchanged","reply":{"status":250,"response":"OK id=%d"},"elapsed_us":8}`+"\n", i, i)
		case 2:
			fmt.Fprintf(bw, head+`"status":250,"response":"2.1.0 sender ok","command":"MAIL FROM:<s%d@example.com>","conn_meta":{"received_from":"192.0.2.7:5210"},"outcome":"unchanged","reply":{"status":250,"response":"2.1.0 sender ok"},"elapsed_us":7}`+"\n", i)
		default:
			fmt.Fprint(bw, head+`"status":220,"response":"mx.example.com ready","conn_meta_keys":["received_from"],"outcome":"unchanged","reply":{"status":220,"response":"mx.example.com ready"},"elapsed_us":5}`+"\n")
		}
	}
	return bw.Flush()
}
