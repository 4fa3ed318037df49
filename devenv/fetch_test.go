package devenv

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/ulikunitz/xz"
)

// TestPostgresBin: what PostgresBin does with what it finds installed.
func TestPostgresBin(t *testing.T) {
	t.Parallel()
	errFetch := errors.New("no route to Maven Central")
	found := func(string) (string, error) { return "/usr/lib/postgresql/17/bin", nil }
	none := func(dir string) (string, error) { return "", fmt.Errorf("%w in %q", ErrNoPostgres, dir) }
	broken := func(string) (string, error) { return "", errors.New("permission denied") }
	tests := []struct {
		name      string
		binDir    string
		find      func(string) (string, error)
		fetchErr  error
		want      string
		wantFetch bool
		wantErr   []string // substrings; nil: no error
	}{
		{"installed", "", found, nil, "/usr/lib/postgresql/17/bin", false, nil},
		{"nothing installed: download", "", none, nil, "/cache/bin", true, nil},
		{"download fails", "", none, errFetch, "", true, []string{"not found", "downloading them failed", "no route", "apt-get install postgresql", "DATABASE_URL="}},
		{"--postgres-bin-dir without them: no download", "/opt/pg", none, nil, "", false, []string{"not found", "/opt/pg"}},
		{"another failure: no download", "", broken, nil, "", false, []string{"permission denied"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fetched := false
			fetch := func(context.Context, FetchConfig) (string, error) {
				fetched = true
				if tt.fetchErr != nil {
					return "", tt.fetchErr
				}
				return "/cache/bin", nil
			}
			got, err := postgresBin(t.Context(), tt.binDir, FetchConfig{}, tt.find, fetch)
			if fetched != tt.wantFetch {
				t.Errorf("downloaded: %v, want %v", fetched, tt.wantFetch)
			}
			if tt.wantErr == nil {
				if err != nil || got != tt.want {
					t.Errorf("postgresBin = %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("postgresBin = %q, want an error", got)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// TestFetchPostgres fetches the real build from Maven Central into the user
// cache directory that outflow dev uses, so that only the first run on a
// machine downloads and unpacks it (about 2 s, but a minute under -race: xz
// is slow when instrumented; TestFetchPostgresFromMirror covers the cold
// path with a small archive every run). It then runs a cluster from it: as
// an unprivileged user when the test runs as root, from a copy when that
// user cannot enter the cache (root's ~/.cache). The second call must reuse
// the cache. Without Maven Central it skips, or fails under CI=true.
func TestFetchPostgres(t *testing.T) {
	t.Parallel()
	requireMaven(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	start := time.Now()
	bin, err := FetchPostgres(ctx, FetchConfig{Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if progress.Len() > 0 {
		t.Logf("cold cache: %.2fs\n%s", time.Since(start).Seconds(), progress.String())
		for _, want := range []string{"downloading PostgreSQL " + PostgresVersion, "MiB", "( 10%)", "(100%)"} {
			if !strings.Contains(progress.String(), want) {
				t.Errorf("the progress lacks %q:\n%s", want, progress.String())
			}
		}
	}
	leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(filepath.Dir(bin)), ".postgres-*"))
	if len(leftovers) > 0 {
		t.Errorf("the download left %v behind", leftovers)
	}

	progress.Reset()
	start = time.Now()
	again, err := FetchPostgres(ctx, FetchConfig{Progress: &progress})
	if err != nil || again != bin {
		t.Fatalf("second FetchPostgres = %q, %v; want the cached %q", again, err, bin)
	}
	if progress.Len() > 0 {
		t.Errorf("the second call downloaded again:\n%s", progress.String())
	}
	t.Logf("warm cache: %.3fs", time.Since(start).Seconds())

	dir := filepath.Join(t.TempDir(), "pg")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 { // the unprivileged user must reach dir, as outflow dev arranges
		for d := filepath.Dir(dir); d != os.TempDir(); d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	pg, err := StartPostgres(ctx, PostgresConfig{BinDir: bin, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Stop()
	conn, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	var version string
	var superuser bool
	err = conn.QueryRow(ctx, `SELECT current_setting('server_version'), current_setting('is_superuser') = 'on'`).Scan(&version, &superuser)
	_ = conn.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimSuffix(PostgresVersion, ".0"); !strings.HasPrefix(version, want) || !superuser {
		t.Errorf("server_version %q, superuser %v; want %s and a superuser", version, superuser, want)
	}
	acct, err := postgresAccount()
	if err != nil {
		t.Fatal(err)
	}
	want := bin
	if !reachable(bin, acct) {
		want = dir // a copy
	}
	if exe, err := os.Readlink("/proc/" + strconv.Itoa(pg.Pid()) + "/exe"); err == nil && !strings.HasPrefix(exe, want) {
		t.Errorf("the server runs %s, want it from %s", exe, want)
	}
	pg.Stop()
	if err := os.RemoveAll(dir); err != nil {
		t.Errorf("removing the cluster: %v", err)
	}
}

// requireMaven skips the test when Maven Central cannot be reached, or
// fails it under CI=true, where a test must never skip.
func requireMaven(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, DefaultMavenURL+"/io/zonky/test/postgres/", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
		http.DefaultClient.CloseIdleConnections()
		return
	}
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatalf("Maven Central unreachable (%v) and CI=%s, where tests must not skip", err, os.Getenv("CI"))
	}
	t.Skipf("Maven Central unreachable: %v", err)
}

// tarEntry is one entry of a test archive.
type tarEntry struct {
	name, body, link string
	typ              byte
	mode             int64
}

func makeTar(t testing.TB, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, Size: int64(len(e.body))}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// makeJar packs a tar into a .txz inside a jar, as zonky.io publishes it.
func makeJar(t testing.TB, tarball []byte) []byte {
	t.Helper()
	var txz bytes.Buffer
	xw, err := xz.NewWriter(&txz)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := xw.Write(tarball); err != nil {
		t.Fatal(err)
	}
	if err := xw.Close(); err != nil {
		t.Fatal(err)
	}
	var jar bytes.Buffer
	zw := zip.NewWriter(&jar)
	if _, err := zw.Create("META-INF/MANIFEST.MF"); err != nil {
		t.Fatal(err)
	}
	w, err := zw.Create("postgres-test.txz")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(txz.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return jar.Bytes()
}

var goodInstall = []tarEntry{
	{name: "bin/", typ: tar.TypeDir, mode: 0o755},
	{name: "bin/initdb", body: "#!/bin/sh\n", typ: tar.TypeReg, mode: 0o755},
	{name: "bin/postgres", body: "#!/bin/sh\n", typ: tar.TypeReg, mode: 0o755},
	{name: "lib/libpq.so.5.17", body: "elf", typ: tar.TypeReg, mode: 0o644},
	{name: "lib/libpq.so.5", link: "libpq.so.5.17", typ: tar.TypeSymlink},
	{name: "share/postgresql/postgres.bki", body: "bki", typ: tar.TypeReg, mode: 0o600},
}

// TestFetchPostgresFromMirror serves jars from a local Maven mirror: a
// good one is unpacked and cached; a tampered one, an absent one and an
// archive without the programs are refused and leave no installation.
func TestFetchPostgresFromMirror(t *testing.T) {
	t.Parallel()
	good := makeJar(t, makeTar(t, goodInstall))
	sum := sha256.Sum256(good)
	digest := hex.EncodeToString(sum[:])
	tampered := append(bytes.Clone(good[:len(good)-1]), good[len(good)-1]^1)
	noInitdb := makeJar(t, makeTar(t, goodInstall[2:]))
	noInitdbSum := sha256.Sum256(noInitdb)

	tests := []struct {
		name    string
		status  int
		body    []byte
		digest  string
		wantErr string // "": success
	}{
		{"good", http.StatusOK, good, digest, ""},
		{"tampered", http.StatusOK, tampered, digest, "SHA-256"},
		{"absent", http.StatusNotFound, nil, digest, "404"},
		{"no initdb", http.StatusOK, noInitdb, hex.EncodeToString(noInitdbSum[:]), "no executable bin/initdb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var requests []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests = append(requests, r.URL.Path)
				w.Header().Set("Content-Length", strconv.Itoa(len(tt.body)))
				w.WriteHeader(tt.status)
				_, _ = w.Write(tt.body)
			}))
			defer srv.Close()
			cache := t.TempDir()
			var progress bytes.Buffer
			cfg := FetchConfig{CacheDir: cache, MavenURL: srv.URL + "/maven2/", Progress: &progress, Client: srv.Client(),
				platform: &postgresDist{platform: "test-os", sha256: tt.digest}}
			bin, err := FetchPostgres(t.Context(), cfg)
			wantPath := "/maven2/io/zonky/test/postgres/embedded-postgres-binaries-test-os/" + PostgresVersion +
				"/embedded-postgres-binaries-test-os-" + PostgresVersion + ".jar"
			if len(requests) != 1 || requests[0] != wantPath {
				t.Errorf("requests %q, want one for %s", requests, wantPath)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("FetchPostgres = %q, %v; want an error with %q", bin, err, tt.wantErr)
				}
				if entries, _ := os.ReadDir(cache); len(entries) > 1 { // the lock file only
					t.Errorf("a failed download left %v in the cache", entries)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(cache, "postgres-"+PostgresVersion+"-test-os", "bin"); bin != want {
				t.Errorf("bin = %s, want %s", bin, want)
			}
			if link, err := os.Readlink(filepath.Join(bin, "..", "lib", "libpq.so.5")); err != nil || link != "libpq.so.5.17" {
				t.Errorf("lib/libpq.so.5 -> %q (%v), want libpq.so.5.17", link, err)
			}
			// Readable by the unprivileged user even where the archive said 0600.
			if fi, err := os.Stat(filepath.Join(bin, "..", "share", "postgresql", "postgres.bki")); err != nil || fi.Mode().Perm()&0o004 == 0 {
				t.Errorf("share/postgresql/postgres.bki: %v, %v; want readable by all", fi.Mode(), err)
			}
			for _, want := range []string{"MiB", "(100%)"} {
				if !strings.Contains(progress.String(), want) {
					t.Errorf("progress lacks %q:\n%s", want, progress.String())
				}
			}
			if _, err := FetchPostgres(t.Context(), cfg); err != nil || len(requests) != 1 {
				t.Errorf("the second FetchPostgres: %v after %d requests; want the cache, no request", err, len(requests))
			}
		})
	}
}

// TestUntarRefuses: entries that would write outside the directory, or
// that are not files, directories or links, are refused.
func TestUntarRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		entry tarEntry
	}{
		{"dot-dot", tarEntry{name: "../evil", body: "x", typ: tar.TypeReg, mode: 0o644}},
		{"nested dot-dot", tarEntry{name: "bin/../../evil", body: "x", typ: tar.TypeReg, mode: 0o644}},
		{"absolute", tarEntry{name: "/tmp/evil", body: "x", typ: tar.TypeReg, mode: 0o644}},
		{"absolute link", tarEntry{name: "lib/x", link: "/etc/passwd", typ: tar.TypeSymlink}},
		{"escaping link", tarEntry{name: "lib/x", link: "../../etc", typ: tar.TypeSymlink}},
		{"device", tarEntry{name: "dev", typ: tar.TypeChar}},
		{"hard link", tarEntry{name: "lib/y", link: "lib/x", typ: tar.TypeLink}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			dir := filepath.Join(root, "install")
			err := untar(bytes.NewReader(makeTar(t, []tarEntry{tt.entry})), dir)
			if err == nil {
				t.Fatalf("untar accepted %+v", tt.entry)
			}
			if _, err := os.Lstat(filepath.Join(root, "evil")); err == nil {
				t.Errorf("untar wrote %s", filepath.Join(root, "evil"))
			}
		})
	}
}

// FuzzUntar: whatever the archive, untar writes nothing outside its
// directory.
func FuzzUntar(f *testing.F) {
	f.Add(makeTar(f, goodInstall))
	f.Add(makeTar(f, []tarEntry{{name: "../x", body: "x", typ: tar.TypeReg, mode: 0o644}}))
	f.Add(makeTar(f, []tarEntry{{name: "a", link: "../../x", typ: tar.TypeSymlink}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		root := t.TempDir()
		_ = untar(bytes.NewReader(data), filepath.Join(root, "install"))
		entries, err := os.ReadDir(root)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Name() != "install" {
				t.Fatalf("untar wrote %s outside its directory", e.Name())
			}
		}
	})
}

// TestProgress: a terminal gets one line rewritten in place, anything else
// a line per tenth; without a known size, the bytes so far.
func TestProgress(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		terminal bool
		total    int64
		want     []string
		lines    int // newline-terminated lines in all
	}{
		{"pipe", false, 10 << 20, []string{"10.0 MiB (cached", "  1.0 MiB of 10.0 MiB ( 10%)\n", "  10.0 MiB of 10.0 MiB (100%)\n", "10.0 MiB in "}, 12},
		{"terminal", true, 10 << 20, []string{"\r  5.0 MiB of 10.0 MiB ( 50%)", "\r  10.0 MiB of 10.0 MiB (100%)\n", "10.0 MiB in "}, 3},
		{"unknown size", false, -1, []string{"(cached for the next time)\n", "  1.0 MiB\n", "  10.0 MiB\n"}, 12},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			p := &progress{w: &out, terminal: tt.terminal, total: tt.total, what: "downloading", started: time.Now()}
			p.start()
			chunk := make([]byte, 256<<10)
			for range 40 { // 10 MiB
				if _, err := p.Write(chunk); err != nil {
					t.Fatal(err)
				}
			}
			p.finish(nil)
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("progress lacks %q:\n%q", w, out.String())
				}
			}
			if n := strings.Count(out.String(), "\n"); n != tt.lines {
				t.Errorf("%d lines, want %d:\n%q", n, tt.lines, out.String())
			}
		})
	}
}
