// Package kinesalite runs kinesalite, a local Kinesis implementation from
// npm, as a child process on a free loopback port: `outflow dev --source
// kinesis` uses it (scripts/testenv.sh runs the same launcher for tests).
// It needs node and the package installed by scripts/kinesalite-deps.sh.
//
// The launcher (kinesalite.js, embedded) binds 127.0.0.1 only, where
// kinesalite's own CLI binds every interface, keeps the data in memory, and
// makes kinesalite answer GetShardIterator AT_TIMESTAMP past the newest
// record as Kinesis does (see the script).
package kinesalite

import (
	"bufio"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

//go:embed kinesalite.js
var launcher []byte

// startTimeout bounds how long kinesalite gets to print its port; it
// normally takes a fraction of a second.
const startTimeout = 30 * time.Second

// stopTimeout is how long Close waits after SIGTERM before SIGKILL.
const stopTimeout = 5 * time.Second

// ErrNotInstalled is returned by Start when node or the kinesalite package
// cannot be found.
var ErrNotInstalled = errors.New("kinesalite: not installed")

// Config configures Start.
type Config struct {
	// Dir is where scripts/kinesalite-deps.sh installed the package (it
	// holds node_modules/kinesalite). Required.
	Dir string
	// Stderr receives kinesalite's own error output. Default: discarded.
	Stderr io.Writer
}

// Server is a running kinesalite.
type Server struct {
	cmd      *exec.Cmd
	endpoint string
	tmp      string
	exited   chan struct{}
}

// Start runs kinesalite and returns once it listens. ctx bounds the start
// only; Close stops the process.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, fmt.Errorf("%w: node is not on PATH (Debian: apt-get install nodejs npm)", ErrNotInstalled)
	}
	modules := filepath.Join(cfg.Dir, "node_modules")
	if _, err := os.Stat(filepath.Join(modules, "kinesalite", "package.json")); err != nil {
		return nil, fmt.Errorf("%w: no kinesalite package in %s (run scripts/kinesalite-deps.sh)", ErrNotInstalled, cfg.Dir)
	}
	tmp, err := os.MkdirTemp("", "outflow-kinesalite-")
	if err != nil {
		return nil, fmt.Errorf("kinesalite: %w", err)
	}
	script := filepath.Join(tmp, "kinesalite.js")
	if err := os.WriteFile(script, launcher, 0o600); err != nil {
		_ = os.RemoveAll(tmp)
		return nil, fmt.Errorf("kinesalite: writing the launcher: %w", err)
	}
	cmd := exec.Command(node, script, "0")
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	cmd.Stderr = cfg.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		_ = os.RemoveAll(tmp)
		return nil, fmt.Errorf("kinesalite: %w", err)
	}
	if err := cmd.Start(); err != nil {
		_ = os.RemoveAll(tmp)
		return nil, fmt.Errorf("kinesalite: starting node: %w", err)
	}
	s := &Server{cmd: cmd, tmp: tmp, exited: make(chan struct{})}
	port := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			port <- strings.TrimSpace(sc.Text())
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
		close(s.exited)
	}()
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case p := <-port:
		if n, err := strconv.Atoi(p); err != nil || n <= 0 || n > 65535 {
			s.Close()
			return nil, fmt.Errorf("kinesalite: printed %q, not a port", p)
		}
		s.endpoint = "http://127.0.0.1:" + p
		return s, nil
	case <-s.exited:
		s.Close()
		return nil, errors.New("kinesalite: exited while starting")
	case <-timer.C:
		s.Close()
		return nil, fmt.Errorf("kinesalite: no port printed within %s", startTimeout)
	case <-ctx.Done():
		s.Close()
		return nil, ctx.Err()
	}
}

// Endpoint returns the URL of the local Kinesis, http://127.0.0.1:<port>.
func (s *Server) Endpoint() string { return s.endpoint }

// Close stops kinesalite (SIGTERM, then SIGKILL after 5 s) and removes the
// launcher. It is safe to call more than once.
func (s *Server) Close() {
	select {
	case <-s.exited:
	default:
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(stopTimeout):
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.exited
		}
	}
	_ = os.RemoveAll(s.tmp)
}
