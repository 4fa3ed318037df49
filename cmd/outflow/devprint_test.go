package main

import (
	"encoding/json"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/devenv"
)

func TestShellQuote(t *testing.T) {
	t.Parallel()
	tests := []string{"", "plain", "it's", `{"a": "b c"}`, `$SUB \n "x"`, "''"}
	for _, in := range tests {
		out, err := exec.Command("sh", "-c", "printf %s "+shellQuote(in)).Output()
		if err != nil {
			t.Fatalf("sh: %v", err)
		}
		if string(out) != in {
			t.Errorf("sh read %s as %q, want %q", shellQuote(in), out, in)
		}
	}
}

// TestDevInstructions: every printed command is valid shell with the real
// addresses and key, and every JSON body it sends is valid JSON.
func TestDevInstructions(t *testing.T) {
	t.Parallel()
	base := devenv.Info{StartedIn: 2345 * time.Millisecond, HTTPAddr: "127.0.0.1:18080", GRPCAddr: "127.0.0.1:19090",
		APIKey: "ofk_k3y-_x", Tenant: "dev", KafkaAddr: "127.0.0.1:19092", FeatureURL: "http://127.0.0.1:18090",
		DatabaseURL: "postgres://outflow@127.0.0.1:15432/postgres?sslmode=disable", PostgresDir: "/tmp/outflow-dev-1/pg",
		Rate: 2, Users: 20, NewUsers: devenv.DefaultDemoNewUsers, Lag: 500 * time.Millisecond, LagJitter: time.Second}
	withReceiver := base
	withReceiver.ReceiverURL = "http://127.0.0.1:18070/hooks/cart"
	external := base
	external.PostgresDir, external.NameSuffix, external.Rate = "", " 101112", 0
	tests := []struct {
		name string
		info devenv.Info
		want []string
	}{
		{"plain", base, []string{"started in 2.3s", "http://127.0.0.1:3000/hooks/cart", "/tmp/outflow-dev-1/pg", "500ms to 1.5s",
			"25% from first-time shoppers new1, new2", "1m0s stale"}},
		{"receiver", withReceiver, []string{`"url":"http://127.0.0.1:18070/hooks/cart"`, "receiver: verified", "user_id=new...) waits for its values: attempts > 1"}},
		{"external database", external, []string{"the database of DATABASE_URL", "promo cart webhook 101112", "--rate 0"}},
	}
	bodyRE := regexp.MustCompile(`(?s)-d '(\{[^']*)'`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			text := devInstructions(tt.info)
			for _, w := range append(tt.want, devReadyLine, "127.0.0.1:18080/v1/subscriptions", "127.0.0.1:19090 outflow.v1.EventService/StreamEvents",
				"Bearer ofk_k3y-_x", "/openapi.json", "/metrics", "events:stream") {
				if !strings.Contains(text, w) {
					t.Errorf("instructions lack %q:\n%s", w, text)
				}
			}
			cmds := printedCommands(strings.Split(text, "\n"))
			if len(cmds) != 7 {
				t.Errorf("%d commands, want 7: %q", len(cmds), cmds)
			}
			bodies := 0
			for _, c := range cmds {
				if out, err := exec.Command("bash", "-n", "-c", c).CombinedOutput(); err != nil {
					t.Errorf("not valid shell: %s\n%s", c, out)
				}
				for _, m := range bodyRE.FindAllStringSubmatch(c, -1) {
					bodies++
					if !json.Valid([]byte(m[1])) {
						t.Errorf("invalid JSON body %s", m[1])
					}
				}
			}
			if bodies != 2 {
				t.Errorf("%d JSON bodies in the commands, want 2 (webhook and stream)", bodies)
			}
		})
	}
}

// printedCommands returns the shell commands of the instructions block, a
// command's continuation lines (after a trailing backslash) joined to it;
// comments, the table of addresses and blank lines are skipped.
func printedCommands(lines []string) []string {
	var cmds []string
	var cur strings.Builder
	for _, l := range lines {
		if cur.Len() == 0 && (l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, " ") ||
			strings.HasPrefix(l, devReadyLine) || strings.HasPrefix(l, "receiver:")) {
			continue
		}
		cur.WriteString(l)
		if strings.HasSuffix(l, `\`) {
			cur.WriteString("\n")
			continue
		}
		cmds = append(cmds, cur.String())
		cur.Reset()
	}
	return cmds
}

// TestPrintedCommands checks the parser the quickstart test follows the
// instructions with.
func TestPrintedCommands(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		lines []string
		want  []string
	}{
		{"empty", nil, nil},
		{"skips comments, table and receiver lines", []string{devReadyLine + " (started in 1s)", "  REST API x", "# 1. a", "", "receiver: verified x", "curl a"}, []string{"curl a"}},
		{"joins continuations", []string{"curl a \\", "  -d b", "echo c"}, []string{"curl a \\\n  -d b", "echo c"}},
		{"keeps comment-like continuation", []string{"curl \\", "# not a comment"}, []string{"curl \\\n# not a comment"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := printedCommands(tt.lines)
			if !slices.Equal(got, tt.want) {
				t.Errorf("printedCommands = %q, want %q", got, tt.want)
			}
		})
	}
}
