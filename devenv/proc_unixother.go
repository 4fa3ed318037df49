//go:build unix && !linux

package devenv

import "syscall"

// setPdeathsig does nothing outside Linux, which alone has a parent-death
// signal: there a kill -9 of `outflow dev` leaves its PostgreSQL server
// running until it is stopped by hand (a Ctrl-C stops it).
func setPdeathsig(*syscall.SysProcAttr) {}
