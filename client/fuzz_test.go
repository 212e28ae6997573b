package client

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
	"github.com/rewrited/rewrited/smtpreply"
)

// FuzzAnswerAnyReply: whatever rewrited answers (any status, any bytes of text, any
// outcome, any meta_updates), the Result holds a valid SMTP reply that is
// either the original, untouched, or a sanitised rewrite.
func FuzzAnswerAnyReply(f *testing.F) {
	updates, err := proto.Marshal(&structpb.Struct{Fields: map[string]*structpb.Value{"x_n": structpb.NewNumberValue(1)}})
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []struct {
		status      int
		text, cmd   string
		respStatus  uint32
		respText    string
		outcome     int32
		metaUpdates []byte
	}{
		{250, "OK ids=1", "DATA", 250, "super fantastic!\nOK ids=1", 2, nil},
		{250, "OK", "DATA", 250, "OK", 1, updates},
		{250, "OK\r\n", "", 250, "OK", 1, nil},
		{250, "OK", "", 999, "OK", 2, nil},
		{250, "OK", "", 0, "", 0, nil},
		{250, "OK", "", 421, "bye\r\n250 injected", 2, nil},
		{250, "OK", "", 250, "a\r250 injected", 2, nil},
		{250, "OK", "", 250, "\n\n", 2, nil},
		{250, "OK", "", 550, "no", 3, nil},
		{250, "OK", "", 550, "no", 99, nil},
		{421, "bye", "", 421, "bye", 1, nil},
		{250, "a\rb", "", 250, "x", 2, nil},
		{250, "OK", "", 1<<31 + 250, "OK", 2, nil},
		{250, "OK", "", 250, "\xff", 2, []byte{0x0a, 0xff}},
	} {
		f.Add(seed.status, seed.text, seed.cmd, seed.respStatus, seed.respText, seed.outcome, seed.metaUpdates)
	}
	f.Fuzz(func(t *testing.T, st int, text, cmd string, respStatus uint32, respText string, outcome int32, metaUpdates []byte) {
		r := Reply{Status: st, Text: text, Command: cmd}
		resp := &rewritev1.RewriteResponseResponse{Status: respStatus, Response: respText, Outcome: rewritev1.Outcome(outcome)}
		var mu structpb.Struct
		if proto.Unmarshal(metaUpdates, &mu) == nil {
			resp.MetaUpdates = &mu
		}
		res := answer(r, resp)
		if res.CloseConnection != (res.Status == 421) {
			t.Fatalf("answer(%+v, %v) = %+v: close_connection with status %d", r, resp, res, res.Status)
		}
		if !res.Rewritten {
			if res.Reply != r {
				t.Fatalf("answer(%+v, %v) = %+v: not rewritten, yet the reply changed", r, resp, res)
			}
			return
		}
		switch resp.GetOutcome() {
		case rewritev1.Outcome_OUTCOME_POLICY_ERROR, rewritev1.Outcome_OUTCOME_TIMEOUT, rewritev1.Outcome_OUTCOME_INVALID_RESULT:
			t.Fatalf("answer(%+v, %v) = %+v: rewritten although the policy failed", r, resp, res)
		}
		if res.Err != nil || res.Command != r.Command || !smtpreply.ValidStatus(res.Status) {
			t.Fatalf("answer(%+v, %v) = %+v: an invalid rewrite", r, resp, res)
		}
		if clean, err := smtpreply.Sanitize(res.Text); err != nil || clean != res.Text {
			t.Fatalf("answer(%+v, %v) = %+v: rewritten text is not sanitised (%q, %v)", r, resp, res, clean, err)
		}
	})
}
