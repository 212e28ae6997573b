package postfixtest

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"sync"
)

// Test credentials the instance accepts with AUTH PLAIN and AUTH LOGIN.
const (
	AuthUser     = "alice"
	AuthPassword = "secret"
)

// authServer answers Postfix's SASL requests over Dovecot's authentication
// protocol (smtpd_sasl_type = dovecot), accepting only AuthUser.
type authServer struct {
	l     net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func startAuthServer() (*authServer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	a := &authServer{l: l}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			a.mu.Lock()
			a.conns = append(a.conns, conn)
			a.mu.Unlock()
			a.wg.Add(1)
			go func() {
				defer a.wg.Done()
				defer conn.Close()
				serveAuth(conn)
			}()
		}
	}()
	return a, nil
}

func (a *authServer) addr() string { return a.l.Addr().String() }

func (a *authServer) close() {
	_ = a.l.Close()
	a.mu.Lock()
	for _, c := range a.conns {
		_ = c.Close()
	}
	a.mu.Unlock()
	a.wg.Wait()
}

// loginState is where an AUTH LOGIN exchange stands.
type loginState struct{ user string }

func serveAuth(conn net.Conn) {
	fmt.Fprint(conn, "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nSPID\t1\nCUID\t1\nCOOKIE\t00000000000000000000000000000000\nDONE\n")
	logins := map[string]*loginState{}
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		switch {
		case f[0] == "AUTH" && len(f) >= 3:
			id, mech := f[1], strings.ToUpper(f[2])
			resp, hasResp := param(f[3:], "resp")
			switch mech {
			case "PLAIN":
				if !hasResp {
					fmt.Fprintf(conn, "CONT\t%s\t\n", id)
					logins[id] = &loginState{user: "\x00plain"}
					continue
				}
				answer(conn, id, plainOK(resp))
			case "LOGIN":
				logins[id] = &loginState{}
				fmt.Fprintf(conn, "CONT\t%s\t%s\n", id, base64.StdEncoding.EncodeToString([]byte("Username:")))
			default:
				fmt.Fprintf(conn, "FAIL\t%s\n", id)
			}
		case f[0] == "CONT" && len(f) >= 3:
			id, st := f[1], logins[f[1]]
			switch {
			case st == nil:
				fmt.Fprintf(conn, "FAIL\t%s\n", id)
			case st.user == "\x00plain":
				delete(logins, id)
				answer(conn, id, plainOK(f[2]))
			case st.user == "":
				b, _ := base64.StdEncoding.DecodeString(f[2])
				st.user = string(b)
				fmt.Fprintf(conn, "CONT\t%s\t%s\n", id, base64.StdEncoding.EncodeToString([]byte("Password:")))
			default:
				delete(logins, id)
				b, _ := base64.StdEncoding.DecodeString(f[2])
				answer(conn, id, st.user == AuthUser && string(b) == AuthPassword)
			}
		}
	}
}

func param(fields []string, name string) (string, bool) {
	for _, f := range fields {
		if v, ok := strings.CutPrefix(f, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func plainOK(b64 string) bool {
	b, err := base64.StdEncoding.DecodeString(b64)
	return err == nil && string(b) == "\x00"+AuthUser+"\x00"+AuthPassword
}

func answer(conn net.Conn, id string, ok bool) {
	if ok {
		fmt.Fprintf(conn, "OK\t%s\tuser=%s\n", id, AuthUser)
		return
	}
	fmt.Fprintf(conn, "FAIL\t%s\treason=bad credentials\n", id)
}
