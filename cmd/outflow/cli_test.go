package main

import (
	"bytes"
	"context"
	"flag"
	"strings"
	"testing"
)

// commandLines returns every command line that has flags of its own: each
// command, and each subcommand of those that have them.
func commandLines() [][]string {
	subcommands := map[string][]string{"apikey": {"create", "list", "revoke"}, "replay": {"start", "get", "list"}, "secrets": {"generate-key", "rotate-key"}}
	var out [][]string
	for _, c := range commands() {
		if subs, ok := subcommands[c.name]; ok {
			for _, s := range subs {
				out = append(out, []string{c.name, s})
			}
			continue
		}
		out = append(out, []string{c.name})
	}
	return out
}

// TestEveryCommandHelp: `outflow <command> --help` documents every flag the
// command parses, with its environment variable and a description, and an
// unknown flag fails with the parser's message, a hint and exit status 2.
func TestEveryCommandHelp(t *testing.T) {
	t.Parallel()
	for _, line := range commandLines() {
		name := strings.Join(line, " ")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), append(line, "--help"), &stdout, &stderr); code != 0 {
				t.Fatalf("--help: exit %d, stderr %s", code, stderr.String())
			}
			help := stdout.String()
			if !strings.HasPrefix(help, "Usage: outflow "+name+" [flags]") {
				t.Errorf("--help does not start with its usage line:\n%s", help)
			}
			// The flags the command really parses, from its flag set.
			fs := flagSetOf(t, line)
			fs.VisitAll(func(f *flag.Flag) {
				if !strings.Contains(help, "--"+f.Name+" (env "+envName(f.Name)+")") {
					t.Errorf("--help does not list --%s with its environment variable", f.Name)
				}
				if strings.TrimSpace(f.Usage) == "" {
					t.Errorf("--%s has no description", f.Name)
				}
			})

			stdout.Reset()
			stderr.Reset()
			if code := run(context.Background(), append(line, "--no-such-flag"), &stdout, &stderr); code != 2 {
				t.Errorf("an unknown flag: exit %d, want 2", code)
			}
			for _, want := range []string{"flag provided but not defined: -no-such-flag", "Run 'outflow " + name + " --help' for usage."} {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("an unknown flag: stderr lacks %q:\n%s", want, stderr.String())
				}
			}
		})
	}
}

// TestTopLevelHelp: `outflow --help` lists every command; no command, or an
// unknown one, is a usage error.
func TestTopLevelHelp(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args       []string
		code       int
		wantStdout []string
		wantStderr []string
	}{
		{args: []string{"--help"}, code: 0, wantStdout: []string{"Usage: outflow <command> [flags]", "OUTFLOW_DATABASE_URL"}},
		{args: []string{"help", "serve"}, code: 0, wantStdout: []string{"Usage: outflow serve [flags]"}},
		{args: nil, code: 2, wantStdout: []string{"Commands:"}},
		{args: []string{"serv"}, code: 2, wantStderr: []string{`unknown command "serv"`, "Commands:"}},
		{args: []string{"apikey"}, code: 2, wantStdout: []string{"Usage: outflow apikey <create|list|revoke>"}},
		{args: []string{"replay", "--help"}, code: 0, wantStdout: []string{"Usage: outflow replay <start|get|list>"}},
		{args: []string{"replay", "rewind"}, code: 1, wantStderr: []string{`unknown subcommand "rewind"`}},
	}
	for _, c := range commands() {
		tests[0].wantStdout = append(tests[0].wantStdout, "  "+c.name+" ")
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), tt.args, &stdout, &stderr); code != tt.code {
				t.Errorf("exit %d, want %d", code, tt.code)
			}
			for _, w := range tt.wantStdout {
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
