package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// Tokens are the bearer tokens a server accepts, read from a file and
// reloadable, so a token can be rotated without a restart: list the old and
// the new one, move the clients, then drop the old one.
type Tokens struct {
	file   string
	logger *slog.Logger
	// SHA-256 digests: comparing digests in constant time reveals neither
	// a token's content nor its length.
	sums atomic.Pointer[[][sha256.Size]byte]
}

// LoadTokens reads file: one token per line; blank lines and lines starting
// with '#' are skipped. A token no client can send is kept, with a warning
// on logger.
func LoadTokens(file string, logger *slog.Logger) (*Tokens, error) {
	t := &Tokens{file: file, logger: logger}
	if err := t.Reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// Reload reads the file again; on error the tokens in use are kept.
func (t *Tokens) Reload() error {
	data, err := os.ReadFile(t.file)
	if err != nil {
		return fmt.Errorf("reading the tokens: %w", err)
	}
	var sums [][sha256.Size]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	for lineNo := 1; sc.Scan(); lineNo++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		if i := bytes.IndexFunc(line, unsendable); i >= 0 {
			// The token's content stays out of the log; where it goes wrong
			// does not give it away.
			t.logger.Warn("a token holds a character no client sends in a bearer token (a byte-order mark, a tab or space, a control or non-ASCII character): it can never match",
				"file", t.file, "line", lineNo, "byte", i)
		}
		sums = append(sums, sha256.Sum256(line))
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading the tokens: %s: %w", t.file, err)
	}
	if len(sums) == 0 {
		return fmt.Errorf("reading the tokens: %s holds no token", t.file)
	}
	t.sums.Store(&sums)
	return nil
}

// unsendable reports whether r cannot be part of a bearer token a client
// sends: tokens are printable ASCII without spaces (RFC 6750's b64token is
// stricter still).
func unsendable(r rune) bool { return r <= ' ' || r > '~' }

// valid reports whether token is one of the tokens, in time independent of
// which one matches.
func (t *Tokens) valid(token string) bool {
	sum := sha256.Sum256([]byte(token))
	match := 0
	for _, s := range *t.sums.Load() {
		match |= subtle.ConstantTimeCompare(sum[:], s[:])
	}
	return match == 1
}

func (t *Tokens) authenticate(ctx context.Context) (context.Context, error) {
	token, err := auth.AuthFromMD(ctx, "bearer")
	if err != nil {
		return nil, err
	}
	if !t.valid(token) {
		return nil, status.Error(codes.Unauthenticated, "invalid bearer token")
	}
	return ctx, nil
}

// healthPrefix starts the methods of health checks, which need no token,
// so that load balancers and Kubernetes probes need none. Reflection is not
// exempt: it describes the API to anyone who asks.
var healthPrefix = "/" + healthpb.Health_ServiceDesc.ServiceName + "/"

// tap checks a call's token from its headers alone, before the server reads
// the request, so that a peer without a token costs no decoding. gRPC has
// put the headers in ctx as incoming metadata.
func (t *Tokens) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if strings.HasPrefix(info.FullMethodName, healthPrefix) {
		return ctx, nil
	}
	return t.authenticate(ctx)
}
