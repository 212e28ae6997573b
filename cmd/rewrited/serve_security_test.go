package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/rewrited/rewrited/internal/rewritedtest"
	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
)

// pki is a CA with a server certificate for 127.0.0.1 and a client
// certificate, as PEM files, plus a client certificate from another CA.
type pki struct {
	caFile, certFile, keyFile string
	pool                      *x509.CertPool
	client, rogue             tls.Certificate
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	ca, caKey := newCert(t, nil, nil, x509.Certificate{Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true})
	server, serverKey := newCert(t, ca, caKey, x509.Certificate{Subject: pkix.Name{CommonName: "rewrited"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	client, clientKey := newCert(t, ca, caKey, x509.Certificate{Subject: pkix.Name{CommonName: "frontend"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	rogueCA, rogueKey := newCert(t, nil, nil, x509.Certificate{Subject: pkix.Name{CommonName: "rogue CA"}, IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true})
	rogue, rogueClientKey := newCert(t, rogueCA, rogueKey, x509.Certificate{Subject: pkix.Name{CommonName: "intruder"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})

	p := &pki{caFile: filepath.Join(dir, "ca.pem"), certFile: filepath.Join(dir, "server.pem"), keyFile: filepath.Join(dir, "server-key.pem"), pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	writePEM(t, p.caFile, "CERTIFICATE", ca.Raw)
	writePEM(t, p.certFile, "CERTIFICATE", server.Raw)
	writePEM(t, p.keyFile, "PRIVATE KEY", marshalKey(t, serverKey))
	p.client = tls.Certificate{Certificate: [][]byte{client.Raw}, PrivateKey: clientKey}
	p.rogue = tls.Certificate{Certificate: [][]byte{rogue.Raw}, PrivateKey: rogueClientKey}
	return p
}

var serial int64

// newCert issues tmpl signed by parent (self-signed when parent is nil).
func newCert(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, tmpl x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl.SerialNumber = big.NewInt(serial)
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	if parent == nil {
		parent, parentKey = &tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func marshalKey(t *testing.T, key *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func writePEM(t *testing.T, file, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// dialWith connects with creds and calls the rewrite and health services,
// returning their codes.
func callCodes(t *testing.T, addr string, creds credentials.TransportCredentials, token string) (rewrite, health codes.Code) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := testCtx(t)
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	_, err = decide(ctx, conn, "")
	rewrite = status.Code(err)
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return rewrite, status.Code(err)
}

func TestServeTLSAndToken(t *testing.T) {
	pki := newPKI(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeFile(t, tokenFile, "s3cret-token\n")
	serverTLS := []string{"--tls-cert", pki.certFile, "--tls-key", pki.keyFile}
	mtls := append(append([]string{}, serverTLS...), "--tls-client-ca", pki.caFile)
	trust := &tls.Config{RootCAs: pki.pool, MinVersion: tls.VersionTLS12}
	withCert := func(c tls.Certificate) *tls.Config {
		cfg := trust.Clone()
		cfg.Certificates = []tls.Certificate{c}
		return cfg
	}
	plain := insecure.NewCredentials()
	unavailable := codes.Unavailable // the handshake fails
	servers := map[string][]string{
		"TLS":          serverTLS,
		"mTLS":         mtls,
		"token":        {"--auth-token-file", tokenFile},
		"mTLS + token": append(append([]string{}, mtls...), "--auth-token-file", tokenFile),
	}
	tests := []struct {
		server        string
		name          string
		creds         credentials.TransportCredentials
		token         string
		rewrite, hlth codes.Code
	}{
		{"TLS", "plaintext client", plain, "", unavailable, unavailable},
		{"TLS", "client not trusting the CA", credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12}), "", unavailable, unavailable},
		{"TLS", "TLS client", credentials.NewTLS(trust), "", codes.OK, codes.OK},
		{"mTLS", "no client certificate", credentials.NewTLS(trust), "", unavailable, unavailable},
		{"mTLS", "certificate from another CA", credentials.NewTLS(withCert(pki.rogue)), "", unavailable, unavailable},
		{"mTLS", "client certificate", credentials.NewTLS(withCert(pki.client)), "", codes.OK, codes.OK},
		{"token", "no token", plain, "", codes.Unauthenticated, codes.OK},
		{"token", "wrong token", plain, "guess", codes.Unauthenticated, codes.OK},
		{"token", "token", plain, "s3cret-token", codes.OK, codes.OK},
		{"mTLS + token", "certificate, no token", credentials.NewTLS(withCert(pki.client)), "", codes.Unauthenticated, codes.OK},
		{"mTLS + token", "certificate and token", credentials.NewTLS(withCert(pki.client)), "s3cret-token", codes.OK, codes.OK},
		{"mTLS + token", "token, no certificate", credentials.NewTLS(trust), "s3cret-token", unavailable, unavailable},
	}
	procs := map[string]*rewritedtest.Proc{}
	for name, args := range servers {
		procs[name] = rewritedtest.Start(t, args...)
	}
	for _, tt := range tests {
		t.Run(tt.server+"/"+tt.name, func(t *testing.T) {
			rewrite, health := callCodes(t, procs[tt.server].Addr, tt.creds, tt.token)
			if rewrite != tt.rewrite || health != tt.hlth {
				t.Errorf("rewrite %v, health %v; want %v, %v", rewrite, health, tt.rewrite, tt.hlth)
			}
		})
	}
}

// TestServeReloadsCertificate replaces the server certificate, then sends
// SIGHUP or nothing (the files are watched): new connections get the new
// certificate.
func TestServeReloadsCertificate(t *testing.T) {
	for _, signal := range []bool{true, false} {
		t.Run(fmt.Sprintf("SIGHUP=%v", signal), func(t *testing.T) {
			first, second := newPKI(t), newPKI(t)
			p := rewritedtest.Start(t, "--tls-cert", first.certFile, "--tls-key", first.keyFile)
			trusting := func(k *pki) credentials.TransportCredentials {
				return credentials.NewTLS(&tls.Config{RootCAs: k.pool, MinVersion: tls.VersionTLS12})
			}
			if code, _ := callCodes(t, p.Addr, trusting(first), ""); code != codes.OK {
				t.Fatalf("first certificate: %v", code)
			}
			for _, f := range [][2]string{{second.certFile, first.certFile}, {second.keyFile, first.keyFile}} {
				if err := os.Rename(f[0], f[1]); err != nil {
					t.Fatal(err)
				}
			}
			if signal {
				if err := p.Signal(syscall.SIGHUP); err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, "the second certificate is served", func() bool {
				code, _ := callCodes(t, p.Addr, trusting(second), "")
				return code == codes.OK
			})
			if code, _ := callCodes(t, p.Addr, trusting(first), ""); code != codes.Unavailable {
				t.Errorf("a client trusting only the first CA: %v", code)
			}
		})
	}
}

// TestServeRefusesUnauthenticatedBeforeDecoding sends the quadratic-decode
// attack's 320 KB request ten times without a token: each is refused
// Unauthenticated, and the server spends far less CPU on all ten than the
// one second a single decode of it used to take.
func TestServeRefusesUnauthenticatedBeforeDecoding(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeFile(t, tokenFile, "s3cret-token\n")
	p := rewritedtest.Start(t, "--auth-token-file", tokenFile, "--metrics-listen", "127.0.0.1:0")
	conn := dial(t, p.Addr)
	ctx := testCtx(t)
	req := rewritedtest.Raw(rewritedtest.RepeatedConnMeta(80_000))
	method := rewritev1.RewriteService_RewriteResponse_FullMethodName
	before := p.CPUTime(t)
	for range 10 {
		if err := conn.Invoke(ctx, method, req, new(rewritev1.RewriteResponseResponse)); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("unauthenticated request: %v, want Unauthenticated", err)
		}
	}
	if used := p.CPUTime(t) - before; used > time.Second {
		t.Errorf("the server used %v of CPU to refuse ten unauthenticated requests", used)
	}
	if body := scrape(t, metricsURL(t, p)); !hasSample(body, "rewrited_unauthenticated_total 10") {
		t.Errorf("metrics lack rewrited_unauthenticated_total 10:\n%s", grepLines(body, "unauthenticated"))
	}
	var resp rewritev1.RewriteResponseResponse
	err := conn.Invoke(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer s3cret-token"), method, req, &resp)
	if err != nil || resp.Status != 250 {
		t.Errorf("with the token: %v, %v", &resp, err)
	}
}

// TestServeBrokenWireIsInvalidArgument sends a response field of invalid
// UTF-8 and a truncated message: both are InvalidArgument, logged and
// counted like any other refused request.
func TestServeBrokenWireIsInvalidArgument(t *testing.T) {
	p := rewritedtest.Start(t, "--metrics-listen", "127.0.0.1:0")
	conn := dial(t, p.Addr)
	ctx := testCtx(t)
	method := rewritev1.RewriteService_RewriteResponse_FullMethodName
	for _, b := range [][]byte{
		{0x08, 0xfa, 0x01, 0x12, 0x03, 'O', 'K', 0xff}, // response "OK\xff"
		{0x08, 0xfa, 0x01, 0x12, 0x09, 'O', 'K'},       // response cut short
	} {
		err := conn.Invoke(ctx, method, rewritedtest.Raw(b), new(rewritev1.RewriteResponseResponse))
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("request % x: %v, want InvalidArgument", b, err)
		}
	}
	sample := `grpc_server_handled_total{grpc_code="InvalidArgument",grpc_method="RewriteResponse",grpc_service="rewrite.v1.RewriteService",grpc_type="unary"} 2`
	if body := scrape(t, metricsURL(t, p)); !hasSample(body, sample) {
		t.Errorf("metrics lack %s:\n%s", sample, grepLines(body, "grpc_server_handled_total"))
	}
	logged := 0
	for _, rec := range logRecords(p, "finished call") {
		if rec["grpc.code"] == "InvalidArgument" {
			logged++
		}
	}
	if logged != 2 {
		t.Errorf("%d InvalidArgument calls logged, want 2:\n%s", logged, p.Logs())
	}
}
