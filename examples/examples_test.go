package examples_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/outflow-dev/outflow/webhook"
)

var update = flag.Bool("update", false, "rewrite testdata/signature_vectors.json from the gateway's signer")

const vectorsFile = "testdata/signature_vectors.json"

// vectorFile is the JSON layout of testdata/signature_vectors.json, which
// the Python receiver's tests read too.
type vectorFile struct {
	Comment string   `json:"comment"`
	Vectors []vector `json:"vectors"`
}

type vector struct {
	Name string `json:"name"`
	// Secrets sign in this order; Signature holds one "v1,…" per secret,
	// space-separated, as during a rotation overlap.
	Secrets   []string `json:"secrets"`
	ID        string   `json:"id"`
	Timestamp int64    `json:"timestamp"`
	// Body is the request body; JSON strings carry any valid UTF-8 exactly.
	Body      string `json:"body"`
	Signature string `json:"signature"`
}

// testSecret returns a fixed, test-only secret of n bytes derived from seed,
// spelled the way the gateway generates them.
func testSecret(t *testing.T, seed byte, n int) string {
	t.Helper()
	key := make([]byte, n)
	for i := range key {
		key[i] = seed + byte(i*37)
	}
	s, err := webhook.GenerateSecret(bytes.NewReader(key), n)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// buildVectors signs fixed inputs with the gateway's webhook.Sign.
func buildVectors(t *testing.T) vectorFile {
	t.Helper()
	envelope := `{"id":"evt_2b9f1c0d8e7a6b5c","type":"feature_view.output","subscription_id":"sub_9x8y7z",` +
		`"created_at":"2026-11-24T10:00:00.123Z","record":{"version":"1","producer":"tecton","job_type":"stream",` +
		`"feature_view_name":"user_items_added_to_cart","feature_view_id":"fv_1","feature_timestamp":"2026-11-24T10:00:00.000123Z",` +
		`"entity_keys":{"user_id":"u1"},"feature_values":{}},"feature_vector":{"workspace_name":"prod","feature_service_name":"promo_fs",` +
		`"features":{"user_stats.lifetime_value":1234.5},"metadata":{"user_stats.lifetime_value":{"effective_time":"2026-11-24T10:00:00.5Z","status":"PRESENT"}},` +
		`"consistent":true,"attempts":2},"source":{"kind":"kafka","topic":"fv-output","partition":3,"offset":1234}}`
	current, previous := testSecret(t, 1, 32), testSecret(t, 2, 32)
	inputs := []vector{
		{Name: "envelope", Secrets: []string{current}, ID: "evt_2b9f1c0d8e7a6b5c", Timestamp: 1795687200, Body: envelope},
		{Name: "rotation overlap: current and previous secret", Secrets: []string{current, previous}, ID: "evt_2b9f1c0d8e7a6b5c", Timestamp: 1795687205, Body: envelope},
		{Name: "non-ASCII and escapes", Secrets: []string{previous}, ID: "evt_utf8",
			Timestamp: 1795687210, Body: `{"id":"evt_utf8","record":{"entity_keys":{"user_id":"zoë ☕ 🛒"},"note":"line\nbreak \"quoted\" <tag> & \\ \u00e9"}}`},
		{Name: "24-byte secret", Secrets: []string{testSecret(t, 3, webhook.MinSecretBytes)}, ID: "evt_min", Timestamp: 1795687215, Body: `{"id":"evt_min"}`},
		{Name: "64-byte secret", Secrets: []string{testSecret(t, 4, webhook.MaxSecretBytes)}, ID: "evt_max", Timestamp: 1795687220, Body: `{"id":"evt_max"}`},
	}
	for i := range inputs {
		v := &inputs[i]
		var keys []webhook.Secret
		for _, s := range v.Secrets {
			k, err := webhook.ParseSecret(s)
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, k)
		}
		v.Signature = webhook.Sign(keys, v.ID, time.Unix(v.Timestamp, 0), []byte(v.Body))
	}
	return vectorFile{
		Comment: "Standard Webhooks signatures made by the gateway's webhook.Sign, checked by TestSignatureVectors " +
			"(examples/examples_test.go) and verified by the Python receiver's tests. Test-only secrets. " +
			"Regenerate with: go test ./examples -run TestSignatureVectors -update",
		Vectors: inputs,
	}
}

func encodeVectors(t *testing.T, f vectorFile) []byte {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(f); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestSignatureVectors keeps testdata/signature_vectors.json equal to what
// the gateway's signer produces, and checks each vector with the Standard
// Webhooks reference Go library. The Python tests verify the same file, so
// the gateway, Go receivers and Python receivers agree byte for byte.
func TestSignatureVectors(t *testing.T) {
	t.Parallel()
	want := encodeVectors(t, buildVectors(t))
	if *update {
		if err := os.WriteFile(vectorsFile, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatalf("%v (create it with -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from what webhook.Sign produces now.\n"+
			"If the gateway's signatures changed, every deployed receiver would reject them: fix the signer.\n"+
			"If only the vectors' inputs changed on purpose, regenerate with -update.\ngot:\n%s\nwant:\n%s", vectorsFile, got, want)
	}

	var f vectorFile
	if err := json.Unmarshal(got, &f); err != nil {
		t.Fatal(err)
	}
	for _, v := range f.Vectors {
		if n := len(strings.Fields(v.Signature)); n != len(v.Secrets) {
			t.Errorf("%s: %d signatures for %d secrets", v.Name, n, len(v.Secrets))
		}
		h := http.Header{}
		h.Set(standardwebhooks.HeaderWebhookID, v.ID)
		h.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(v.Timestamp, 10))
		h.Set(standardwebhooks.HeaderWebhookSignature, v.Signature)
		for i, s := range v.Secrets {
			wh, err := standardwebhooks.NewWebhook(s)
			if err != nil {
				t.Fatal(err)
			}
			// The vectors' timestamps are fixed, so skip the freshness check.
			if err := wh.VerifyIgnoringTimestamp([]byte(v.Body), h); err != nil {
				t.Errorf("%s: secret %d: reference library: %v", v.Name, i, err)
			}
			if err := wh.VerifyIgnoringTimestamp([]byte(v.Body+" "), h); err == nil {
				t.Errorf("%s: secret %d: a changed body verified", v.Name, i)
			}
		}
	}
}

// TestPythonReceiver runs the Python receiver's pytest suite, which also
// verifies testdata/signature_vectors.json with the standardwebhooks package
// from PyPI. It needs a python with standardwebhooks and pytest: the venv
// made by scripts/python-deps.sh (${OUTFLOW_PY_VENV:-.cache/pyvenv}), or
// OUTFLOW_TEST_PYTHON, or python3 on PATH. Without one it skips locally and
// fails under CI=true.
func TestPythonReceiver(t *testing.T) {
	t.Parallel()
	python, err := findPython()
	if err != nil {
		missingPython(t, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	check := exec.CommandContext(ctx, python, "-c", "import standardwebhooks, pytest")
	if out, err := check.CombinedOutput(); err != nil {
		missingPython(t, errors.New(python+" cannot import standardwebhooks and pytest: "+lastLine(out)))
	}

	cmd := exec.CommandContext(ctx, python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "webhook-receiver-python")
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s -m pytest webhook-receiver-python: %v\n%s", python, err, out)
	}
	t.Logf("%s: %s", python, lastLine(out))
}

func lastLine(out []byte) string {
	s := strings.TrimSpace(string(out))
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// findPython picks the interpreter: OUTFLOW_TEST_PYTHON, else the venv of
// scripts/python-deps.sh if it exists, else python3 on PATH.
func findPython() (string, error) {
	if p := os.Getenv("OUTFLOW_TEST_PYTHON"); p != "" {
		return p, nil
	}
	venv := os.Getenv("OUTFLOW_PY_VENV")
	if venv == "" {
		venv = filepath.Join(".cache", "pyvenv")
	}
	if !filepath.IsAbs(venv) {
		venv = filepath.Join("..", venv) // relative to the repository root; tests run in examples/
	}
	if p := filepath.Join(venv, "bin", "python"); fileExists(p) {
		return filepath.Abs(p)
	}
	return exec.LookPath("python3")
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// missingPython skips the test, or fails it under CI (CI=true), where a
// green run must mean the Python receiver was tested.
func missingPython(t *testing.T, err error) {
	t.Helper()
	const how = "run scripts/python-deps.sh (or set OUTFLOW_TEST_PYTHON to a python with standardwebhooks and pytest)"
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatalf("no usable python under CI=%s, where this test must not skip: %v; %s", os.Getenv("CI"), err, how)
	}
	t.Skipf("skipping the Python receiver's tests: %v; %s", err, how)
}
