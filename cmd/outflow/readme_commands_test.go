package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/internal/testenv"
)

// shellBlocks returns the bodies of the README's ```sh code blocks.
func shellBlocks(readme string) []string {
	var blocks []string
	var cur *strings.Builder
	for line := range strings.SplitSeq(readme, "\n") {
		switch {
		case cur == nil && strings.TrimSpace(line) == "```sh":
			cur = &strings.Builder{}
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line + "\n")
		}
	}
	return blocks
}

// shellCommands splits a block into complete commands: a newline ends a
// command unless it is escaped or inside quotes or $( ). Comments are
// dropped. It understands just the shell the README uses.
func shellCommands(block string) []string {
	var cmds []string
	var cur strings.Builder
	var single, double, comment bool
	depth := 0
	flush := func() {
		if c := strings.TrimSpace(cur.String()); c != "" {
			cmds = append(cmds, c)
		}
		cur.Reset()
	}
	for i := 0; i < len(block); i++ {
		c := block[i]
		switch {
		case comment:
			if c == '\n' {
				comment = false
				if depth == 0 && !single && !double {
					flush()
				}
			}
			continue
		case single:
			single = c != '\''
		case c == '\\' && i+1 < len(block):
			if block[i+1] == '\n' {
				i++ // a continuation
				cur.WriteByte(' ')
				continue
			}
			cur.WriteByte(c)
			i++
			c = block[i]
		case double:
			if c == '"' {
				double = false
			} else if c == '$' && i+1 < len(block) && block[i+1] == '(' {
				depth++
			} else if c == ')' && depth > 0 {
				depth--
			}
		case c == '\'':
			single = true
		case c == '"':
			double = true
		case c == '$' && i+1 < len(block) && block[i+1] == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case c == '#' && (cur.Len() == 0 || strings.HasSuffix(cur.String(), " ")):
			comment = true
			continue
		case c == '\n' && depth == 0:
			flush()
			continue
		}
		cur.WriteByte(c)
	}
	flush()
	return cmds
}

// readmeCommands returns, in order, every README command that runs curl or
// grpcurl.
func readmeCommands(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	tool := regexp.MustCompile(`(^|[\s(|])(curl|grpcurl)\s`)
	var out []string
	for _, block := range shellBlocks(string(raw)) {
		for _, c := range shellCommands(block) {
			if tool.MatchString(c) {
				out = append(out, c)
			}
		}
	}
	return out
}

func TestShellCommands(t *testing.T) {
	block := `# a comment
export A=1   # the key
SUB=$(curl -sS -X POST x -d '{
  "a": "b # not a comment"
}' | grep -o '"sub_[^"]*"' | tr -d '"')
curl -N -H "x: $A" \
  "y/$SUB"
grpcurl -d "{\"id\": \"$(date -u +%F)\"}" \
  z list
`
	want := []string{
		"export A=1",
		"SUB=$(curl -sS -X POST x -d '{\n  \"a\": \"b # not a comment\"\n}' | grep -o '\"sub_[^\"]*\"' | tr -d '\"')",
		`curl -N -H "x: $A"    "y/$SUB"`,
		`grpcurl -d "{\"id\": \"$(date -u +%F)\"}"    z list`,
	}
	got := shellCommands(block)
	if len(got) != len(want) {
		t.Fatalf("got %d commands %q, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("command %d:\n got  %q\n want %q", i, got[i], want[i])
		}
	}
}

// TestReadmeCommands runs every curl and grpcurl command of the README, in
// order, in one shell, against `outflow dev`: each must succeed (curl with
// --fail-with-body), and the streaming ones must print events before they
// are cut off. The README's addresses are replaced by the dev instance's.
func TestReadmeCommands(t *testing.T) {
	t.Parallel()
	cmds := readmeCommands(t)
	if len(cmds) < 15 {
		t.Fatalf("found only %d curl/grpcurl commands in the README; the extraction is broken", len(cmds))
	}
	databaseURL := testenv.Postgres(t)
	dir := t.TempDir()
	grpcurl := filepath.Join(dir, "grpcurl")
	if out, err := exec.Command("go", "build", "-modfile=../../tools/go.mod", "-o", grpcurl, "github.com/fullstorydev/grpcurl/cmd/grpcurl").CombinedOutput(); err != nil {
		t.Fatalf("building grpcurl: %v\n%s", err, out)
	}
	httpAddr, grpcAddr := freeAddr(t), freeAddr(t)
	dev := exec.Command(outflowBinary(t), "dev", "--http-addr", httpAddr, "--grpc-addr", grpcAddr, "--database-url", databaseURL, "--rate", "10")
	stdout, err := dev.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	devLogs := &lockedBuffer{}
	dev.Stderr = devLogs
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	printed := &lockedBuffer{}
	ready := make(chan string, 1)
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stdout)
		key := regexp.MustCompile(`API key\s+(ofk_\S+)`)
		found := false
		for sc.Scan() {
			fmt.Fprintln(printed, sc.Text())
			if m := key.FindStringSubmatch(sc.Text()); m != nil && !found {
				found = true
				ready <- m[1]
			}
		}
		_ = dev.Wait()
	}()
	t.Cleanup(func() {
		_ = dev.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = dev.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("outflow dev printed:\n%s\nlogs:\n%s", printed.String(), tail(devLogs.String(), 4000))
		}
	})
	var apiKey string
	select {
	case apiKey = <-ready:
	case <-exited:
		t.Fatalf("outflow dev exited before it was ready:\n%s\n%s", printed.String(), devLogs.String())
	case <-time.After(60 * time.Second):
		t.Fatal("outflow dev was not ready within 60s")
	}

	// One shell runs them all, so variables set by one (SUB=$(curl …))
	// reach the next. A streaming command runs for a few seconds, its
	// output kept to check.
	var script strings.Builder
	script.WriteString("set -u -o pipefail\n")
	type ran struct {
		cmd       string
		streaming bool
		out       string
	}
	var runs []*ran
	for i, c := range cmds {
		r := &ran{cmd: c, out: filepath.Join(dir, fmt.Sprintf("out.%d", i))}
		runs = append(runs, r)
		c = strings.ReplaceAll(c, "localhost:8080", httpAddr)
		c = strings.ReplaceAll(c, "127.0.0.1:9090", grpcAddr)
		c = regexp.MustCompile(`(^|[\s(|])curl `).ReplaceAllString(c, "${1}curl --fail-with-body ")
		c = regexp.MustCompile(`(^|[\s(|])grpcurl `).ReplaceAllString(c, "${1}"+grpcurl+" ")
		r.streaming = strings.Contains(c, "curl --fail-with-body -N") || strings.Contains(c, "StreamEvents")
		if r.streaming {
			// Cut off after a few seconds; 124 is timeout's status.
			fmt.Fprintf(&script, "timeout 6 %s >%s 2>&1; rc=$?; [ $rc = 124 ] && rc=0\n", c, r.out)
		} else {
			fmt.Fprintf(&script, "%s >%s 2>&1; rc=$?\n", c, r.out)
		}
		fmt.Fprintf(&script, "echo \"command %d: exit $rc\"\n", i)
	}
	sh := exec.Command("bash", "-c", script.String())
	sh.Dir = dir
	sh.Env = append(os.Environ(), "OUTFLOW_API_KEY="+apiKey)
	out, err := sh.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's commands: %v\n%s", err, out)
	}
	status := regexp.MustCompile(`command (\d+): exit (\d+)`)
	seen := 0
	for _, m := range status.FindAllStringSubmatch(string(out), -1) {
		seen++
		var i int
		fmt.Sscan(m[1], &i)
		r := runs[i]
		output, _ := os.ReadFile(r.out)
		if testing.Verbose() {
			t.Logf("README command %d ok: %.80s → %.160q", i, r.cmd, output)
		}
		if m[2] != "0" {
			t.Errorf("README command failed (exit %s):\n%s\noutput:\n%s", m[2], r.cmd, tail(string(output), 2000))
			continue
		}
		if r.streaming {
			events := 0
			for line := range bytes.SplitSeq(output, []byte("\n")) {
				var msg map[string]any
				if json.Unmarshal(line, &msg) == nil && bytes.Contains(line, []byte(`"record"`)) {
					events++
				}
			}
			if events == 0 && !bytes.Contains(output, []byte(`"record"`)) {
				t.Errorf("README streaming command printed no event in 6s:\n%s\noutput:\n%s", r.cmd, tail(string(output), 2000))
			}
		}
	}
	if seen != len(runs) {
		t.Fatalf("ran %d of %d commands:\n%s", seen, len(runs), out)
	}
	t.Logf("ran the README's %d curl/grpcurl commands against outflow dev", len(runs))
}
