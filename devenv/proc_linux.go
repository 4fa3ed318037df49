package devenv

import "syscall"

// setPdeathsig asks the kernel to send the throwaway PostgreSQL server
// SIGQUIT (immediate shutdown) when the thread that started it dies, which
// Postgres.launch arranges to be when `outflow dev` dies, however it
// dies: even a kill -9 leaves no server behind.
func setPdeathsig(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGQUIT }
