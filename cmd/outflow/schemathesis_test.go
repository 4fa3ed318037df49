//go:build unix

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/proto/openapi"
)

// Schemathesis run settings: a fixed seed so a failure reproduces, and a
// bound on the examples per operation so the run stays near a minute.
const (
	schemathesisSeed        = 20261204
	schemathesisMaxExamples = 150
)

// TestSchemathesis runs schemathesis (pinned in
// scripts/requirements-schemathesis.txt, installed by scripts/python-deps.sh)
// against `outflow dev`: requests generated from the served OpenAPI document
// for every operation, with every check (server errors, status codes,
// content types, response schemas, headers, acceptance of valid and
// rejection of invalid data, missing auth, unsupported methods and Allow,
// use after free, ...), in its examples, coverage, fuzzing and stateful
// phases. Any failure fails the test. The exceptions to the checks, with
// their reasons, are in testdata/schemathesis.toml. It logs, per operation,
// the requests sent by status class, from the run's HAR report.
func TestSchemathesis(t *testing.T) {
	t.Parallel()
	requireDevTools(t, "bash")
	st := schemathesisBinary(t)

	p := startDev(t, devEnv(), "--http-addr", freeAddr(t), "--grpc-addr", freeAddr(t), "--rate", "0")
	p.waitLine(devReadyRE, 60*time.Second)
	keyLine := p.waitLine(regexp.MustCompile(`^\s+API key\s+ofk_`), 5*time.Second)
	key := regexp.MustCompile(`ofk_[A-Za-z0-9_-]+`).FindString(keyLine)
	apiLine := p.waitLine(regexp.MustCompile(`^\s+REST API\s+http://`), 5*time.Second)
	base := regexp.MustCompile(`http://[0-9.:]+`).FindString(apiLine)

	reports := t.TempDir()
	config, err := filepath.Abs(filepath.Join("testdata", "schemathesis.toml"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, st, "--no-color", "--config-file", config, "run", base+"/openapi.json",
		"--url", base,
		"--header", "Authorization: Bearer "+key,
		"--checks", "all",
		"--seed", strconv.Itoa(schemathesisSeed),
		"--max-examples", strconv.Itoa(schemathesisMaxExamples),
		// One worker: hypothesis's lambda descriptions are not thread-safe
		// on every Python (an AST recursion-depth error).
		"--workers", "1",
		"--request-timeout", "10",
		"--report", "har,junit", "--report-dir", reports,
	)
	cmd.Dir = reports // schemathesis writes a cache directory where it runs
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	out, runErr := cmd.CombinedOutput()
	elapsed := time.Since(start)

	perOp, err := harStatuses(reports)
	if err != nil {
		t.Errorf("reading the HAR report: %v", err)
	}
	ops := slices.Sorted(maps.Keys(perOp))
	var fivexx int
	for _, op := range ops {
		var codes []string
		for _, code := range slices.Sorted(maps.Keys(perOp[op])) {
			if code >= 500 {
				fivexx += perOp[op][code]
			}
			codes = append(codes, fmt.Sprintf("%d×%d", perOp[op][code], code))
		}
		t.Logf("%-80s %s", op, strings.Join(codes, " "))
	}
	t.Logf("schemathesis ran in %s: %s", elapsed.Round(time.Second), summaryLine(out))
	if runErr != nil || fivexx > 0 {
		t.Fatalf("schemathesis: %v, %d answers 5xx\n%s", runErr, fivexx, tail(string(out), 20000))
	}
	for _, op := range documentedOperations(t) {
		if _, ok := perOp[op]; !ok {
			t.Errorf("schemathesis sent no request to %s", op)
		}
	}
}

// schemathesisBinary finds the schemathesis of the Python venv
// (OUTFLOW_PY_VENV, default .cache/pyvenv at the repository root); without
// one the test skips, or fails under CI=true.
func schemathesisBinary(t *testing.T) string {
	t.Helper()
	venv := os.Getenv("OUTFLOW_PY_VENV")
	if venv == "" {
		venv = filepath.Join(".cache", "pyvenv")
	}
	if !filepath.IsAbs(venv) {
		venv = filepath.Join("..", "..", venv) // tests run in cmd/outflow
	}
	st, err := filepath.Abs(filepath.Join(venv, "bin", "schemathesis"))
	if err == nil {
		_, err = os.Stat(st)
	}
	if err == nil {
		return st
	}
	const how = "run scripts/python-deps.sh (make test does)"
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatalf("no schemathesis under CI=%s, where this test must not skip: %v; %s", os.Getenv("CI"), err, how)
	}
	t.Skipf("no schemathesis: %v; %s", err, how)
	return ""
}

// harStatuses counts the answers of a HAR report in dir by operation
// ("GET /v1/subscriptions/{id}") and status code.
func harStatuses(dir string) (map[string]map[int]int, error) {
	files, err := filepath.Glob(filepath.Join(dir, "har-*.json"))
	if err != nil || len(files) != 1 {
		return nil, fmt.Errorf("want one HAR report in %s, found %v (%v)", dir, files, err)
	}
	raw, err := os.ReadFile(files[0])
	if err != nil {
		return nil, err
	}
	var har struct {
		Log struct {
			Entries []struct {
				Request struct {
					Method string `json:"method"`
					URL    string `json:"url"`
				} `json:"request"`
				Response struct {
					Status int `json:"status"`
				} `json:"response"`
			} `json:"entries"`
		} `json:"log"`
	}
	if err := json.Unmarshal(raw, &har); err != nil {
		return nil, err
	}
	templates := operationTemplates()
	out := map[string]map[int]int{}
	for _, e := range har.Log.Entries {
		u, err := url.Parse(e.Request.URL)
		if err != nil {
			return nil, err
		}
		op := e.Request.Method + " " + matchTemplate(templates, e.Request.Method, u.EscapedPath())
		if out[op] == nil {
			out[op] = map[int]int{}
		}
		out[op][e.Response.Status]++
	}
	return out, nil
}

type opTemplate struct {
	path    string
	re      *regexp.Regexp
	methods []string
}

// operationTemplates are the documented paths as regular expressions; a
// path with a custom method (":test") is tried before the plain one.
func operationTemplates() []opTemplate {
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openapi.JSON, &doc); err != nil {
		panic(err)
	}
	var out []opTemplate
	param := regexp.MustCompile(`\\\{[^}]+\\\}`)
	for path, ops := range doc.Paths {
		re := regexp.MustCompile("^" + param.ReplaceAllString(regexp.QuoteMeta(path), `[^/]+`) + "$")
		var methods []string
		for m := range ops {
			methods = append(methods, strings.ToUpper(m))
		}
		out = append(out, opTemplate{path: path, re: re, methods: methods})
	}
	slices.SortFunc(out, func(a, b opTemplate) int {
		return strings.Count(b.path, ":") - strings.Count(a.path, ":")
	})
	return out
}

// matchTemplate names the documented path a request went to; requests to
// undocumented paths or methods (schemathesis probes them) keep their path.
func matchTemplate(templates []opTemplate, method, path string) string {
	for _, tpl := range templates {
		if tpl.re.MatchString(path) && slices.Contains(tpl.methods, method) {
			return tpl.path
		}
	}
	return "(an undocumented method or path)"
}

func documentedOperations(t *testing.T) []string {
	t.Helper()
	var ops []string
	for _, tpl := range operationTemplates() {
		for _, m := range tpl.methods {
			ops = append(ops, m+" "+tpl.path)
		}
	}
	if len(ops) < 13 {
		t.Fatalf("the document has %d operations", len(ops))
	}
	return ops
}

// summaryLine is schemathesis's last "=== … ===" line.
func summaryLine(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "===") {
			return strings.Trim(lines[i], "= ")
		}
	}
	return errors.New("no summary").Error()
}
