//go:build !unix

package devenv

import (
	"errors"
	"os"
	"syscall"
)

// postgresAccount fails outside Unix: the throwaway cluster's process
// handling (run as an unprivileged user, own process group) is Unix's.
func postgresAccount() (*pgAccount, error) {
	return nil, errors.New("the throwaway PostgreSQL cluster of outflow dev needs a Unix system; set DATABASE_URL to a database instead")
}

func chownTo(string, *pgAccount) error { return nil }

func reachable(string, *pgAccount) bool { return true }

func postgresProcAttr(*pgAccount, bool) *syscall.SysProcAttr { return nil }

func killProcessGroup(p *os.Process) error { return p.Kill() }

// lockFile does not lock outside Unix: parallel first runs may each
// download PostgreSQL; the cache stays whole (see FetchPostgres).
func lockFile(string) (func(), error) { return func() {}, nil }
