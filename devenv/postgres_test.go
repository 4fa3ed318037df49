package devenv

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestFindPostgresBin(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	mk := func(dir string, names ...string) string {
		full := filepath.Join(root, dir)
		if err := os.MkdirAll(full, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if err := os.WriteFile(filepath.Join(full, n), []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		return full
	}
	both := mk("both", "initdb", "postgres")
	onlyInitdb := mk("only", "initdb")
	v96, v15, v17 := mk("pg/9.6/bin", "initdb", "postgres"), mk("pg/15/bin", "initdb", "postgres"), mk("pg/17/bin", "initdb", "postgres")
	broken18 := mk("pg/18/bin", "initdb")
	empty := mk("empty")
	notExec := mk("noexec")
	for _, n := range []string{"initdb", "postgres"} {
		if err := os.WriteFile(filepath.Join(notExec, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	noPath := func(string) (string, error) { return "", exec.ErrNotFound }
	onPath := func(dir string) func(string) (string, error) {
		return func(n string) (string, error) { return filepath.Join(dir, n), nil }
	}
	noGlob := func(string) ([]string, error) { return nil, nil }
	versions := func(string) ([]string, error) { return []string{v15, broken18, v96, v17}, nil }

	tests := []struct {
		name   string
		binDir string
		look   func(string) (string, error)
		glob   func(string) ([]string, error)
		want   string
	}{
		{"flag", both, noPath, versions, both},
		{"flag without postgres", onlyInitdb, onPath(both), versions, ""},
		{"flag on empty dir", empty, onPath(both), versions, ""},
		{"flag on non-executables", notExec, noPath, noGlob, ""},
		{"PATH", "", onPath(both), versions, both},
		{"PATH without postgres falls back", "", onPath(onlyInitdb), versions, v17},
		{"newest complete version", "", noPath, versions, v17},
		{"nothing", "", noPath, noGlob, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := findPostgresBin(tt.binDir, tt.look, tt.glob)
			if tt.want == "" {
				if !errors.Is(err, ErrNoPostgres) {
					t.Errorf("findPostgresBin = %q, %v; want ErrNoPostgres", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("findPostgresBin = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestComparePGVersions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, b string
		want int
	}{
		{"/usr/lib/postgresql/9.6/bin", "/usr/lib/postgresql/15/bin", -1},
		{"/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/15/bin", 1},
		{"/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/15/bin", 0},
		{"/usr/lib/postgresql/15.2/bin", "/usr/lib/postgresql/15/bin", 1},
		{"/usr/lib/postgresql/devel/bin", "/usr/lib/postgresql/9/bin", -1},
	}
	for _, tt := range tests {
		if got := comparePGVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("comparePGVersions(%s, %s) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
