//go:build unix

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/devenv"
	"github.com/outflow-dev/outflow/internal/testenv"
)

// The tests of `outflow dev` run the built binary as a user would: with
// free ports, its own throwaway PostgreSQL cluster (or DATABASE_URL), and
// then follow the commands it prints, with the real curl.

// devProcess is one running `outflow dev`.
type devProcess struct {
	t       *testing.T
	cmd     *exec.Cmd
	started time.Time
	exited  chan struct{}
	exitErr error
	stderr  *lockedBuffer

	mu    sync.Mutex
	lines []string
	// grew is signalled (never blocking) when a stdout line arrives.
	grew chan struct{}
}

// devEnv is the environment of a dev process: ours without anything that
// would change what `outflow dev` does (DATABASE_URL, OUTFLOW_*), plus extra.
func devEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "DATABASE_URL=") || (strings.HasPrefix(kv, "OUTFLOW_") && !strings.HasPrefix(kv, "OUTFLOW_TEST_")) {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// startDev runs `outflow dev args...` in its own process group; cleanup
// kills whatever is left of it.
func startDev(t *testing.T, env []string, args ...string) *devProcess {
	t.Helper()
	p := &devProcess{t: t, stderr: &lockedBuffer{}, exited: make(chan struct{}), grew: make(chan struct{}, 1)}
	p.cmd = exec.Command(outflowBinary(t), append([]string{"dev"}, args...)...)
	p.cmd.Env = env
	p.cmd.Stderr = p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
			select {
			case p.grew <- struct{}{}:
			default:
			}
		}
		p.exitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.exited
		}
		if t.Failed() {
			t.Logf("outflow dev stdout:\n%s\nstderr (tail):\n%s", strings.Join(p.snapshot(), "\n"), tail(p.stderr.String(), 4000))
		}
	})
	return p
}

func (p *devProcess) snapshot() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// waitLine waits until a stdout line matches re and returns it, failing
// the test after timeout or when the process exits first.
func (p *devProcess) waitLine(re *regexp.Regexp, timeout time.Duration) string {
	p.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		for _, l := range p.snapshot() {
			if re.MatchString(l) {
				return l
			}
		}
		select {
		case <-p.grew:
		case <-p.exited:
			p.t.Fatalf("outflow dev exited (%v) before printing a line matching %q", p.exitErr, re)
		case <-deadline.C:
			p.t.Fatalf("outflow dev printed no line matching %q within %s", re, timeout)
		}
	}
}

// interrupt sends SIGINT, as Ctrl-C does, and waits for the exit.
func (p *devProcess) interrupt(timeout time.Duration) (time.Duration, error) {
	p.t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.exited:
		return time.Since(start), p.exitErr
	case <-time.After(timeout):
		p.t.Fatalf("outflow dev did not exit within %s of SIGINT", timeout)
		return 0, nil
	}
}

// findCommand returns the printed command with the prefix whose text
// contains every part.
func findCommand(t *testing.T, cmds []string, prefix string, parts ...string) string {
	t.Helper()
next:
	for _, c := range cmds {
		if !strings.HasPrefix(c, prefix) {
			continue
		}
		for _, p := range parts {
			if !strings.Contains(c, p) {
				continue next
			}
		}
		return c
	}
	t.Fatalf("no printed command starts with %q and contains %q; commands:\n%s", prefix, parts, strings.Join(cmds, "\n"))
	return ""
}

// requireDevTools skips the test without the given programs, or fails it
// under CI=true, where a test must never skip for want of a tool.
func requireDevTools(t *testing.T, tools ...string) {
	t.Helper()
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	// No PostgreSQL is needed: outflow dev downloads one where none is
	// installed (TestDevDownloadsPostgres).
	if len(missing) == 0 {
		return
	}
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatalf("%s missing and CI=%s, where tests must not skip", strings.Join(missing, ", "), os.Getenv("CI"))
	}
	t.Skipf("%s missing", strings.Join(missing, ", "))
}

// runShell runs a printed command with bash, as a user pasting it would.
func runShell(ctx context.Context, t *testing.T, script string) []byte {
	t.Helper()
	cmd := exec.CommandContext(ctx, "bash", "-c", "set -eo pipefail\n"+script)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s\nfailed: %v\n%s%s", script, err, out, stderr.Bytes())
	}
	return out
}

// followShell starts a printed command that streams (curl -N, grpcurl) in
// its own process group and returns its stdout lines; cleanup kills it.
func followShell(t *testing.T, env []string, script string) <-chan string {
	t.Helper()
	cmd := exec.Command("bash", "-c", script)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // the test stopped listening
			}
		}
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s\nstderr: %s", script, tail(stderr.String(), 2000))
		}
	})
	return lines
}

var (
	devReadyRE    = regexp.MustCompile("^" + regexp.QuoteMeta(devReadyLine))
	devBlockEndRE = regexp.MustCompile(`^curl -s http://\S+/openapi\.json$`)
	devClusterRE  = regexp.MustCompile(`throwaway cluster in (\S+)/pg\)`)
)

// TestDevQuickstart is the quickstart a user follows: `outflow dev
// --receiver`, then the printed commands. A webhook subscription's events
// must reach the demo receiver signed and enriched with a consistent
// vector, a stream subscription's events must arrive over HTTP and gRPC,
// and Ctrl-C must leave nothing behind.
func TestDevQuickstart(t *testing.T) {
	t.Parallel()
	requireDevTools(t, "curl", "bash")
	p := startDev(t, devEnv(), "--receiver", "--http-addr", freeAddr(t), "--grpc-addr", freeAddr(t))
	p.waitLine(devReadyRE, 30*time.Second)
	startup := time.Since(p.started)
	p.waitLine(devBlockEndRE, 5*time.Second) // the block is one write; this is at once
	out := p.snapshot()
	cmds := printedCommands(out)
	var tmpDir string
	for _, l := range out {
		if m := devClusterRE.FindStringSubmatch(l); m != nil {
			tmpDir = m[1]
		}
	}
	if tmpDir == "" {
		t.Fatal("the instructions do not say where the throwaway cluster is")
	}
	t.Cleanup(func() { _ = os.RemoveAll(tmpDir) }) // only if the test failed before the check
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	// 1. The webhook subscription, exactly as printed.
	created := time.Now()
	var sub struct{ ID, Secret string }
	body := runShell(ctx, t, findCommand(t, cmds, "curl -sS -X POST", `"webhook"`))
	if err := json.Unmarshal(body, &sub); err != nil || !strings.HasPrefix(sub.ID, "sub_") || !strings.HasPrefix(sub.Secret, "whsec_") {
		t.Fatalf("creating the webhook subscription answered %s (%v)", body, err)
	}
	line := p.waitLine(regexp.MustCompile(`^receiver: verified evt_\S+ sub=`+sub.ID+` fv=`+devenv.DemoFeatureView+` user_id=u\d+ .*\| feature_vector=consistent attempts=\d+ `), 10*time.Second)
	firstEvent := time.Since(created)
	t.Logf("outflow dev was ready %.2fs after it started; the first signed, consistent event reached the receiver %.2fs after the subscription was created",
		startup.Seconds(), firstEvent.Seconds())
	t.Logf("printed: %s", line)

	// A first-time shopper's event arrives only once its values are
	// materialised: consistent, with the record's own cart values (never
	// null), and — at least once — after more than one GetFeatures call.
	first := p.waitNewcomer(sub.ID, 30*time.Second)
	t.Logf("a first-time shopper's event: %s", first)

	// 2. The stream subscription, followed with the printed curl -N.
	env := devEnv()
	lines := followShell(t, env, findCommand(t, cmds, "SUB=$(curl")+"\n"+findCommand(t, cmds, "curl -N", "/events:stream"))
	streamSub := devNextLine(t, lines, 10*time.Second)
	if !strings.HasPrefix(streamSub, "sub_") {
		t.Fatalf("the printed SUB=$(...) line echoed %q, want a subscription id", streamSub)
	}
	checkStreamEvent(t, []byte(devNextEvent(t, lines, 15*time.Second)), streamSub)

	// The printed grpcurl, with the grpcurl pinned in tools/go.mod standing
	// in for one on PATH.
	if _, err := exec.LookPath("go"); err == nil {
		shim := t.TempDir()
		modfile, err := filepath.Abs("../../tools/go.mod")
		if err != nil {
			t.Fatal(err)
		}
		script := "#!/bin/sh\nexec go tool -modfile=" + modfile + " grpcurl \"$@\"\n"
		if err := os.WriteFile(filepath.Join(shim, "grpcurl"), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		genv := append(devEnv(), "PATH="+shim+string(os.PathListSeparator)+os.Getenv("PATH"))
		glines := followShell(t, genv, "SUB="+streamSub+"\n"+findCommand(t, cmds, "grpcurl -plaintext", "StreamEvents"))
		deadline := time.Now().Add(90 * time.Second) // the first `go tool grpcurl` may compile it
		for found := false; !found; {
			l := devNextLine(t, glines, time.Until(deadline))
			found = strings.Contains(l, `"id": "evt_`)
		}
	}

	// Other printed commands work too.
	for _, c := range []string{
		findCommand(t, cmds, "curl -sS -H", "/v1/subscriptions?page_size=10"),
		findCommand(t, cmds, "curl -s http", "/metrics"),
		findCommand(t, cmds, "curl -s http", "/openapi.json"),
	} {
		if out := runShell(ctx, t, c); len(out) == 0 {
			t.Errorf("%s printed nothing", c)
		}
	}
	for _, l := range p.snapshot() {
		if strings.HasPrefix(l, "receiver: REJECTED") {
			t.Errorf("the receiver rejected a request: %s", l)
		}
	}

	// 3. Ctrl-C: a clean exit that leaves no cluster, process or directory.
	pgPids := processesMentioning(t, tmpDir)
	if len(pgPids) == 0 {
		t.Errorf("no running process mentions %s: where is the throwaway PostgreSQL?", tmpDir)
	}
	took, err := p.interrupt(20 * time.Second)
	if err != nil {
		t.Fatalf("outflow dev exited with %v after SIGINT, want status 0", err)
	}
	t.Logf("outflow dev stopped %.2fs after SIGINT", took.Seconds())
	if _, err := os.Stat(tmpDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s is still there after outflow dev stopped (stat: %v)", tmpDir, err)
	}
	if left := processesMentioning(t, tmpDir); len(left) > 0 {
		t.Errorf("processes of the throwaway cluster are still running: %v", left)
	}
}

// TestDevSecondInterruptForces: a second Ctrl-C during the graceful stop
// (held open here by a stream client, which the API gives 2 s) exits at
// once with status 130, and still removes the cluster and the directory.
func TestDevSecondInterruptForces(t *testing.T) {
	t.Parallel()
	requireDevTools(t, "curl", "bash")
	p := startDev(t, devEnv(), "--http-addr", freeAddr(t), "--grpc-addr", freeAddr(t), "--rate", "20")
	p.waitLine(devReadyRE, 30*time.Second)
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
	cmds := printedCommands(out)
	lines := followShell(t, devEnv(), findCommand(t, cmds, "SUB=$(curl")+"\n"+findCommand(t, cmds, "curl -N", "/events:stream"))
	devNextLine(t, lines, 10*time.Second) // the subscription id
	devNextLine(t, lines, 15*time.Second) // an event: the stream is open

	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.stderr.String(), "Ctrl-C again to force") {
		if time.Now().After(deadline) {
			t.Fatal("outflow dev did not start stopping within 10s of SIGINT")
		}
		time.Sleep(10 * time.Millisecond) // polling another process's output
	}
	took, err := p.interrupt(5 * time.Second)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 130 {
		t.Fatalf("after a second SIGINT: %v, want exit status 130", err)
	}
	t.Logf("the second SIGINT ended outflow dev in %s", took)
	if _, err := os.Stat(tmpDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s is still there after the forced exit (stat: %v)", tmpDir, err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for left := processesMentioning(t, tmpDir); len(left) > 0; left = processesMentioning(t, tmpDir) {
		if time.Now().After(deadline) {
			t.Fatalf("processes of the throwaway cluster outlived the forced exit: %v", left)
		}
		time.Sleep(20 * time.Millisecond) // the killed processes are reaped by init
	}
}

// waitNewcomer waits for the receiver to print an event of a first-time
// shopper (user_id=new<k>) of subscription subID that took more than one
// GetFeatures call, and returns its line. Every first-time shopper's line
// seen meanwhile must show a consistent vector holding the record's own
// cart_count and cart_value: a first event delivered with nulls, or marked
// consistent before its values exist, fails the test at once.
func (p *devProcess) waitNewcomer(subID string, timeout time.Duration) string {
	p.t.Helper()
	lineRE := regexp.MustCompile(`^receiver: verified evt_\S+ sub=` + regexp.QuoteMeta(subID) + ` fv=` + devenv.DemoFeatureView +
		` user_id=(new\d+) cart_count=(\S+) cart_value=(\S+) \| feature_vector=(\S+) attempts=(\d+) (.*)$`)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	checked := map[string]bool{}
	for {
		for _, l := range p.snapshot() {
			m := lineRE.FindStringSubmatch(l)
			if m == nil || checked[l] {
				continue
			}
			checked[l] = true
			user, count, value, state, vector := m[1], m[2], m[3], m[4], " "+m[6]+" "
			attempts, _ := strconv.Atoi(m[5])
			wantValue, _ := strconv.ParseFloat(value, 64)
			if state != "consistent" || !strings.Contains(vector, " "+devenv.DemoFeatureView+".cart_count="+count+" ") ||
				!strings.Contains(vector, " "+devenv.DemoFeatureView+".cart_value="+strconv.FormatFloat(wantValue, 'f', -1, 64)+" ") {
				p.t.Fatalf("first-time shopper %s's event was delivered without its own values (cart_count=%s cart_value=%s):\n%s", user, count, value, l)
			}
			if attempts > 1 {
				return l
			}
			p.t.Logf("first-time shopper %s's values were already materialised at the first call: %s", user, l)
		}
		select {
		case <-p.grew:
		case <-p.exited:
			p.t.Fatalf("outflow dev exited (%v) before a first-time shopper's event arrived", p.exitErr)
		case <-deadline.C:
			p.t.Fatalf("no first-time shopper's event arrived after more than one GetFeatures call within %s", timeout)
		}
	}
}

// devNextLine returns the next line, failing the test after timeout.
func devNextLine(t *testing.T, lines <-chan string, timeout time.Duration) string {
	t.Helper()
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatal("the command ended before printing the expected line")
		}
		return l
	case <-time.After(timeout):
		t.Fatalf("no line within %s", timeout)
		return ""
	}
}

// devNextEvent returns the next NDJSON line of a stream that is not a
// heartbeat: a stream opens with one, to say it reads the source, and sends
// more while idle.
func devNextEvent(t *testing.T, lines <-chan string, timeout time.Duration) string {
	t.Helper()
	for {
		l := devNextLine(t, lines, timeout)
		if !strings.HasPrefix(l, `{"heartbeat_time":`) {
			return l
		}
	}
}

// checkStreamEvent checks one NDJSON line of StreamEvents over HTTP: an
// enriched, consistent event of the subscription.
func checkStreamEvent(t *testing.T, line []byte, subID string) {
	t.Helper()
	// The webhook body's JSON plus resume_token (SPEC §5), no wrapper.
	var ev struct {
		ID             string `json:"id"`
		SubscriptionID string `json:"subscription_id"`
		Record         struct {
			Version         string            `json:"version"`
			FeatureViewName string            `json:"feature_view_name"`
			EntityKeys      map[string]string `json:"entity_keys"`
		} `json:"record"`
		FeatureVector *struct {
			Consistent bool `json:"consistent"`
		} `json:"feature_vector"`
		ResumeToken string `json:"resume_token"`
	}
	if err := json.Unmarshal(line, &ev); err != nil {
		t.Fatalf("stream line %s: %v", line, err)
	}
	switch {
	case !strings.HasPrefix(ev.ID, "evt_"), ev.SubscriptionID != subID, ev.ResumeToken == "":
		t.Errorf("stream line %s: not an event of %s with a resume token", line, subID)
	case ev.Record.Version != "1", ev.Record.FeatureViewName != devenv.DemoFeatureView, ev.Record.EntityKeys["user_id"] == "":
		t.Errorf("stream line %s: not a demo record", line)
	case ev.FeatureVector == nil || !ev.FeatureVector.Consistent:
		t.Errorf("stream line %s: no consistent feature_vector", line)
	}
}

// processesMentioning returns the pids of processes whose command line
// contains s (from /proc; nil where there is no /proc).
func processesMentioning(t *testing.T, s string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte(s)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestDevWithoutPostgres: with a --postgres-bin-dir that lacks the
// PostgreSQL binaries (no download then: the user chose), `outflow dev` says
// how to install them (or use DATABASE_URL) and fails, promptly and before
// binding anything for long.
func TestDevWithoutPostgres(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(outflowBinary(t), "dev", "--postgres-bin-dir", t.TempDir(),
		"--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0")
	cmd.Env = devEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("outflow dev without PostgreSQL did not exit within 30s:\n%s", stderr.String())
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("exit: %v, want status 1", err)
	}
	for _, want := range []string{"PostgreSQL server binaries", "sudo apt-get install postgresql", "DATABASE_URL=", "--postgres-bin-dir"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not contain %q:\n%s", want, stderr.String())
		}
	}
	if strings.Contains(stdout.String(), devReadyLine) {
		t.Errorf("it claims to be ready:\n%s", stdout.String())
	}
}

// TestDevWithDatabaseURL: DATABASE_URL replaces the throwaway cluster; the
// database is migrated and the gateway serves from it.
func TestDevWithDatabaseURL(t *testing.T) {
	t.Parallel()
	url := testenv.Postgres(t)
	p := startDev(t, devEnv("DATABASE_URL="+url), "--http-addr", freeAddr(t), "--grpc-addr", freeAddr(t), "--rate", "0")
	p.waitLine(devReadyRE, 30*time.Second)
	p.waitLine(devBlockEndRE, 5*time.Second)
	for _, l := range p.snapshot() {
		if devClusterRE.MatchString(l) {
			t.Errorf("a throwaway cluster was started despite DATABASE_URL: %s", l)
		}
	}
	p.waitLine(regexp.MustCompile(`PostgreSQL +the database of DATABASE_URL`), time.Second)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmds := printedCommands(p.snapshot())
	body := runShell(ctx, t, findCommand(t, cmds, "curl -sS -X POST", `"webhook"`))
	if !bytes.Contains(body, []byte(`"id":"sub_`)) {
		t.Errorf("creating a subscription answered %s", body)
	}
	// The subscription is in the database we gave.
	conn, err := connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM subscriptions`).Scan(&n); err != nil || n != 1 {
		t.Errorf("subscriptions in DATABASE_URL's database: %d (%v), want 1", n, err)
	}
	if _, err := p.interrupt(20 * time.Second); err != nil {
		t.Errorf("exit after SIGINT: %v", err)
	}
}

// TestDevFlags covers the command line: help lists every flag with its
// environment variable, and bad flags or values fail with a clear message.
func TestDevFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args       []string
		code       int
		wantOut    []string
		wantStderr []string
	}{
		{args: []string{"dev", "--help"}, code: 0, wantOut: []string{
			"--receiver (env OUTFLOW_RECEIVER)", "--database-url (env OUTFLOW_DATABASE_URL)", "DATABASE_URL",
			"--postgres-bin-dir", "--http-addr", "(default 127.0.0.1:8080)", "--grpc-addr", "(default 127.0.0.1:9090)",
			"--kafka-addr", "--featureserver-addr", "--receiver-addr", "--rate", "--users", "--new-users", "(default 0.25)", "--lag", "--lag-jitter",
			"--log-level", "(default warn)", "--log-format"}},
		{args: []string{"dev", "--bogus"}, code: 2, wantStderr: []string{"-bogus", "outflow dev --help"}},
		{args: []string{"dev", "extra"}, code: 1, wantStderr: []string{`unexpected argument "extra"`}},
		{args: []string{"dev", "--rate", "-1"}, code: 1, wantStderr: []string{"--rate"}},
		{args: []string{"dev", "--new-users", "1.5"}, code: 1, wantStderr: []string{"--new-users 1.5"}},
		{args: []string{"dev", "--source", "pulsar"}, code: 1, wantStderr: []string{`--source "pulsar": want kafka or kinesis`}},
		{args: []string{"dev", "--log-level", "loud"}, code: 1, wantStderr: []string{"--log-level"}},
		{args: []string{"demo-producer", "--help"}, code: 0, wantOut: []string{
			"--kafka-brokers (env OUTFLOW_KAFKA_BROKERS)", "--kafka-topic", "(default fv-output)", "--rate", "(default 2)",
			"--users", "--new-users", "--count", "--seed", "--log-level"}},
		{args: []string{"demo-producer", "--kafka-brokers", "127.0.0.1:1", "--new-users", "-1"}, code: 1, wantStderr: []string{"--new-users -1"}},
		{args: []string{"demo-producer"}, code: 1, wantStderr: []string{"--kafka-brokers (or OUTFLOW_KAFKA_BROKERS)"}},
		{args: []string{"demo-producer", "--kafka-brokers", "127.0.0.1:1", "--rate", "0"}, code: 1, wantStderr: []string{"--rate 0"}},
		{args: []string{"demo-producer", "--kafka-brokers=x:1", "--unknown"}, code: 2, wantStderr: []string{"-unknown"}},
		{args: []string{"help"}, code: 0, wantOut: []string{"  dev ", "  demo-producer "}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), tt.args, &stdout, &stderr)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout.String(), stderr.String())
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout.String())
				}
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
		})
	}
}

// TestDevKinesis: `outflow dev --source kinesis` runs the quickstart on a
// local Kinesis (kinesalite, started by dev itself): the printed webhook
// subscription gets signed, consistent events, and the printed stream
// subscription streams them over HTTP.
func TestDevKinesis(t *testing.T) {
	t.Parallel()
	requireDevTools(t, "curl", "bash", "node")
	dir, _ := filepath.Abs("../../.cache/kinesalite")
	if d := os.Getenv("OUTFLOW_KINESALITE_DIR"); d != "" {
		dir = d
	}
	p := startDev(t, devEnv("DATABASE_URL="+testenv.Postgres(t)), "--source", "kinesis", "--kinesalite-dir", dir, "--receiver",
		"--http-addr", freeAddr(t), "--grpc-addr", freeAddr(t), "--rate", "10")
	p.waitLine(devReadyRE, 30*time.Second)
	p.waitLine(devBlockEndRE, 5*time.Second)
	p.waitLine(regexp.MustCompile(`^  Kinesis +http://127\.0\.0\.1:\d+  \(local Kinesis; stream `+devenv.DemoTopic), time.Second)
	cmds := printedCommands(p.snapshot())
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var sub struct{ ID, Secret string }
	body := runShell(ctx, t, findCommand(t, cmds, "curl -sS -X POST", `"webhook"`))
	if err := json.Unmarshal(body, &sub); err != nil || !strings.HasPrefix(sub.ID, "sub_") {
		t.Fatalf("creating the webhook subscription answered %s (%v)", body, err)
	}
	p.waitLine(regexp.MustCompile(`^receiver: verified evt_\S+ sub=`+sub.ID+` fv=`+devenv.DemoFeatureView+` user_id=u\d+ .*\| feature_vector=consistent attempts=\d+ `), 30*time.Second)

	lines := followShell(t, devEnv(), findCommand(t, cmds, "SUB=$(curl")+"\n"+findCommand(t, cmds, "curl -N", "/events:stream"))
	streamSub := devNextLine(t, lines, 10*time.Second)
	if !strings.HasPrefix(streamSub, "sub_") {
		t.Fatalf("the printed SUB=$(...) line echoed %q, want a subscription id", streamSub)
	}
	checkStreamEvent(t, []byte(devNextEvent(t, lines, 30*time.Second)), streamSub)
	// This dev's own local Kinesis: other packages' tests may run one at
	// the same time, so a scan by name alone would blame them.
	mine := childrenMentioning(t, p.cmd.Process.Pid, "outflow-kinesalite-")
	if len(mine) == 0 {
		t.Fatal("no kinesalite child of outflow dev found while it ran")
	}
	if _, err := p.interrupt(20 * time.Second); err != nil {
		t.Errorf("exit after SIGINT: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for alive := running(mine); len(alive) > 0; alive = running(mine) {
		if time.Now().After(deadline) {
			t.Errorf("kinesalite still runs 10s after outflow dev stopped: pids %v", alive)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// childrenMentioning returns the pids of the children of ppid whose command
// line contains s.
func childrenMentioning(t *testing.T, ppid int, s string) []int {
	t.Helper()
	var out []int
	for _, pid := range processesMentioning(t, s) {
		stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so read after ')'.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(ppid) {
			out = append(out, pid)
		}
	}
	return out
}

// running returns those of pids that still exist (and are not zombies).
func running(pids []int) []int {
	var out []int
	for _, pid := range pids {
		stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if err != nil {
			continue
		}
		if fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])); len(fields) > 0 && fields[0] != "Z" {
			out = append(out, pid)
		}
	}
	return out
}
