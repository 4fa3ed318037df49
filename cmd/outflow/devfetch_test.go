//go:build unix

package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/devenv"
)

// TestDevDownloadsPostgres is the quickstart on a machine without the
// PostgreSQL server binaries (--postgres-download stands in for their
// absence, which the choice itself is tested with in package devenv): the
// build of Maven Central runs the throwaway cluster, as an unprivileged
// user under root, the first webhook arrives, Ctrl-C leaves nothing
// behind, and nothing on stderr until then is a warning or an error.
//
// The build lands in the user cache directory that outflow dev itself uses,
// so only the first run on a machine downloads it (15 MB, a few seconds to
// unpack); every later run, of this test or of `make dev`, is warm.
func TestDevDownloadsPostgres(t *testing.T) {
	t.Parallel()
	requireDevTools(t, "curl", "bash")
	p := startDev(t, devEnv(), "--postgres-download", "--receiver", "--http-addr", freeAddr(t), "--grpc-addr", freeAddr(t))
	p.waitLine(devReadyRE, 5*time.Minute) // a cold cache downloads and unpacks first
	t.Logf("ready %.2fs after the start", time.Since(p.started).Seconds())
	p.waitLine(devBlockEndRE, 5*time.Second)
	out := p.snapshot()
	var tmpDir string
	for _, l := range out {
		if m := devClusterRE.FindStringSubmatch(l); m != nil {
			tmpDir = m[1]
		}
	}
	if tmpDir == "" {
		t.Fatal("the instructions do not say where the throwaway cluster is")
	}
	t.Cleanup(func() { _ = os.RemoveAll(tmpDir) })

	// The server is the downloaded build (from the cache, or from a copy in
	// the cluster's directory where the cache is closed to its user).
	pids := processesMentioning(t, tmpDir)
	if len(pids) == 0 {
		t.Fatalf("no running process mentions %s: where is the throwaway PostgreSQL?", tmpDir)
	}
	fromBuild := false
	for _, pid := range pids {
		exe, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "exe"))
		if err != nil {
			continue
		}
		if strings.Contains(exe, "postgres-"+devenv.PostgresVersion) || strings.HasPrefix(exe, filepath.Join(tmpDir, "pg", "postgres")) {
			fromBuild = true
		}
		if os.Geteuid() == 0 {
			if st, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); err == nil && ownerOf(st) == 0 {
				t.Errorf("process %d (%s) runs as root", pid, exe)
			}
		}
	}
	if !fromBuild {
		t.Errorf("no process of the cluster runs the downloaded PostgreSQL %s", devenv.PostgresVersion)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var sub struct{ ID string }
	body := runShell(ctx, t, findCommand(t, printedCommands(out), "curl -sS -X POST", `"webhook"`))
	if err := json.Unmarshal(body, &sub); err != nil || !strings.HasPrefix(sub.ID, "sub_") {
		t.Fatalf("creating the webhook subscription answered %s (%v)", body, err)
	}
	p.waitLine(regexp.MustCompile(`^receiver: verified evt_\S+ sub=`+sub.ID+` .*\| feature_vector=consistent `), 30*time.Second)

	stderr := p.stderr.String()
	if strings.Contains(stderr, "downloading PostgreSQL") && !strings.Contains(stderr, "(100%)") {
		t.Errorf("the download's progress never reached 100%%:\n%s", stderr)
	}
	for l := range strings.Lines(stderr) {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			t.Errorf("outflow dev logged a warning or error while starting and delivering: %s", l)
		}
	}

	if _, err := p.interrupt(20 * time.Second); err != nil {
		t.Fatalf("outflow dev exited with %v after SIGINT, want status 0", err)
	}
	if _, err := os.Stat(tmpDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s is still there after outflow dev stopped (stat: %v)", tmpDir, err)
	}
	if left := processesMentioning(t, tmpDir); len(left) > 0 {
		t.Errorf("processes of the throwaway cluster are still running: %v", left)
	}
}

// ownerOf is the owner of a file; of /proc/<pid>, the process's user.
func ownerOf(fi os.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}
