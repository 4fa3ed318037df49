package examples_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/webhook"
)

// readmeJS returns the README's ```js block: the Node verification snippet.
func readmeJS(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(raw), "\n```js\n")
	if !ok {
		t.Fatal("README.md has no ```js block")
	}
	js, _, ok := strings.Cut(rest, "\n```\n")
	if !ok {
		t.Fatal("README.md's ```js block does not end")
	}
	return js
}

// TestNodeVerify runs the README's Node snippet, with the Standard Webhooks
// JavaScript library of scripts/node-deps.sh, on events signed just now by
// the gateway's signer: each verifies, and a tampered one does not. Without
// node or the library it skips, except under CI=true, where it fails.
func TestNodeVerify(t *testing.T) {
	dir := os.Getenv("OUTFLOW_NODE_DIR")
	if dir == "" {
		dir = "../.cache/node"
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(dir, "node_modules", "standardwebhooks", "package.json"))
	}
	if err != nil {
		msg := "node or the standardwebhooks package is missing (run scripts/node-deps.sh): " + err.Error()
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}

	// The snippet's imports stay at the module's top; the rest becomes the
	// body of a function of the names it expects.
	var imports, body []string
	for line := range strings.SplitSeq(readmeJS(t), "\n") {
		if strings.HasPrefix(line, "import ") {
			imports = append(imports, line)
		} else {
			body = append(body, "  "+line)
		}
	}
	module := strings.Join(imports, "\n") + `
import { readFileSync } from "node:fs";

function verify(secret, rawBody, headers) {
` + strings.Join(body, "\n") + `
  return event;
}

const results = [];
for (const c of JSON.parse(readFileSync(process.argv[2], "utf8"))) {
  try {
    const event = verify(c.secret, c.body, c.headers);
    results.push({ name: c.name, ok: true, id: event.id ?? null });
  } catch (e) {
    results.push({ name: c.name, ok: false, error: String(e) });
  }
}
console.log(JSON.stringify(results));
`
	script := filepath.Join(dir, "readme-verify.mjs") // beside node_modules, so the import resolves
	if err := os.WriteFile(script, []byte(module), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(script) })

	type check struct {
		Name    string            `json:"name"`
		Secret  string            `json:"secret"`
		Body    string            `json:"body"`
		Headers map[string]string `json:"headers"`
		want    bool
	}
	now := time.Now()
	var cases []check
	for _, v := range buildVectors(t).Vectors {
		var keys []webhook.Secret
		for _, s := range v.Secrets {
			k, err := webhook.ParseSecret(s)
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, k)
		}
		headers := map[string]string{
			"webhook-id": v.ID, "webhook-timestamp": strconv.FormatInt(now.Unix(), 10),
			"webhook-signature": webhook.Sign(keys, v.ID, now, []byte(v.Body)),
			"content-type":      "application/json",
		}
		// Every secret of a rotation overlap verifies on its own.
		for i, s := range v.Secrets {
			cases = append(cases, check{Name: v.Name + " / secret " + strconv.Itoa(i), Secret: s, Body: v.Body, Headers: headers, want: true})
		}
		cases = append(cases, check{Name: v.Name + " / tampered", Secret: v.Secrets[0], Body: v.Body + " ", Headers: headers, want: false})
	}
	in := filepath.Join(t.TempDir(), "cases.json")
	raw, _ := json.Marshal(cases)
	if err := os.WriteFile(in, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(node, script, in).CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	var results []struct {
		Name  string `json:"name"`
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &results); err != nil || len(results) != len(cases) {
		t.Fatalf("node printed %s (%v)", out, err)
	}
	for i, r := range results {
		if r.OK != cases[i].want {
			t.Errorf("%s: verified %v, want %v (%s)", r.Name, r.OK, cases[i].want, r.Error)
		}
	}
	t.Logf("the README's Node snippet checked %d signatures", len(results))
}
