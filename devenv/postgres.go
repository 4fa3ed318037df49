package devenv

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoPostgres is wrapped by the error FindPostgresBin returns when the
// PostgreSQL server binaries are not found; that error's message says how to
// get them, or what to do instead.
var ErrNoPostgres = errors.New("PostgreSQL server binaries (initdb and postgres) not found")

// postgresInstallHint follows ErrNoPostgres.
const postgresInstallHint = `outflow dev runs a throwaway PostgreSQL cluster from them. Either install them:
    Debian/Ubuntu:  sudo apt-get install postgresql
    Fedora:         sudo dnf install postgresql-server
    macOS:          brew install postgresql
  or point --postgres-bin-dir at their directory (without it, outflow dev downloads a
  PostgreSQL build where none is installed), or use a database you already have:
    DATABASE_URL=postgres://user:password@localhost:5432/outflow outflow dev`

// The throwaway cluster's server user and database.
const (
	pgUser     = "outflow"
	pgDatabase = "postgres"
)

// pgAccount is a user the PostgreSQL processes run as.
type pgAccount struct{ uid, gid uint32 }

// PostgresConfig configures the throwaway cluster.
type PostgresConfig struct {
	// BinDir holds initdb and postgres; empty searches PATH, then
	// /usr/lib/postgresql/<version>/bin (newest first), where Debian and
	// Ubuntu install them. A directory of FetchPostgres that the unprivileged
	// user cannot reach (root's cache, when running as root) is linked or
	// copied into Dir first.
	BinDir string
	// Dir is an empty directory the cluster lives in (data and unix socket);
	// it must be reachable by the unprivileged user when running as root.
	Dir string
	// StartTimeout bounds initdb plus the server's start. Default 30s.
	StartTimeout time.Duration
	// Logger receives progress at debug level.
	Logger *slog.Logger
}

// Postgres is a throwaway PostgreSQL cluster: initdb into a temporary
// directory, durability switched off, a free loopback port and a unix socket
// in that directory. The server is a child of this process in its own
// process group, so a Ctrl-C in the terminal reaches `outflow dev` only, and
// the cluster goes down after the gateway that uses it. Started as root, it
// runs as the postgres user, or nobody where there is none.
type Postgres struct {
	dir     string
	dataDir string
	port    int
	cmd     *exec.Cmd
	// exited is closed once the server process is reaped; exitErr is its
	// exit status, readable after that.
	exited  chan struct{}
	exitErr error
	logPath string
	logger  *slog.Logger
}

// FindPostgresBin returns the directory holding initdb and postgres: binDir
// when given, else the directory of initdb on PATH, else the newest
// /usr/lib/postgresql/<version>/bin. Its error wraps ErrNoPostgres when none
// has both.
func FindPostgresBin(binDir string) (string, error) {
	return findPostgresBin(binDir, exec.LookPath, filepath.Glob)
}

// findPostgresBin is FindPostgresBin with its look-ups injected, for tests.
func findPostgresBin(binDir string, lookPath func(string) (string, error), glob func(string) ([]string, error)) (string, error) {
	has := func(dir string) bool {
		for _, name := range []string{"initdb", "postgres"} {
			if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
				return false
			}
		}
		return true
	}
	if binDir != "" {
		if has(binDir) {
			return binDir, nil
		}
		return "", fmt.Errorf("%w in --postgres-bin-dir %s.\n  %s", ErrNoPostgres, binDir, postgresInstallHint)
	}
	if initdb, err := lookPath("initdb"); err == nil {
		// Debian's /usr/bin/initdb is missing or a wrapper script; the real
		// directory is the link's target's.
		if real, err := filepath.EvalSymlinks(initdb); err == nil && has(filepath.Dir(real)) {
			return filepath.Dir(real), nil
		}
		if has(filepath.Dir(initdb)) {
			return filepath.Dir(initdb), nil
		}
	}
	dirs, _ := glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return -comparePGVersions(a, b) })
	for _, dir := range dirs {
		if has(dir) {
			return dir, nil
		}
	}
	return "", fmt.Errorf("%w on PATH or in /usr/lib/postgresql/*/bin.\n  %s", ErrNoPostgres, postgresInstallHint)
}

// comparePGVersions orders /usr/lib/postgresql/<version>/bin directories by
// version number, so 17 sorts after 9.6.
func comparePGVersions(a, b string) int {
	version := func(dir string) []int {
		var out []int
		for part := range strings.SplitSeq(filepath.Base(filepath.Dir(dir)), ".") {
			n, err := strconv.Atoi(part)
			if err != nil {
				return out
			}
			out = append(out, n)
		}
		return out
	}
	return cmp.Or(slices.Compare(version(a), version(b)), strings.Compare(a, b))
}

// StartPostgres creates and starts the cluster. On error nothing is left
// running (the caller removes cfg.Dir). Stop it with Stop (or Kill).
func StartPostgres(ctx context.Context, cfg PostgresConfig) (*Postgres, error) {
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	bin, err := findPostgresBin(cfg.BinDir, exec.LookPath, filepath.Glob)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	pg := &Postgres{dir: cfg.Dir, dataDir: filepath.Join(cfg.Dir, "data"), logPath: filepath.Join(cfg.Dir, "postgres.log"), logger: cfg.Logger}
	acct, err := postgresAccount()
	if err != nil {
		return nil, err
	}
	if err := chownTo(cfg.Dir, acct); err != nil {
		return nil, fmt.Errorf("handing the PostgreSQL directory to the unprivileged user: %w", err)
	}
	if bin, err = reachableBin(bin, cfg.Dir, acct); err != nil {
		return nil, err
	}
	start := time.Now()
	// --no-locale: a fresh machine may have no UTF-8 locale generated;
	// --no-sync: the cluster is thrown away.
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", pg.dataDir, "-A", "trust", "-U", pgUser,
		"--no-sync", "-E", "UTF8", "--no-locale")
	initdb.Dir = cfg.Dir
	initdb.SysProcAttr = postgresProcAttr(acct, false)
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb in %s failed: %w\n%s", pg.dataDir, err, tailLines(out, 15))
	}
	cfg.Logger.DebugContext(ctx, "dev postgres: initdb done", slog.Duration("took", time.Since(start)))

	// The port is picked here and bound by postgres a moment later; if
	// something takes it in between, try another.
	for attempt := 1; ; attempt++ {
		if pg.port, err = freePort(ctx); err != nil {
			return nil, err
		}
		if err = pg.launch(bin, acct); err != nil {
			return nil, err
		}
		err = pg.awaitReady(ctx)
		if err == nil {
			cfg.Logger.DebugContext(ctx, "dev postgres: ready", slog.Int("port", pg.port), slog.Duration("took", time.Since(start)))
			return pg, nil
		}
		pg.Stop()
		logTail := pg.logTail()
		if attempt < 3 && strings.Contains(logTail, "could not bind") {
			continue
		}
		return nil, fmt.Errorf("starting PostgreSQL: %w\n%s", err, logTail)
	}
}

// launch starts the server process. It runs from a goroutine locked to its
// OS thread, which stays alive until the server exits: on Linux the server
// gets SIGQUIT (immediate shutdown) when that thread dies, so even a kill -9
// of `outflow dev` leaves no server behind (see setPdeathsig).
func (pg *Postgres) launch(bin string, acct *pgAccount) error {
	logFile, err := os.OpenFile(pg.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("creating the PostgreSQL log: %w", err)
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", pg.dataDir,
		"-c", "listen_addresses=127.0.0.1", "-p", strconv.Itoa(pg.port), "-c", "unix_socket_directories="+pg.dir,
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=200", "-c", "log_min_messages=warning")
	cmd.Dir = pg.dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = postgresProcAttr(acct, true)
	pg.cmd = cmd
	pg.exited = make(chan struct{})
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		defer logFile.Close()
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("starting postgres: %w", err)
			close(pg.exited)
			return
		}
		started <- nil
		pg.exitErr = cmd.Wait()
		close(pg.exited)
	}()
	return <-started
}

// awaitReady polls the server until it accepts a connection, it exits or
// ctx ends.
func (pg *Postgres) awaitReady(ctx context.Context) error {
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := pgx.Connect(cctx, pg.URL())
		cancel()
		if err == nil {
			_ = conn.Close(ctx)
			return nil
		}
		lastErr = err
		select {
		case <-pg.exited:
			return fmt.Errorf("postgres exited: %v", pg.exitErr)
		case <-ctx.Done():
			return fmt.Errorf("postgres was not ready in time (last error: %v): %w", lastErr, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// URL is the superuser URL of the cluster's maintenance database.
func (pg *Postgres) URL() string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", pgUser, pg.port, pgDatabase)
}

// Dir is the directory the cluster lives in (PostgresConfig.Dir).
func (pg *Postgres) Dir() string { return pg.dir }

// Pid is the server's process id.
func (pg *Postgres) Pid() int { return pg.cmd.Process.Pid }

// Stop shuts the server down (fast shutdown: open sessions are ended, no
// checkpoint wait worth the name on a tiny cluster), waits for it, and kills
// it after 10 s. It is idempotent. The caller removes the directory.
func (pg *Postgres) Stop() {
	if pg == nil || pg.cmd == nil {
		return
	}
	select {
	case <-pg.exited:
		return
	default:
	}
	if err := pg.cmd.Process.Signal(os.Interrupt); err != nil { // SIGINT: fast shutdown
		pg.Kill()
		return
	}
	select {
	case <-pg.exited:
		return
	case <-time.After(10 * time.Second):
	}
	pg.logger.Warn("dev postgres did not stop within 10s; killing it")
	pg.Kill()
}

// Kill ends the server and its processes at once (SIGKILL to its process
// group) and waits for it; for the forced exit of a second Ctrl-C.
func (pg *Postgres) Kill() {
	if pg == nil || pg.cmd == nil || pg.cmd.Process == nil {
		return
	}
	_ = killProcessGroup(pg.cmd.Process)
	select {
	case <-pg.exited:
	case <-time.After(5 * time.Second):
	}
}

// logTail returns the end of the server's log, to explain a failure.
func (pg *Postgres) logTail() string {
	b, err := os.ReadFile(pg.logPath)
	if err != nil {
		return ""
	}
	return tailLines(b, 15)
}

// tailLines returns the last n lines of b.
func tailLines(b []byte, n int) string {
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(ctx context.Context) (int, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
