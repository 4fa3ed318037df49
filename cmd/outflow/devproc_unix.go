//go:build unix

package main

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// postgresAccount returns the account the PostgreSQL processes run as: the
// postgres user when we are root (initdb and postgres refuse to run as
// root, as scripts/testenv.sh knows), else nil: ourselves.
func postgresAccount() (*pgAccount, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, PostgreSQL must run as another user, but there is no postgres user: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("the postgres user has a non-numeric uid %q or gid %q", u.Uid, u.Gid)
	}
	return &pgAccount{uid: uint32(uid), gid: uint32(gid)}, nil
}

// chownTo hands path to the account (nil: leave it).
func chownTo(path string, acct *pgAccount) error {
	if acct == nil {
		return nil
	}
	return os.Chown(path, int(acct.uid), int(acct.gid))
}

// postgresProcAttr runs a PostgreSQL program as acct; the server (server
// true) also gets its own process group, so a Ctrl-C in the terminal
// reaches `outflow dev` only and the cluster stops after the gateway that
// uses it, and on Linux a parent-death signal (see setPdeathsig).
func postgresProcAttr(acct *pgAccount, server bool) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: server}
	if acct != nil {
		attr.Credential = &syscall.Credential{Uid: acct.uid, Gid: acct.gid}
	}
	if server {
		setPdeathsig(attr)
	}
	return attr
}

// killProcessGroup sends SIGKILL to the process group p leads.
func killProcessGroup(p *os.Process) error {
	return syscall.Kill(-p.Pid, syscall.SIGKILL)
}
