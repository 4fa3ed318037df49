package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// The end-to-end tests run the real binary as a separate process (so it can
// be killed with SIGKILL) against the test environment's PostgreSQL and
// Kafka.

var (
	binaryOnce sync.Once
	binaryPath string
	binaryErr  error
	binaryDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binaryDir != "" {
		_ = os.RemoveAll(binaryDir)
	}
	os.Exit(code)
}

// outflowBinary builds ./cmd/outflow once per test run.
func outflowBinary(t *testing.T) string {
	t.Helper()
	binaryOnce.Do(func() {
		binaryDir, binaryErr = os.MkdirTemp("", "outflow-e2e-")
		if binaryErr != nil {
			return
		}
		binaryPath = filepath.Join(binaryDir, "outflow")
		out, err := exec.Command("go", "build", "-o", binaryPath, ".").CombinedOutput()
		if err != nil {
			binaryErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binaryErr != nil {
		t.Fatal(binaryErr)
	}
	return binaryPath
}

// runOutflow runs a short command of the binary and returns its stdout.
func runOutflow(t *testing.T, databaseURL string, args ...string) string {
	t.Helper()
	cmd := exec.Command(outflowBinary(t), args...)
	cmd.Env = append(os.Environ(), "OUTFLOW_DATABASE_URL="+databaseURL)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("outflow %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(stdout.String())
}

// testSecretKeys encrypts webhook secrets in the gateways tests start: a
// fixed key, so that every gateway of a test reads what another wrote.
const testSecretKeys = "e2e:ZTJlLXRlc3Qtd2ViaG9vay1zZWNyZXQta2V5LTMyYnk="

// freeAddr returns a loopback address that is free when it returns, for a
// process the test starts to bind. Its port is picked at random below
// Linux's ephemeral range (32768–60999), as scripts/testenv.sh picks its
// own: a port from that range (":0") can be taken by any outgoing
// connection on the machine before the process binds it, and
// TestDevDownloadsPostgres failed on "address already in use" that way.
func freeAddr(t *testing.T) string {
	t.Helper()
	for range 200 {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", freePortMin+rand.IntN(freePortMax-freePortMin)))
		if err != nil {
			continue // taken
		}
		defer l.Close()
		return l.Addr().String()
	}
	t.Fatalf("no free loopback port in [%d, %d) after 200 tries", freePortMin, freePortMax)
	return ""
}

// freePortMin and freePortMax bound freeAddr's ports: below the ephemeral
// range, clear of the well-known ones.
const freePortMin, freePortMax = 15000, 32000

// gateway is one `outflow serve` process.
type gateway struct {
	t        *testing.T
	args     []string
	env      []string
	httpAddr string
	grpcAddr string
	cmd      *exec.Cmd
	exited   chan struct{}
	logs     *lockedBuffer
}

func startGateway(t *testing.T, databaseURL string, args ...string) *gateway {
	t.Helper()
	g := &gateway{t: t, env: append(os.Environ(), "OUTFLOW_DATABASE_URL="+databaseURL, "OUTFLOW_SECRET_KEYS="+testSecretKeys), logs: &lockedBuffer{}}
	g.args = args
	g.start()
	t.Cleanup(func() {
		g.stop()
		if t.Failed() {
			t.Logf("gateway log (tail):\n%s", tail(g.logs.String(), 4000))
		}
	})
	return g
}

// start starts the gateway on fresh loopback ports and waits until it is
// ready. freeAddr's ports are only free when it returns: another test's
// process may take one before the gateway binds it, so a start that fails
// on "address already in use" is tried again on new ports.
func (g *gateway) start() {
	g.t.Helper()
	for attempt := 1; ; attempt++ {
		from := len(g.logs.String())
		if g.launch() {
			return
		}
		if attempt == 3 || !strings.Contains(g.logs.String()[from:], "address already in use") {
			g.t.Fatalf("the gateway exited while starting:\n%s", tail(g.logs.String(), 4000))
		}
	}
}

// launch starts one gateway process and waits until it is ready (true) or
// has exited (false).
func (g *gateway) launch() bool {
	g.t.Helper()
	g.httpAddr, g.grpcAddr = freeAddr(g.t), freeAddr(g.t)
	args := append([]string{"serve", "--http-addr", g.httpAddr, "--grpc-addr", g.grpcAddr, "--log-level", "info"}, g.args...)
	g.cmd = exec.Command(outflowBinary(g.t), args...)
	g.cmd.Env = g.env
	g.cmd.Stdout, g.cmd.Stderr = g.logs, g.logs
	if err := g.cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	g.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}, logs *lockedBuffer) {
		if err := cmd.Wait(); err != nil {
			fmt.Fprintf(logs, "\n[harness] gateway exited: %v\n", err)
		}
		close(exited)
	}(g.cmd, g.exited, g.logs)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + g.httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		select {
		case <-g.exited:
			return false
		default:
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("the gateway was not ready within 60s:\n%s", tail(g.logs.String(), 4000))
		}
		time.Sleep(50 * time.Millisecond) // polling a subprocess: nothing to wait on
	}
}

// kill9 kills the gateway with SIGKILL, as a crash would.
func (g *gateway) kill9() {
	_ = g.cmd.Process.Signal(syscall.SIGKILL)
	<-g.exited
}

// stop sends SIGTERM and waits for a graceful exit.
func (g *gateway) stop() {
	select {
	case <-g.exited:
		return
	default:
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.exited:
	case <-time.After(60 * time.Second):
		g.t.Errorf("the gateway did not stop within 60s of SIGTERM")
		_ = g.cmd.Process.Kill()
		<-g.exited
	}
}

func (g *gateway) url(path string) string { return "http://" + g.httpAddr + path }

// api calls the REST API and decodes a JSON object answer.
func (g *gateway) api(t *testing.T, key, method, path string, body any, want int) map[string]any {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, g.url(path), r)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s = %d %s, want %d", method, path, resp.StatusCode, raw, want)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: %v: %s", method, path, err, raw)
	}
	return out
}

// get fetches a plain-text endpoint of the gateway (/metrics, /readyz).
func (g *gateway) get(t *testing.T, path string) string {
	t.Helper()
	resp, err := http.Get(g.url(path))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// awaitSubscriptions waits until this gateway's matcher holds at least n
// subscriptions (outflow_subscriptions_loaded, every state counted). The
// matcher learns of a subscription by PostgreSQL LISTEN/NOTIFY, some tens of
// milliseconds after the API call that created it has returned: a record
// consumed before then is matched by nobody and never delivered, so a test
// that creates subscriptions and then produces must wait here first.
func (g *gateway) awaitSubscriptions(t *testing.T, n int) {
	t.Helper()
	pollUntil(t, 30*time.Second, fmt.Sprintf("the gateway's matcher to load %d subscriptions", n), func() bool {
		return metricValue(g.get(t, "/metrics"), "outflow_subscriptions_loaded") >= float64(n)
	})
}

// receiver is a webhook endpoint that verifies every request with the
// Standard Webhooks reference library and records what arrived.
type receiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	id     string // the subscription it receives for
	secret string
	// status answers each request; 200 when nil.
	status func() int
	// got counts arrivals per record seq; events keeps the first of each.
	got        map[int]int
	events     map[int]map[string]any
	eventIDs   map[int]string
	badSig     int
	idMismatch int
	requests   int
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	r := &receiver{got: map[int]int{}, events: map[int]map[string]any{}, eventIDs: map[int]string{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	if r.status != nil {
		if code := r.status(); code != http.StatusOK {
			w.WriteHeader(code)
			return
		}
	}
	wh, err := standardwebhooks.NewWebhook(r.secret)
	if err == nil {
		err = wh.Verify(body, req.Header)
	}
	if err != nil {
		r.badSig++
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	var ev map[string]any
	if err := json.Unmarshal(body, &ev); err != nil {
		r.badSig++
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	rec, _ := ev["record"].(map[string]any)
	seq := int(rec["seq"].(float64))
	id := ev["id"].(string)
	if prev, ok := r.eventIDs[seq]; ok && prev != id {
		r.idMismatch++
	}
	if req.Header.Get("webhook-id") != id {
		r.idMismatch++
	}
	r.eventIDs[seq] = id
	r.got[seq]++
	if r.events[seq] == nil {
		r.events[seq] = ev
	}
	w.WriteHeader(http.StatusOK)
}

func (r *receiver) snapshot() (got map[int]int, badSig, idMismatch int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	got = make(map[int]int, len(r.got))
	for k, v := range r.got {
		got[k] = v
	}
	return got, r.badSig, r.idMismatch
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
