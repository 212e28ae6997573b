package rewritedtest

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/emptypb"
)

// RepeatedConnMeta is a valid rewrite request of status 250, response "OK"
// and n conn_meta fields, each an empty map entry: protobuf merges them, and
// a decoder that copies the merged buffer at each one is quadratic in n.
func RepeatedConnMeta(n int) []byte {
	return append([]byte{0x08, 0xfa, 0x01, 0x12, 0x02, 'O', 'K'}, bytes.Repeat([]byte{0x22, 0x02, 0x0a, 0x00}, n)...)
}

// Raw is a message whose encoding is b, to put crafted bytes on the wire
// with any gRPC client.
func Raw(b []byte) proto.Message {
	m := new(emptypb.Empty)
	m.ProtoReflect().SetUnknown(protoreflect.RawFields(b))
	return m
}

// CPUTime is the CPU time (user and system) the process has used so far,
// read from /proc; the test is skipped where there is no /proc.
func (p *Proc) CPUTime(t testing.TB) time.Duration {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Cmd.Process.Pid))
	if os.IsNotExist(err) {
		t.Skip("no /proc: cannot read the server's CPU time")
	}
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command name, which ends with the last ')':
	// state is the first; utime and stime, in clock ticks, the 12th and 13th.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			t.Fatalf("/proc/%d/stat: %v", p.Cmd.Process.Pid, err)
		}
		ticks += n
	}
	// Linux reports /proc times in USER_HZ, 100 on every architecture.
	return time.Duration(ticks) * time.Second / 100
}
