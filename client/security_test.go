package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
)

// testPKI is a throwaway CA with a server certificate for 127.0.0.1 and a
// client certificate.
type testPKI struct {
	pool           *x509.CertPool
	server, client tls.Certificate
}

func newPKI(t *testing.T) testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage) tls.Certificate {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return testPKI{
		pool:   pool,
		server: issue(2, "rewrited", x509.ExtKeyUsageServerAuth),
		client: issue(3, "frontend", x509.ExtKeyUsageClientAuth),
	}
}

// authChecking answers like the example policy when the call carries the
// bearer token, and reports the client certificate's name in the text.
func authChecking(token string) handler {
	return func(ctx context.Context, req *rewritev1.RewriteResponseRequest) (*rewritev1.RewriteResponseResponse, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer "+token {
			return nil, status.Errorf(codes.Unauthenticated, "authorization %q", got)
		}
		text := "no client certificate"
		if p, ok := peer.FromContext(ctx); ok {
			if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
				text = "client " + ti.State.PeerCertificates[0].Subject.CommonName
			}
		}
		return answers(250, text)(ctx, req)
	}
}

func TestBearerAndTLS(t *testing.T) {
	pki := newPKI(t)
	mtls := grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{pki.server}, ClientCAs: pki.pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12,
	}))
	tlsSrv := startFake(t, authChecking("s3cret"), mtls)
	plainSrv := startFake(t, authChecking("s3cret"))
	clientTLS := &tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{pki.client}, MinVersion: tls.VersionTLS12}

	for _, tc := range []struct {
		name     string
		target   string
		opts     []Option
		wantText string
		wantErr  error
		// A failed handshake is retried with backoff, so on a loaded machine
		// the budget may run out first: either way the original is kept.
		orTimeout bool
	}{
		{name: "mTLS with token", target: tlsSrv.addr,
			opts: []Option{WithTLS(clientTLS), WithBearerToken("s3cret")}, wantText: "client frontend"},
		{name: "insecure bearer on plaintext", target: plainSrv.addr,
			opts: []Option{WithBearerToken("s3cret"), WithInsecureBearer()}, wantText: "no client certificate"},
		{name: "wrong token", target: tlsSrv.addr,
			opts: []Option{WithTLS(clientTLS), WithBearerToken("nope")}, wantErr: ErrRPC},
		{name: "untrusted server certificate", target: tlsSrv.addr,
			opts:    []Option{WithTLS(&tls.Config{Certificates: []tls.Certificate{pki.client}, MinVersion: tls.VersionTLS12}), WithBearerToken("s3cret")},
			wantErr: ErrRPC, orTimeout: true},
		{name: "plaintext to a TLS server", target: tlsSrv.addr,
			opts: []Option{WithBearerToken("s3cret"), WithInsecureBearer()}, wantErr: ErrRPC, orTimeout: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, tc.target, append(tc.opts, WithTimeout(time.Second))...)
			res := c.Rewrite(context.Background(), dataReply, nil)
			if tc.wantErr != nil {
				matched := errors.Is(res.Err, tc.wantErr) || tc.orTimeout && errors.Is(res.Err, ErrTimeout)
				if !matched || res.Reply != dataReply {
					t.Errorf("res = %+v, want original with %v", res, tc.wantErr)
				}
				return
			}
			if res.Err != nil || res.Text != tc.wantText {
				t.Errorf("res = %+v, want text %q", res, tc.wantText)
			}
		})
	}
}
