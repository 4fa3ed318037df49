package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
)

// updateReadme rewrites the generated parts of README.md instead of
// checking them: `make readme`.
var updateReadme = flag.Bool("update-readme", false, "rewrite README.md's generated configuration section")

const (
	readmePath   = "../../README.md"
	configBegin  = "<!-- config:begin: generated from the flags by `make readme`; TestReadmeConfigTable fails when it drifts -->"
	configEnd    = "<!-- config:end -->"
	tableHeading = "| flag | environment variable | default | meaning |\n|---|---|---|---|\n"
)

// configured are the command lines whose flags the README documents.
var configured = [][]string{
	{"serve"}, {"dev"}, {"featureserver"}, {"demo-producer"}, {"migrate"},
	{"apikey", "create"}, {"replay", "start"}, {"secrets", "rotate-key"},
}

// configTable renders the flags of the configured commands as markdown,
// from the very flag sets the commands parse.
func configTable(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, line := range configured {
		fs := flagSetOf(t, line)
		fmt.Fprintf(&b, "\n#### `outflow %s`\n\n%s", strings.Join(line, " "), tableHeading)
		fs.VisitAll(func(f *flag.Flag) {
			def := f.DefValue
			if def == "" || def == "false" || def == "0" || def == "0s" {
				def = ""
			} else {
				def = "`" + def + "`"
			}
			usage := strings.ReplaceAll(f.Usage, "|", `\|`)
			fmt.Fprintf(&b, "| `--%s` | `%s` | %s | %s |\n", f.Name, envName(f.Name), def, usage)
		})
	}
	return b.String()
}

// flagSetOf returns the flag set the command line parses, captured while
// it runs with --help.
func flagSetOf(t *testing.T, line []string) *flag.FlagSet {
	t.Helper()
	var fs *flag.FlagSet
	env := &environment{stdout: io.Discard, stderr: io.Discard, getenv: func(string) string { return "" },
		sawFlags: func(f *flag.FlagSet) { fs = f }}
	for _, c := range commands() {
		if c.name != line[0] {
			continue
		}
		if err := c.run(context.Background(), env, append(line[1:], "--help")); err != nil && !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("outflow %s --help: %v", strings.Join(line, " "), err)
		}
	}
	if fs == nil {
		t.Fatalf("outflow %s parsed no flag set", strings.Join(line, " "))
	}
	return fs
}

// TestReadmeConfigTable: the README's configuration tables are exactly what
// the commands' flags say. `make readme` regenerates them.
func TestReadmeConfigTable(t *testing.T) {
	raw, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	i, j := strings.Index(readme, configBegin), strings.Index(readme, configEnd)
	if i < 0 || j < i {
		t.Fatalf("README.md lacks the generated configuration section (%q … %q)", configBegin, configEnd)
	}
	want := configTable(t) + "\n"
	got := readme[i+len(configBegin) : j]
	if got == want {
		return
	}
	if *updateReadme {
		if err := os.WriteFile(readmePath, []byte(readme[:i+len(configBegin)]+want+readme[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	gl, wl := strings.Split(got, "\n"), strings.Split(want, "\n")
	for k := range max(len(gl), len(wl)) {
		var g, w string
		if k < len(gl) {
			g = gl[k]
		}
		if k < len(wl) {
			w = wl[k]
		}
		if g != w {
			t.Fatalf("README.md's configuration section drifted from the flags (run `make readme`); first difference at line %d:\n README: %s\n flags:  %s", k+1, g, w)
		}
	}
}
