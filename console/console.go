// Package console is Outflow's web console: a single-page application served
// by the gateway at /console/, whose static assets are embedded in the
// binary. It signs in with an API key and uses only the public REST API
// (/v1/…), so it can do nothing a curl user could not.
//
// The front end has no build step: plain ES modules, with Preact and htm
// (vendored from npm by scripts/console-vendor.sh, pinned, checked in CI)
// resolved through an import map. Nothing is fetched from a CDN.
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"regexp"
	"strings"
	"time"
)

// The assets are read-only; embedding needs a package-level variable.
//
//go:embed assets
var embedded embed.FS

// Prefix is where the gateway mounts the console.
const Prefix = "/console/"

// Handler serves the console's assets. Create it with New.
type Handler struct {
	files map[string]file
	csp   string
}

type file struct {
	body        []byte
	contentType string
	etag        string
}

// importMapRE finds the inline import map of index.html, the one inline
// script, which the Content-Security-Policy allows by its hash.
var importMapRE = regexp.MustCompile(`(?s)<script type="importmap">(.*?)</script>`)

// New reads the embedded assets and computes their ETags and the
// Content-Security-Policy.
func New() (*Handler, error) {
	return newHandler(embedded)
}

func newHandler(fsys fs.FS) (*Handler, error) {
	root, err := fs.Sub(fsys, "assets")
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	h := &Handler{files: make(map[string]file)}
	err = fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(root, p)
		if err != nil {
			return err
		}
		ct := mime.TypeByExtension(path.Ext(p))
		switch path.Ext(p) {
		case ".js", ".mjs":
			ct = "text/javascript; charset=utf-8" // not every system's mime table knows .mjs
		case "":
			ct = "text/plain; charset=utf-8" // LICENSE files
		}
		if ct == "" {
			ct = "application/octet-stream"
		}
		sum := sha256.Sum256(body)
		h.files[p] = file{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("console: reading the assets: %w", err)
	}
	index, ok := h.files["index.html"]
	if !ok {
		return nil, errors.New("console: the assets have no index.html")
	}
	m := importMapRE.FindSubmatch(index.body)
	if m == nil {
		return nil, errors.New("console: index.html has no import map")
	}
	sum := sha256.Sum256(m[1])
	// Only the console's own files, and its calls to this origin's API: no
	// inline script but the import map, no framing, no form posts elsewhere.
	h.csp = strings.Join([]string{
		"default-src 'none'",
		"script-src 'self' 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'",
		"style-src 'self'",
		"img-src 'self' data:",
		"connect-src 'self'",
		"base-uri 'none'",
		"form-action 'self'",
		"frame-ancestors 'none'",
	}, "; ")
	return h, nil
}

// ServeHTTP serves GET and HEAD of the assets under Prefix; the bare prefix
// is index.html. Responses are revalidated by ETag (Cache-Control:
// no-cache), so a new binary's console is picked up at the next load.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, Prefix)
	if !ok {
		http.NotFound(w, r)
		return
	}
	if name == "" {
		name = "index.html"
	}
	f, ok := h.files[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", f.contentType)
	hdr.Set("ETag", f.etag)
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("Content-Security-Policy", h.csp)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("X-Frame-Options", "DENY")
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.body))
}
