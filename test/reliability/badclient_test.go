package reliability_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/rewrited/rewrited/internal/rewritedtest"
	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
	"github.com/rewrited/rewrited/test/reliability/load"
	"github.com/rewrited/rewrited/test/reliability/record"
)

// TestBadClients points misbehaving peers at one replica while a
// well-behaved client keeps calling it: every one of that client's calls is
// answered within its budget, each bad peer gets the answer it deserves,
// and the replica is still up and serving at the end.
func TestBadClients(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, "default.lua", rewriteDATA)
	srv := rewritedtest.Start(t, "--policy-dir", dir, "--eval-timeout", "250ms")

	// goodClient runs a well-behaved client in a process of its own for d,
	// so that the bad peers' work in this process cannot delay it; check
	// asserts that it was served throughout and that the replica is healthy.
	goodClient := func(t *testing.T, rec *record.Result, d time.Duration) (check func()) {
		wait := runLoadgen(t, srv.Addr, "-duration", d.String(), "-clients", "1", "-workers", "2", "-pause", "5ms",
			"-timeout", budget.String(), "-slack", slack.String())
		return func() {
			t.Helper()
			s := wait()
			logSummary(t, "well-behaved client", s)
			rec.Calls, rec.Lost, rec.Fallback, rec.P99ms, rec.MaxMs = s.Calls, s.Classes[load.Lost], s.Fallbacks(), s.AcceptedP99ms, s.MaxMs
			// Every call returns a valid reply and none outlives its deadline;
			// on two shared cores a burst of bad calls may cost it a few
			// fallbacks.
			if s.Calls == 0 || s.Classes[load.Lost] != 0 || s.Classes[load.Rewritten] < s.Calls*95/100 {
				t.Errorf("the well-behaved client was not served: %+v", s)
			}
			checkNoStall(t, "well-behaved client", s)
			if err := healthCheck(srv.Addr); err != nil {
				t.Errorf("health check after the bad peer: %v", err)
			}
		}
	}

	t.Run("silent connections", func(t *testing.T) {
		rec := record.New(t, "bad-client", "500 TCP connections that send nothing")
		check := goodClient(t, rec, 3*time.Second)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for range 500 {
			c, err := net.Dial("tcp", srv.Addr)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		check()
		rec.Detail = "the server keeps them until its handshake timeout; others are served meanwhile"
	})

	t.Run("garbage bytes", func(t *testing.T) {
		rec := record.New(t, "bad-client", "garbage on the gRPC port (random bytes, HTTP/1.1, TLS hello, a bogus preface)")
		check := goodClient(t, rec, 2*time.Second)
		random := make([]byte, 64<<10)
		_, _ = rand.Read(random)
		payloads := map[string][]byte{
			"random":       random,
			"http/1.1":     []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
			"tls hello":    append([]byte{0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03}, random[:160]...),
			"bad preface":  []byte("PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"),
			"smtp":         []byte("EHLO mx.example.com\r\nMAIL FROM:<a@b>\r\n"),
			"preface+junk": append([]byte(http2.ClientPreface), random[:4096]...),
		}
		var closed sync.WaitGroup
		for name, payload := range payloads {
			for range 10 {
				closed.Go(func() {
					if err := sendGarbage(srv.Addr, payload); err != nil {
						t.Errorf("%s: %v", name, err)
					}
				})
			}
		}
		closed.Wait()
		check()
		rec.Detail = fmt.Sprintf("%d connections, each closed by the server", 10*len(payloads))
	})

	t.Run("oversized messages", func(t *testing.T) {
		rec := record.New(t, "bad-client", "oversized requests (2 MiB, 5 MiB, a 1 GiB length prefix)")
		check := goodClient(t, rec, 2*time.Second)
		conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		rpc := rewritev1.NewRewriteServiceClient(conn)
		for _, tc := range []struct {
			size int
			want codes.Code
		}{
			{2 << 20, codes.InvalidArgument},   // over --max-request-bytes (1 MiB)
			{5 << 20, codes.ResourceExhausted}, // over gRPC's receive limit (4x the cap)
		} {
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					_, err := rpc.RewriteResponse(ctx, &rewritev1.RewriteResponseRequest{Status: 250, Response: strings.Repeat("x", tc.size)})
					if status.Code(err) != tc.want {
						t.Errorf("%d-byte request: %v, want %v", tc.size, err, tc.want)
					}
				})
			}
			wg.Wait()
		}
		if code, err := lyingLength(srv.Addr); err != nil || code != codes.ResourceExhausted {
			t.Errorf("a 1 GiB length prefix: code %v, %v; want ResourceExhausted", code, err)
		}
		check()
		rec.Detail = "InvalidArgument over the cap, ResourceExhausted over gRPC's limit, undecoded"
	})

	t.Run("slow reader", func(t *testing.T) {
		// Each request fits one DATA frame and the server's initial stream
		// window, so the peer needs to read nothing to send them all.
		const streams, textBytes = 4000, 12 << 10
		rec := record.New(t, "bad-client", fmt.Sprintf("a raw HTTP/2 peer that sends %d calls with %d KiB replies and never reads", streams, textBytes>>10))
		before := rssKiB(t, srv)
		c, err := slowReader(srv.Addr, streams, textBytes)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// The burst of calls is an overload of its own (TestOverload); what
		// matters here is the time the peer then sits on its replies.
		time.Sleep(1500 * time.Millisecond)
		check := goodClient(t, rec, 1500*time.Millisecond)
		check()
		grown := rssKiB(t, srv) - before
		rec.PeakMB = float64(grown) / 1024
		rec.Detail = fmt.Sprintf("server RSS +%d MiB while the peer holds %d unread replies", grown>>10, streams)
		t.Log(rec.Detail)
		// What the peer sent is about streams*textBytes; the server must not
		// hold replies for it without bound.
		if limit := int64(32 << 10); grown > limit {
			t.Errorf("server RSS grew by %d MiB", grown>>10)
		}
	})
}

// healthCheck asks the replica's health service for the rewrite service.
func healthCheck(addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: rewritev1.RewriteService_ServiceDesc.ServiceName})
	if err != nil {
		return err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("status %v", resp.GetStatus())
	}
	return nil
}

// sendGarbage writes payload and expects the server to close the
// connection within a few seconds, whatever it answers first.
func sendGarbage(addr string, payload []byte) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(payload); err != nil {
		return nil // the server closed first
	}
	if _, err := io.Copy(io.Discard, c); err != nil && !isReset(err) {
		return fmt.Errorf("the server did not close the connection: %w", err)
	}
	return nil
}

func isReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset")
}

// h2conn is a raw HTTP/2 client connection.
type h2conn struct {
	net.Conn
	w   *bufio.Writer
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
}

// dialH2 opens an HTTP/2 connection with the given settings, without
// reading anything from the server.
func dialH2(addr string, settings ...http2.Setting) (*h2conn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	w := bufio.NewWriter(c)
	h := &h2conn{Conn: c, w: w, fr: http2.NewFramer(w, c)}
	h.enc = hpack.NewEncoder(&h.buf)
	if _, err := w.WriteString(http2.ClientPreface); err != nil {
		c.Close()
		return nil, err
	}
	if err := h.fr.WriteSettings(settings...); err != nil {
		c.Close()
		return nil, err
	}
	return h, w.Flush()
}

// call writes one RewriteResponse call on stream id: headers, then msg
// framed as gRPC with the length prefix given.
func (h *h2conn) call(id uint32, addr string, msg []byte, length uint32) error {
	h.buf.Reset()
	for _, f := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":authority", addr},
		{":path", rewritev1.RewriteService_RewriteResponse_FullMethodName},
		{"content-type", "application/grpc"}, {"te", "trailers"},
	} {
		if err := h.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}); err != nil {
			return err
		}
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.buf.Bytes(), EndHeaders: true}); err != nil {
		return err
	}
	frame := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(frame[1:], length)
	frame = append(frame, msg...)
	for len(frame) > 0 {
		n := min(len(frame), 16<<10) // the default SETTINGS_MAX_FRAME_SIZE
		if err := h.fr.WriteData(id, n == len(frame), frame[:n]); err != nil {
			return err
		}
		frame = frame[n:]
	}
	return nil
}

// flush sends the frames written so far.
func (h *h2conn) flush() error { return h.w.Flush() }

// slowReader opens a connection that announces a zero flow-control window,
// so the server may send no reply data, sends calls whose replies are about
// textBytes each, and never reads.
func slowReader(addr string, calls, textBytes int) (net.Conn, error) {
	h, err := dialH2(addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	if err != nil {
		return nil, err
	}
	cmd := "DATA"
	text := strings.Repeat(strings.Repeat("x", 99)+"\n", textBytes/100) // lines within the SMTP limit
	msg, err := proto.Marshal(&rewritev1.RewriteResponseRequest{Status: 250, Response: text, Command: &cmd})
	if err != nil {
		return nil, err
	}
	for i := range calls {
		if err := h.call(uint32(2*i+1), addr, msg, uint32(len(msg))); err != nil {
			h.Close()
			return nil, err
		}
	}
	if err := h.flush(); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// lyingLength sends one call whose gRPC length prefix claims 1 GiB and
// returns the grpc-status the server answers with.
func lyingLength(addr string) (codes.Code, error) {
	h, err := dialH2(addr)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	if err := h.call(1, addr, []byte("0123456789"), 1<<30); err != nil {
		return 0, err
	}
	if err := h.flush(); err != nil {
		return 0, err
	}
	_ = h.SetReadDeadline(time.Now().Add(5 * time.Second))
	fr := http2.NewFramer(io.Discard, h.Conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return 0, err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() && h.fr.WriteSettingsAck() == nil {
				_ = h.flush()
			}
		case *http2.MetaHeadersFrame:
			if s := f.PseudoValue("status"); s != "" && s != "200" {
				return 0, fmt.Errorf("HTTP status %s", s)
			}
			for _, hf := range f.Fields {
				if hf.Name == "grpc-status" {
					n, err := strconv.Atoi(hf.Value)
					return codes.Code(n), err
				}
			}
		case *http2.GoAwayFrame:
			return 0, fmt.Errorf("GOAWAY %v", f.ErrCode)
		}
	}
}

// rssKiB reads the resident set size of the replica from /proc.
func rssKiB(t testing.TB, p *rewritedtest.Proc) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no VmRSS in /proc status")
	return 0
}
