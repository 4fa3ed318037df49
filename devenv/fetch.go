package devenv

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/ulikunitz/xz"
)

// PostgresVersion is the PostgreSQL release FetchPostgres downloads: one
// that zonky.io publishes for all four platforms below, of major version 17
// rather than 18 (whose builds exist too) as the nearer to the PostgreSQL 15
// that CI runs the suite against.
const PostgresVersion = "17.6.0"

// DefaultMavenURL is Maven Central, where zonky.io publishes its portable
// PostgreSQL builds (io.zonky.test.postgres:embedded-postgres-binaries-*).
const DefaultMavenURL = "https://repo1.maven.org/maven2"

// postgresDist is one platform's build: the artifact's name and the SHA-256
// of its jar, pinned here (from Maven Central's .sha256 files, checked
// against the downloaded jar for linux-amd64) so that neither a mirror nor
// the network can hand us other binaries.
type postgresDist struct {
	platform string // zonky's name: linux-amd64, darwin-arm64v8, ...
	sha256   string
}

// postgresDists are the builds of PostgresVersion by GOOS/GOARCH.
var postgresDists = map[string]postgresDist{
	"linux/amd64":  {"linux-amd64", "23da5a044b4fb7a5a081a45008c95749c873305328d73f86aefd56922ce1d29d"},
	"linux/arm64":  {"linux-arm64v8", "84427ea54a5238247924ef3b0f940e7d027e58760f19d7325242e50d22fa014a"},
	"darwin/amd64": {"darwin-amd64", "f1d6d39896ca48e65d6dbcb492d809df0d4952c65299de8af6e08d2208eae3e0"},
	"darwin/arm64": {"darwin-arm64v8", "e87ee36767dee4f00f829d7a52e4a216e2fdebe5934c5683730940aabe570721"},
}

// fetchedMarker is written into a complete cached installation; it also
// tells StartPostgres that the tree is ours to link or copy.
const fetchedMarker = ".outflow-postgres"

// maxInstallBytes bounds what one archive may unpack to (the builds unpack
// to about 60 MiB), against a decompression bomb from a broken mirror.
const maxInstallBytes = 1 << 30

// FetchConfig configures FetchPostgres.
type FetchConfig struct {
	// CacheDir holds the installations, one directory per version and
	// platform. Default: os.UserCacheDir()/outflow ($XDG_CACHE_HOME/outflow
	// or ~/.cache/outflow on Linux, ~/Library/Caches/outflow on macOS).
	CacheDir string
	// MavenURL is the Maven repository to download from. Default
	// DefaultMavenURL; a mirror must serve the same bytes (the digest is
	// pinned).
	MavenURL string
	// Progress receives the download's progress (size, percentage); nil
	// shows none. Terminal rewrites one line in place instead of printing a
	// line every 10 %.
	Progress io.Writer
	Terminal bool
	// Client makes the request. Default: an http.Client with a 10 minute
	// overall timeout.
	Client *http.Client
	// Logger receives progress at debug level.
	Logger *slog.Logger

	// platform overrides GOOS/GOARCH's build, for tests.
	platform *postgresDist
}

// PostgresBin returns the directory of initdb and postgres for a throwaway
// cluster: binDir when given (an error wrapping ErrNoPostgres when it lacks
// them), else what FindPostgresBin finds installed, else, when nothing is,
// the installation FetchPostgres downloads or finds in its cache.
func PostgresBin(ctx context.Context, binDir string, fetch FetchConfig) (string, error) {
	return postgresBin(ctx, binDir, fetch, FindPostgresBin, FetchPostgres)
}

// postgresBin is PostgresBin with its look-up and download injected.
func postgresBin(ctx context.Context, binDir string, cfg FetchConfig,
	find func(string) (string, error), fetch func(context.Context, FetchConfig) (string, error)) (string, error) {
	bin, err := find(binDir)
	if err == nil || binDir != "" || !errors.Is(err, ErrNoPostgres) {
		return bin, err
	}
	if bin, err = fetch(ctx, cfg); err != nil {
		if errors.Is(err, ErrNoPostgres) || ctx.Err() != nil {
			return "", err
		}
		return "", fmt.Errorf("%w, and downloading them failed: %w.\n  %s", ErrNoPostgres, err, postgresInstallHint)
	}
	return bin, nil
}

// FetchPostgres returns the bin directory of a PostgreSQL installation in
// the cache, downloading PostgresVersion from Maven Central first when it is
// not there: zonky.io's portable build for this platform, whose jar holds
// one .txz archive of bin/, lib/ and share/. The jar's SHA-256 must match
// the pinned digest. Parallel callers download once (a lock file), and an
// interrupted download leaves nothing in the cache.
func FetchPostgres(ctx context.Context, cfg FetchConfig) (string, error) {
	dist, ok := postgresDists[runtime.GOOS+"/"+runtime.GOARCH]
	if cfg.platform != nil {
		dist, ok = *cfg.platform, true
	}
	if !ok {
		return "", fmt.Errorf("%w, and there is no PostgreSQL build to download for %s/%s: install PostgreSQL or set DATABASE_URL",
			ErrNoPostgres, runtime.GOOS, runtime.GOARCH)
	}
	if cfg.CacheDir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("finding the cache directory for PostgreSQL: %w", err)
		}
		cfg.CacheDir = filepath.Join(base, "outflow")
	}
	if cfg.MavenURL == "" {
		cfg.MavenURL = DefaultMavenURL
	}
	if cfg.Client == nil {
		// Its own transport, whose connection goes when we are done: a
		// download is once in a long while.
		tr := http.DefaultTransport.(*http.Transport).Clone()
		defer tr.CloseIdleConnections()
		cfg.Client = &http.Client{Timeout: 10 * time.Minute, Transport: tr}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	name := "postgres-" + PostgresVersion + "-" + dist.platform
	dir := filepath.Join(cfg.CacheDir, name)
	bin := filepath.Join(dir, "bin")
	if _, err := os.Stat(filepath.Join(dir, fetchedMarker)); err == nil {
		cfg.Logger.DebugContext(ctx, "dev postgres: cached", slog.String("dir", dir))
		return bin, nil
	}
	if err := os.MkdirAll(cfg.CacheDir, 0o755); err != nil {
		return "", fmt.Errorf("creating the cache directory: %w", err)
	}
	unlock, err := lockFile(filepath.Join(cfg.CacheDir, name+".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(filepath.Join(dir, fetchedMarker)); err == nil {
		return bin, nil // another process fetched it while we waited
	}

	tmp, err := os.MkdirTemp(cfg.CacheDir, "."+name+".tmp-")
	if err != nil {
		return "", fmt.Errorf("creating a download directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	jarPath := filepath.Join(tmp, "postgres.jar")
	if err := download(ctx, cfg, dist, jarPath); err != nil {
		return "", err
	}
	install := filepath.Join(tmp, "install")
	if err := unpackJar(jarPath, install); err != nil {
		return "", fmt.Errorf("unpacking PostgreSQL %s: %w", PostgresVersion, err)
	}
	for _, prog := range []string{"initdb", "postgres"} {
		if fi, err := os.Stat(filepath.Join(install, "bin", prog)); err != nil || fi.Mode()&0o111 == 0 {
			return "", fmt.Errorf("the PostgreSQL %s archive has no executable bin/%s", PostgresVersion, prog)
		}
	}
	if err := os.WriteFile(filepath.Join(install, fetchedMarker), []byte(PostgresVersion+" "+dist.platform+" sha256:"+dist.sha256+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("marking the installation complete: %w", err)
	}
	// A leftover without the marker (an older, interrupted layout) goes.
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("removing an incomplete %s: %w", dir, err)
	}
	if err := os.Rename(install, dir); err != nil {
		return "", fmt.Errorf("moving PostgreSQL into the cache: %w", err)
	}
	return bin, nil
}

// download fetches the jar into dst, showing progress, and checks its
// digest.
func download(ctx context.Context, cfg FetchConfig, dist postgresDist, dst string) error {
	artifact := "embedded-postgres-binaries-" + dist.platform
	url := strings.TrimSuffix(cfg.MavenURL, "/") + "/io/zonky/test/postgres/" + artifact + "/" + PostgresVersion + "/" + artifact + "-" + PostgresVersion + ".jar"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("downloading PostgreSQL: %w", err)
	}
	resp, err := cfg.Client.Do(req)
	if err != nil {
		return fmt.Errorf("downloading PostgreSQL %s: %w", PostgresVersion, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("downloading PostgreSQL %s from %s: %s", PostgresVersion, url, resp.Status)
	}
	f, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("creating %s: %w", dst, err)
	}
	defer f.Close()
	p := &progress{w: cfg.Progress, terminal: cfg.Terminal, total: resp.ContentLength, started: time.Now(),
		what: fmt.Sprintf("downloading PostgreSQL %s (%s) from %s", PostgresVersion, dist.platform, req.URL.Host)}
	p.start()
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(f, h, p), resp.Body)
	p.finish(err)
	if err != nil {
		return fmt.Errorf("downloading PostgreSQL %s: %w", PostgresVersion, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", dst, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != dist.sha256 {
		return fmt.Errorf("the PostgreSQL %s download from %s has SHA-256 %s, want %s: refusing it", PostgresVersion, url, got, dist.sha256)
	}
	cfg.Logger.DebugContext(ctx, "dev postgres: downloaded", slog.String("url", url), slog.Int64("bytes", p.done), slog.Duration("took", time.Since(p.started)))
	return nil
}

// progress is an io.Writer that counts bytes and reports them.
type progress struct {
	w        io.Writer
	terminal bool
	what     string
	total    int64 // -1: unknown
	done     int64
	started  time.Time
	shown    int64 // the last tenth (or MiB, without a total) reported
}

func (p *progress) start() {
	if p.w == nil {
		return
	}
	if p.total > 0 {
		fmt.Fprintf(p.w, "outflow dev: %s, %s (cached for the next time)\n", p.what, mib(p.total))
	} else {
		fmt.Fprintf(p.w, "outflow dev: %s (cached for the next time)\n", p.what)
	}
}

func (p *progress) Write(b []byte) (int, error) {
	p.done += int64(len(b))
	if p.w == nil {
		return len(b), nil
	}
	var step int64
	if p.total > 0 {
		step = p.done * 10 / p.total // tenths
	} else {
		step = p.done >> 20
	}
	if p.terminal {
		fmt.Fprintf(p.w, "\r  %s", p.line())
	} else if step > p.shown {
		fmt.Fprintf(p.w, "  %s\n", p.line())
	}
	p.shown = step
	return len(b), nil
}

func (p *progress) line() string {
	if p.total > 0 {
		return fmt.Sprintf("%s of %s (%3d%%)", mib(p.done), mib(p.total), p.done*100/p.total)
	}
	return mib(p.done)
}

func (p *progress) finish(err error) {
	if p.w == nil {
		return
	}
	if p.terminal {
		fmt.Fprintln(p.w)
	}
	if err == nil {
		fmt.Fprintf(p.w, "  %s in %.1fs\n", mib(p.done), time.Since(p.started).Seconds())
	}
}

// mib formats n bytes in MiB.
func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// unpackJar unpacks the .txz archive inside the jar at jarPath into dir.
func unpackJar(jarPath, dir string) error {
	zr, err := zip.OpenReader(jarPath)
	if err != nil {
		return fmt.Errorf("opening the jar: %w", err)
	}
	defer zr.Close()
	for _, zf := range zr.File {
		if !strings.HasSuffix(zf.Name, ".txz") {
			continue
		}
		rc, err := zf.Open()
		if err != nil {
			return fmt.Errorf("opening %s in the jar: %w", zf.Name, err)
		}
		defer rc.Close()
		// Buffered: xz reads a byte at a time, which unbuffered makes a
		// two-second unpacking take half a minute.
		xr, err := xz.NewReader(bufio.NewReaderSize(rc, 1<<20))
		if err != nil {
			return fmt.Errorf("reading %s: %w", zf.Name, err)
		}
		return untar(xr, dir)
	}
	return errors.New("the jar holds no .txz archive")
}

// untar writes the tar stream r into dir, creating it. It accepts
// directories, regular files and symbolic links whose targets stay inside
// dir, and refuses anything else, or any name leaving dir.
func untar(r io.Reader, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tr := tar.NewReader(r)
	var written int64
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the archive: %w", err)
		}
		name := path.Clean(strings.TrimPrefix(hdr.Name, "./"))
		if name == "." {
			continue
		}
		if !fs.ValidPath(name) {
			return fmt.Errorf("the archive's entry %q leaves its directory", hdr.Name)
		}
		target := filepath.Join(dir, filepath.FromSlash(name))
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if written += hdr.Size; written > maxInstallBytes {
				return fmt.Errorf("the archive unpacks to more than %s", mib(maxInstallBytes))
			}
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			// Readable by all, so that the unprivileged user PostgreSQL runs
			// as under root can use a copy or link of it.
			f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, fs.FileMode(hdr.Mode)&0o755|0o444)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, io.LimitReader(tr, hdr.Size))
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("writing %s: %w", name, err)
			}
		case tar.TypeSymlink:
			link := hdr.Linkname
			if path.IsAbs(link) || !fs.ValidPath(path.Join(path.Dir(name), link)) {
				return fmt.Errorf("the archive's link %s -> %s leaves its directory", hdr.Name, link)
			}
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			if err := os.Symlink(link, target); err != nil {
				return err
			}
		default:
			return fmt.Errorf("the archive's entry %s has unsupported type %q", hdr.Name, hdr.Typeflag)
		}
	}
}

// reachableBin returns the bin directory the cluster's programs run from:
// bin itself when acct (the unprivileged user under root; nil: ourselves)
// can reach it, else, for an installation of FetchPostgres (root's own
// cache, under a home only root may enter), a copy of it in dir/postgres,
// hard-linked where the file system allows.
func reachableBin(bin, dir string, acct *pgAccount) (string, error) {
	if reachable(bin, acct) {
		return bin, nil
	}
	root := filepath.Dir(bin)
	if _, err := os.Stat(filepath.Join(root, fetchedMarker)); err != nil {
		return "", fmt.Errorf("the unprivileged user PostgreSQL runs as cannot reach %s; choose a --postgres-bin-dir it can reach", bin)
	}
	dst := filepath.Join(dir, "postgres")
	if err := copyTree(root, dst); err != nil {
		return "", fmt.Errorf("copying PostgreSQL where its unprivileged user can reach it: %w", err)
	}
	return filepath.Join(dst, "bin"), nil
}

// copyTree copies the directories, regular files (hard-linked where
// possible) and symbolic links under src to dst.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case d.Type().IsRegular():
			if os.Link(p, target) == nil {
				return nil
			}
			return copyFile(p, target)
		default:
			return fmt.Errorf("%s: unexpected file type", p)
		}
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, fi.Mode().Perm())
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// IsTerminal reports whether w is a character device (a terminal), where
// FetchConfig.Progress may rewrite its line.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
