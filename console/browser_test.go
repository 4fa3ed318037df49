//go:build unix

package console_test

import (
	"bufio"
	"bytes"
	"context"
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

	"github.com/outflow-dev/outflow/internal/testenv"
)

// TestConsoleInBrowser drives the console in a real browser, Debian's
// Chromium under Playwright (testdata/browser.mjs), against `outflow dev
// --receiver` built from this tree: sign in by keyboard, create
// subscriptions (the API's field violations shown next to the fields), see
// deliveries arrive in the last-hour chart, test event, pause and resume,
// rotate, edit, replay, dead letters retried one by one and all at once, a
// stream's live tail, with axe-core checking accessibility on each page.
// Screenshots go to $OUTFLOW_TEST_ARTIFACTS/console, or testdata/out/.
//
// It needs node, chromium and the packages scripts/browser-deps.sh installs
// (make test runs it); without them it skips, or fails under CI=true.
func TestConsoleInBrowser(t *testing.T) {
	t.Parallel()
	chromium := cmp(os.Getenv("CHROMIUM"), "/usr/bin/chromium")
	depsDir, err := filepath.Abs(cmp(os.Getenv("OUTFLOW_BROWSER_DIR"), "../.cache/browser"))
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	if _, err := exec.LookPath("node"); err != nil {
		missing = append(missing, "node")
	}
	if _, err := os.Stat(chromium); err != nil {
		missing = append(missing, chromium)
	}
	for _, pkg := range []string{"playwright-core", "axe-core"} {
		if _, err := os.Stat(filepath.Join(depsDir, "node_modules", pkg, "package.json")); err != nil {
			missing = append(missing, filepath.Join(depsDir, "node_modules", pkg))
		}
	}
	if len(missing) > 0 {
		if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
			t.Fatalf("%s missing and CI=%s, where tests must not skip: run scripts/browser-deps.sh (make test does)", strings.Join(missing, ", "), os.Getenv("CI"))
		}
		t.Skipf("%s missing; scripts/browser-deps.sh installs them (make test runs it)", strings.Join(missing, ", "))
	}
	databaseURL := testenv.Postgres(t)
	out := filepath.Join("testdata", "out")
	if dir := os.Getenv("OUTFLOW_TEST_ARTIFACTS"); dir != "" {
		out = filepath.Join(dir, "console")
	}
	if out, err = filepath.Abs(out); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(out); err != nil {
		t.Fatal(err)
	}

	dev := startDev(t, buildOutflow(t), databaseURL)
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "testdata/browser.mjs")
	cmd.Env = append(os.Environ(),
		"OUTFLOW_URL="+dev.api, "OUTFLOW_API_KEY="+dev.key, "RECEIVER_URL="+dev.receiver,
		"OUT_DIR="+out, "BROWSER_DEPS_DIR="+depsDir, "CHROMIUM="+chromium)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	t.Logf("browser.mjs:\n%s", stdout)
	if err != nil {
		t.Fatalf("browser.mjs: %v\n%s\noutflow dev stderr (tail):\n%s", err, stderr.Bytes(), tail(dev.stderr.String(), 3000))
	}
	lines := strings.Split(strings.TrimSpace(string(stdout)), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, `{"ok":true`) {
		t.Fatalf("browser.mjs ended without its summary line: %s", last)
	}
	shots, _ := filepath.Glob(filepath.Join(out, "*.png"))
	if len(shots) < 6 {
		t.Errorf("%d screenshots in %s, want at least 6", len(shots), out)
	}
	t.Logf("%d screenshots in %s", len(shots), out)
	// The dev receiver verified the signatures of what the console's
	// subscription received.
	if !dev.printed(dev.api + "/console/") {
		t.Errorf("outflow dev's instructions do not name the console, %s/console/", dev.api)
	}
	if !dev.printed("receiver: verified evt_") {
		t.Error(`outflow dev's receiver printed no "receiver: verified evt_" line`)
	}
	dev.stop(t)
}

// devRun is a running `outflow dev`, and what it printed.
type devRun struct {
	cmd                *exec.Cmd
	api, key, receiver string
	stderr             *syncBuffer
	stdout             *syncBuffer
	exited             chan struct{}
}

var (
	apiRE      = regexp.MustCompile(`^\s+REST API\s+(http://\S+)`)
	keyRE      = regexp.MustCompile(`^\s+API key\s+(ofk_\S+)`)
	receiverRE = regexp.MustCompile(`^\s+Receiver\s+(http://\S+)`)
)

// startDev runs `outflow dev --receiver` on free ports over databaseURL and
// waits for its printed addresses and key.
func startDev(t *testing.T, binary, databaseURL string) *devRun {
	t.Helper()
	d := &devRun{stderr: &syncBuffer{}, stdout: &syncBuffer{}, exited: make(chan struct{})}
	d.cmd = exec.Command(binary, "dev", "--receiver", "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0",
		"--database-url", databaseURL, "--rate", "4")
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DATABASE_URL=") && (!strings.HasPrefix(kv, "OUTFLOW_") || strings.HasPrefix(kv, "OUTFLOW_TEST_")) {
			env = append(env, kv)
		}
	}
	d.cmd.Env = env
	d.cmd.Stderr = d.stderr
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pipe, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	found := make(chan struct{})
	go func() {
		defer close(d.exited)
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var once sync.Once
		for sc.Scan() {
			line := sc.Text()
			d.stdout.WriteString(line + "\n")
			if m := apiRE.FindStringSubmatch(line); m != nil {
				d.api = m[1]
			}
			if m := keyRE.FindStringSubmatch(line); m != nil {
				d.key = m[1]
			}
			if m := receiverRE.FindStringSubmatch(line); m != nil {
				d.receiver = m[1]
				once.Do(func() { close(found) })
			}
		}
		_ = d.cmd.Wait()
	}()
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
			<-d.exited
		}
	})
	select {
	case <-found:
	case <-d.exited:
		t.Fatalf("outflow dev exited before it was ready:\n%s\n%s", d.stdout.String(), tail(d.stderr.String(), 3000))
	case <-time.After(2 * time.Minute):
		t.Fatalf("outflow dev printed no addresses within 2 minutes:\n%s\n%s", d.stdout.String(), tail(d.stderr.String(), 3000))
	}
	if d.api == "" || d.key == "" {
		t.Fatalf("outflow dev's instructions lack the API address or key:\n%s", d.stdout.String())
	}
	return d
}

func (d *devRun) printed(s string) bool { return strings.Contains(d.stdout.String(), s) }

// stop interrupts outflow dev as Ctrl-C does and waits for it to clean up.
func (d *devRun) stop(t *testing.T) {
	t.Helper()
	_ = d.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-d.exited:
	case <-time.After(time.Minute):
		t.Error("outflow dev did not stop within a minute of SIGINT")
	}
}

// buildOutflow builds the binary from this tree into the test's temporary
// directory.
func buildOutflow(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "outflow")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/outflow")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func cmp(v, fallback string) string {
	if v == "" {
		return fallback
	}
	return v
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// syncBuffer is a bytes.Buffer safe for a writer and readers at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) WriteString(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.WriteString(s)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
