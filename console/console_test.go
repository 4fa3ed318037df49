package console

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"
)

func newTestHandler(t *testing.T) *Handler {
	t.Helper()
	h, err := New()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func get(t *testing.T, h http.Handler, method, target string, hdr map[string]string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func TestServe(t *testing.T) {
	t.Parallel()
	h := newTestHandler(t)
	tests := []struct {
		method, target string
		status         int
		contentType    string
	}{
		{"GET", "/console/", 200, "text/html; charset=utf-8"},
		{"HEAD", "/console/", 200, "text/html; charset=utf-8"},
		{"GET", "/console/index.html", 200, "text/html; charset=utf-8"},
		{"GET", "/console/app.js", 200, "text/javascript; charset=utf-8"},
		{"GET", "/console/vendor/preact.mjs", 200, "text/javascript; charset=utf-8"},
		{"GET", "/console/style.css", 200, "text/css; charset=utf-8"},
		{"GET", "/console/vendor/LICENSE-preact", 200, "text/plain; charset=utf-8"},
		{"GET", "/console/nope.js", 404, ""},
		{"GET", "/console/vendor/", 404, ""}, // no directory listings
		{"GET", "/console/../go.mod", 404, ""},
		{"GET", "/other", 404, ""},
		{"POST", "/console/", 405, ""},
	}
	for _, tt := range tests {
		resp := get(t, h, tt.method, tt.target, nil)
		if resp.StatusCode != tt.status {
			t.Errorf("%s %s = %d, want %d", tt.method, tt.target, resp.StatusCode, tt.status)
			continue
		}
		if tt.status != 200 {
			continue
		}
		if got := resp.Header.Get("Content-Type"); got != tt.contentType {
			t.Errorf("%s %s: Content-Type %q, want %q", tt.method, tt.target, got, tt.contentType)
		}
		for _, k := range []string{"Content-Security-Policy", "ETag", "X-Content-Type-Options", "Cache-Control"} {
			if resp.Header.Get(k) == "" {
				t.Errorf("%s %s: no %s header", tt.method, tt.target, k)
			}
		}
	}
}

// TestETag: an unchanged asset is answered 304 to a revalidation.
func TestETag(t *testing.T) {
	t.Parallel()
	h := newTestHandler(t)
	first := get(t, h, "GET", "/console/app.js", nil)
	etag := first.Header.Get("ETag")
	again := get(t, h, "GET", "/console/app.js", map[string]string{"If-None-Match": etag})
	if again.StatusCode != http.StatusNotModified {
		t.Errorf("revalidating with %s = %d, want 304", etag, again.StatusCode)
	}
}

// TestCSPAllowsOnlyTheImportMap: the policy's one script hash is the import
// map's, so the page runs, and no other inline script could.
func TestCSPAllowsOnlyTheImportMap(t *testing.T) {
	t.Parallel()
	h := newTestHandler(t)
	resp := get(t, h, "GET", "/console/", nil)
	body, _ := io.ReadAll(resp.Body)
	m := importMapRE.FindSubmatch(body)
	if m == nil {
		t.Fatal("index.html has no import map")
	}
	sum := sha256.Sum256(m[1])
	csp := resp.Header.Get("Content-Security-Policy")
	if want := "script-src 'self' 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"; !strings.Contains(csp, want) {
		t.Errorf("CSP %q does not contain %q", csp, want)
	}
	if strings.Contains(csp, "unsafe") {
		t.Errorf("CSP %q allows unsafe sources", csp)
	}
	if n := strings.Count(string(body), "<script"); n != 2 {
		t.Errorf("index.html has %d script elements, want the import map and app.js", n)
	}
}

// TestModulesResolve: every relative import of every module, and every
// import-map target, is an embedded file, so no request of the page 404s
// and nothing is fetched from elsewhere.
func TestModulesResolve(t *testing.T) {
	t.Parallel()
	h := newTestHandler(t)
	m := importMapRE.FindSubmatch(h.files["index.html"].body)
	var im struct {
		Imports map[string]string `json:"imports"`
	}
	if err := json.Unmarshal(m[1], &im); err != nil {
		t.Fatalf("the import map is not JSON: %v", err)
	}
	for spec, target := range im.Imports {
		if _, ok := h.files[path.Clean(target)]; !ok {
			t.Errorf("import map: %s → %s, which is not embedded", spec, target)
		}
	}
	// Static import statements, at a line start or after a ";" (minified).
	importRE := regexp.MustCompile(`(?m)(?:^|;)\s*import\s*(?:[^"';]*?\bfrom\s*)?"([^"]+)"`)
	imports := 0
	for name, f := range h.files {
		if !strings.HasSuffix(name, ".js") && !strings.HasSuffix(name, ".mjs") {
			continue
		}
		for _, sm := range importRE.FindAllSubmatch(f.body, -1) {
			spec := string(sm[1])
			imports++
			switch {
			case strings.HasPrefix(spec, "./") || strings.HasPrefix(spec, "../"):
				if _, ok := h.files[path.Join(path.Dir(name), spec)]; !ok {
					t.Errorf("%s imports %s, which is not embedded", name, spec)
				}
			case im.Imports[spec] == "":
				t.Errorf("%s imports %q, which the import map does not name", name, spec)
			}
		}
	}
	if imports < 8 {
		t.Errorf("found %d imports in the modules; the pattern has stopped matching them", imports)
	}
	for _, ref := range regexp.MustCompile(`(?:src|href)="([^"#:]+)"`).FindAllSubmatch(h.files["index.html"].body, -1) {
		if _, ok := h.files[string(ref[1])]; !ok {
			t.Errorf("index.html refers to %s, which is not embedded", ref[1])
		}
	}
}

func TestNewRefusesBrokenAssets(t *testing.T) {
	t.Parallel()
	for name, fsys := range map[string]fstest.MapFS{
		"no index":      {"assets/app.js": {Data: []byte("")}},
		"no import map": {"assets/index.html": {Data: []byte("<html></html>")}},
	} {
		if _, err := newHandler(fsys); err == nil {
			t.Errorf("%s: newHandler succeeded", name)
		}
	}
}
