//go:build unix

package devenv

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// postgresAccount returns the account the PostgreSQL processes run as when
// we are root (initdb and postgres refuse to run as root, as
// scripts/testenv.sh knows): the postgres user where a PostgreSQL package
// created one, else nobody, which every Unix has. Not root: nil, ourselves.
func postgresAccount() (*pgAccount, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	var errs []error
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil || uid == 0 {
			errs = append(errs, fmt.Errorf("user %s has uid %q and gid %q", name, u.Uid, u.Gid))
			continue
		}
		return &pgAccount{uid: uint32(uid), gid: uint32(gid)}, nil
	}
	return nil, fmt.Errorf("running as root, PostgreSQL must run as another user, but there is neither a postgres user nor nobody: %w", errors.Join(errs...))
}

// chownTo hands path to the account (nil: leave it).
func chownTo(path string, acct *pgAccount) error {
	if acct == nil {
		return nil
	}
	return os.Chown(path, int(acct.uid), int(acct.gid))
}

// reachable reports whether acct (nil: ourselves) can search every directory
// from / down to dir, judged by the permission bits (not by ACLs or
// supplementary groups, which can only make more reachable).
func reachable(dir string, acct *pgAccount) bool {
	if acct == nil {
		return true
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for {
		fi, err := os.Stat(dir)
		if err != nil {
			return false
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return false
		}
		mode := fi.Mode().Perm()
		var bit os.FileMode = 0o001
		switch {
		case st.Uid == acct.uid:
			bit = 0o100
		case st.Gid == acct.gid:
			bit = 0o010
		}
		if mode&bit == 0 {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
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

// lockFile takes an exclusive lock on path (created if need be), waiting for
// it, so that parallel `outflow dev` runs download PostgreSQL once. The
// returned func releases it.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
