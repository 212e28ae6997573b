package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/rewrited/rewrited/internal/watch"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// TLSFiles is a server certificate and, for mutual TLS, the CA that client
// certificates must chain to, read from PEM files and reloadable: new
// connections use what the last successful Reload read.
type TLSFiles struct {
	CertFile, KeyFile string
	// ClientCAFile, when set, makes client certificates required.
	ClientCAFile string

	cur atomic.Pointer[tls.Config]
}

// LoadTLS reads the files.
func LoadTLS(certFile, keyFile, clientCAFile string) (*TLSFiles, error) {
	t := &TLSFiles{CertFile: certFile, KeyFile: keyFile, ClientCAFile: clientCAFile}
	if err := t.Reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// Reload reads the files again; on error the configuration in use is kept.
func (t *TLSFiles) Reload() error {
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return fmt.Errorf("loading the TLS certificate: %w", err)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		// gRPC clients insist on ALPN h2; the config returned by
		// GetConfigForClient is used as is, so it must say so itself.
		NextProtos: []string{"h2"},
	}
	if t.ClientCAFile != "" {
		pem, err := os.ReadFile(t.ClientCAFile)
		if err != nil {
			return fmt.Errorf("loading the client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return errors.New("loading the client CA: " + t.ClientCAFile + " holds no PEM certificate")
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	t.cur.Store(cfg)
	return nil
}

// ServerOption returns the gRPC transport credentials serving the files.
func (t *TLSFiles) ServerOption() grpc.ServerOption {
	return grpc.Creds(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return t.cur.Load(), nil
		},
	}))
}

// Watch reloads the files whenever they change, until ctx ends, debounce
// after the last change of a burst, so a certificate renewed by a sidecar
// is served without a signal. It watches the files' directories, for the
// reasons the policy directory is watched (see registry.Watch): renames
// over a file and Kubernetes' swap of the ..data symlink.
func (t *TLSFiles) Watch(ctx context.Context, debounce time.Duration, logger *slog.Logger) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching the TLS files: %w", err)
	}
	names, dirs := map[string]bool{}, map[string]bool{}
	for _, file := range []string{t.CertFile, t.KeyFile, t.ClientCAFile} {
		if file == "" {
			continue
		}
		names[filepath.Base(file)] = true
		if dir := filepath.Dir(file); !dirs[dir] {
			dirs[dir] = true
			if err := w.Add(dir); err != nil {
				w.Close()
				return fmt.Errorf("watching the TLS files: %w", err)
			}
		}
	}
	go t.watch(ctx, w, names, debounce, logger)
	return nil
}

func (t *TLSFiles) watch(ctx context.Context, w *fsnotify.Watcher, names map[string]bool, debounce time.Duration, logger *slog.Logger) {
	watch.Loop(ctx, w, debounce,
		func(ev fsnotify.Event) bool {
			// The files themselves, or Kubernetes' ..data swap.
			base := filepath.Base(ev.Name)
			return names[base] || strings.HasPrefix(base, "..")
		},
		func(err error) { logger.Warn("watching the TLS files", "error", err.Error()) },
		func() {
			if err := t.Reload(); err != nil {
				logger.Error("TLS files refused: the previous ones stay in use", "error", err.Error())
			} else {
				logger.Info("TLS files reloaded", "cert", t.CertFile)
			}
		})
}
