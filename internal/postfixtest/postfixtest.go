// Package postfixtest runs a private Postfix instance on 127.0.0.1 for tests
// and benchmarks: its own config directory, queue and log, mail for
// example.com accepted and discarded.
package postfixtest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Instance is a running Postfix.
type Instance struct {
	Dir       string // config directory, holding main.cf, master.cf, the queue and maillog
	Addr      string // smtpd, offering XCLIENT to 127.0.0.0/8
	ProxyAddr string // smtpd expecting a PROXY protocol header (haproxy v1/v2)
	// StrictAddr is an smtpd that offers no XCLIENT and ends a session
	// after two error replies with its own 421 (smtpd_hard_error_limit).
	StrictAddr string
	RejectFrom string // sender address the instance refuses at MAIL
	// RejectRcpt is a recipient refused at RCPT with a 550.
	RejectRcpt string
	// RejectSubject, as a Subject header, makes the message refused after DATA.
	RejectSubject string
	// CAFile is the PEM certificate smtpd offers with STARTTLS (self-signed
	// for "postfix.test").
	CAFile string

	auth *authServer
}

// Errors of Usable.
var (
	ErrNotInstalled = errors.New("postfix is not installed (Debian: apt-get install -y postfix)")
	ErrNotRoot      = errors.New("a private postfix instance needs root")
)

// Usable says why Start cannot run an instance here, or nil.
func Usable() error {
	if _, err := exec.LookPath("postfix"); err != nil {
		if _, err := os.Stat("/usr/sbin/postfix"); err != nil {
			return ErrNotInstalled
		}
	}
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	return nil
}

// Start runs a new instance; Stop it when done.
func Start() (*Instance, error) {
	if err := Usable(); err != nil {
		return nil, err
	}
	if _, err := user.Lookup("postfix"); err != nil {
		return nil, fmt.Errorf("postfix user: %w", err)
	}
	dir, err := os.MkdirTemp("", "rewrited-postfix-")
	if err != nil {
		return nil, err
	}
	in := &Instance{
		Dir:           dir,
		RejectFrom:    "spammer@blocked.test",
		RejectRcpt:    "nobody@example.com",
		RejectSubject: "reject-me",
	}
	if err := in.start(); err != nil {
		in.Stop()
		return nil, err
	}
	return in, nil
}

func (in *Instance) start() (err error) {
	if err := os.Chmod(in.Dir, 0o755); err != nil {
		return err
	}
	data := filepath.Join(in.Dir, "data")
	queue := filepath.Join(in.Dir, "queue")
	for _, d := range []string{data, queue} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	if out, err := exec.Command("chown", "postfix", data).CombinedOutput(); err != nil {
		return fmt.Errorf("chown postfix %s: %w: %s", data, err, out)
	}
	if in.auth, err = startAuthServer(); err != nil {
		return err
	}
	certFile, keyFile := filepath.Join(in.Dir, "cert.pem"), filepath.Join(in.Dir, "key.pem")
	if err := WriteCert(certFile, keyFile, "postfix.test"); err != nil {
		return err
	}
	in.CAFile = certFile
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	in.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	in.ProxyAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	in.StrictAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2]))

	headerChecks := filepath.Join(in.Dir, "header_checks")
	files := map[string]string{
		"main.cf":       mainCF(in, queue, data, headerChecks, certFile, keyFile),
		"master.cf":     masterCF(in),
		"header_checks": "/^Subject: " + in.RejectSubject + "/ REJECT 5.7.1 message content refused\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(in.Dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	if out, err := exec.Command("postfix", "-c", in.Dir, "start").CombinedOutput(); err != nil {
		return fmt.Errorf("postfix -c %s start: %w: %s\n%s", in.Dir, err, out, in.Log())
	}
	return in.waitListening()
}

func mainCF(in *Instance, queue, data, headerChecks, certFile, keyFile string) string {
	return strings.Join([]string{
		"compatibility_level = 3.6",
		"queue_directory = " + queue,
		"data_directory = " + data,
		"maillog_file = " + filepath.Join(in.Dir, "maillog"),
		"maillog_file_prefixes = " + in.Dir,
		"inet_interfaces = loopback-only",
		"inet_protocols = ipv4",
		"myhostname = postfix.test",
		"mydestination =",
		"alias_maps =",
		"alias_database =",
		"relay_domains = example.com",
		"transport_maps = inline:{example.com=discard:}",
		"mynetworks = 127.0.0.1/32",
		"smtpd_relay_restrictions = reject_unauth_destination",
		"smtpd_sender_restrictions = check_sender_access inline:{ {" + in.RejectFrom + " = REJECT 5.7.1 sender refused} }",
		"smtpd_recipient_restrictions = check_recipient_access inline:{ {" + in.RejectRcpt + " = 550 5.1.1 no such user} }",
		"header_checks = regexp:" + headerChecks,
		"smtpd_authorized_xclient_hosts = 127.0.0.0/8",
		"smtpd_delay_reject = no",
		"smtpd_error_sleep_time = 0",
		"smtpd_forbid_bare_newline = normalize",
		"smtpd_client_connection_rate_limit = 0",
		"smtpd_client_connection_count_limit = 0",
		"default_process_limit = 200",
		"smtpd_sasl_auth_enable = yes",
		"smtpd_sasl_type = dovecot",
		"smtpd_sasl_path = inet:" + in.auth.addr(),
		"smtpd_tls_security_level = may",
		"smtpd_tls_cert_file = " + certFile,
		"smtpd_tls_key_file = " + keyFile,
		"smtpd_tls_loglevel = 1",
		"",
	}, "\n")
}

func masterCF(in *Instance) string {
	return strings.Join([]string{
		in.Addr + " inet n - n - - smtpd",
		in.ProxyAddr + " inet n - n - - smtpd -o smtpd_upstream_proxy_protocol=haproxy",
		in.StrictAddr + " inet n - n - - smtpd -o smtpd_authorized_xclient_hosts= -o smtpd_hard_error_limit=2",
		"pickup unix n - n 60 1 pickup",
		"cleanup unix n - n - 0 cleanup",
		"qmgr unix n - n 300 1 qmgr",
		"rewrite unix - - n - - trivial-rewrite",
		"bounce unix - - n - 0 bounce",
		"defer unix - - n - 0 bounce",
		"trace unix - - n - 0 bounce",
		"verify unix - - n - 1 verify",
		"flush unix n - n 1000? 0 flush",
		"proxymap unix - - n - - proxymap",
		"smtp unix - - n - - smtp",
		"relay unix - - n - - smtp",
		"showq unix n - n - - showq",
		"error unix - - n - - error",
		"retry unix - - n - - error",
		"discard unix - - n - - discard",
		"anvil unix - - n - 1 anvil",
		"scache unix - - n - 1 scache",
		"tlsmgr unix - - n 1000? 1 tlsmgr",
		"postlog unix-dgram n - n - 1 postlogd",
		"",
	}, "\n")
}

// freePorts returns n ports free on 127.0.0.1 a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// waitListening waits until every smtpd port accepts connections.
func (in *Instance) waitListening() error {
	deadline := time.Now().Add(20 * time.Second)
	for _, addr := range []string{in.Addr, in.ProxyAddr, in.StrictAddr} {
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				_ = c.Close()
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("postfix does not listen on %s: %w\n%s", addr, err, in.Log())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// Log returns the instance's maillog.
func (in *Instance) Log() string {
	b, _ := os.ReadFile(filepath.Join(in.Dir, "maillog"))
	return string(b)
}

// WaitLog waits until the maillog holds want, and returns the log.
func (in *Instance) WaitLog(want string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		log := in.Log()
		if strings.Contains(log, want) {
			return log, nil
		}
		if time.Now().After(deadline) {
			return log, fmt.Errorf("maillog has no %q after %v", want, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops the instance and removes its directory.
func (in *Instance) Stop() {
	_ = exec.Command("postfix", "-c", in.Dir, "stop").Run()
	// postfix stop returns before every daemon has exited.
	_ = exec.Command("postfix", "-c", in.Dir, "abort").Run()
	if in.auth != nil {
		in.auth.close()
	}
	_ = os.RemoveAll(in.Dir)
}
