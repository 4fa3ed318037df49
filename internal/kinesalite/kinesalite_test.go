package kinesalite

import (
	"context"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// repoCache is where scripts/kinesalite-deps.sh installs the package.
func repoCache(t *testing.T) string {
	if dir := os.Getenv("OUTFLOW_KINESALITE_DIR"); dir != "" {
		return dir
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", ".cache", "kinesalite")
}

// TestStartAndClose runs kinesalite from the installed package: it listens
// on loopback only and is gone after Close. Without node or the package the
// test is skipped, or fails under CI=true (where testenv.sh installs both).
func TestStartAndClose(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s, err := Start(ctx, Config{Dir: repoCache(t)})
	if errors.Is(err, ErrNotInstalled) {
		if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(s.Endpoint())
	if err != nil || u.Hostname() != "127.0.0.1" {
		t.Fatalf("endpoint %q, want http://127.0.0.1:<port>", s.Endpoint())
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatalf("dialing %s: %v", u.Host, err)
	}
	_ = conn.Close()
	s.Close()
	s.Close() // idempotent
	if conn, err := net.DialTimeout("tcp", u.Host, time.Second); err == nil {
		_ = conn.Close()
		t.Errorf("%s still accepts connections after Close", u.Host)
	}
}

func TestStartWithoutThePackage(t *testing.T) {
	t.Parallel()
	if _, err := Start(t.Context(), Config{Dir: t.TempDir()}); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("Start without the package = %v, want ErrNotInstalled", err)
	}
}
