package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// route is one REST path template of the API and the methods it serves.
type route struct {
	segments []string // "{…}" is a path parameter
	verb     string   // the custom method after ':' in the last segment, or ""
	methods  []string
}

// routes are the REST routes, read from the OpenAPI document, which the
// build generates from the same .proto annotations as the gateway's
// handlers (and `make proto-check` keeps in step).
type routes []route

func loadRoutes(doc []byte) (routes, error) {
	var d struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, fmt.Errorf("reading the OpenAPI document's paths: %w", err)
	}
	var out routes
	for path, ops := range d.Paths {
		r := route{segments: strings.Split(strings.TrimPrefix(path, "/"), "/")}
		last := r.segments[len(r.segments)-1]
		if i := strings.LastIndexByte(last, ':'); i >= 0 && strings.HasSuffix(last[:i], "}") {
			r.segments[len(r.segments)-1], r.verb = last[:i], last[i+1:]
		}
		for m := range ops {
			r.methods = append(r.methods, strings.ToUpper(m))
		}
		out = append(out, r)
	}
	return out, nil
}

// allowed returns the methods served at path, sorted, or nil when no
// route matches it. It matches as the gateway does: a route with a custom
// method needs the path to end in ':' and that verb; a parameter matches any
// non-empty segment.
func (rs routes) allowed(path string) []string {
	comps := strings.Split(strings.TrimPrefix(path, "/"), "/")
	var methods, verbMethods []string
	for _, r := range rs {
		if len(comps) != len(r.segments) {
			continue
		}
		c := slices.Clone(comps)
		if r.verb != "" {
			last, ok := strings.CutSuffix(c[len(c)-1], ":"+r.verb)
			if !ok {
				continue
			}
			c[len(c)-1] = last
		}
		match := true
		for i, seg := range r.segments {
			if strings.HasPrefix(seg, "{") {
				match = c[i] != ""
			} else {
				match = c[i] == seg
			}
			if !match {
				break
			}
		}
		switch {
		case match && r.verb != "":
			verbMethods = append(verbMethods, r.methods...)
		case match:
			methods = append(methods, r.methods...)
		}
	}
	if verbMethods != nil {
		// No id holds ':', so "{id}:test" names the custom method, never
		// a resource whose id ends in ":test".
		methods = verbMethods
	}
	slices.Sort(methods)
	return slices.Compact(methods)
}

// methodNotAllowed answers 405 before the gateway routes a request whose
// path the API serves, but not with its method. The gateway alone would
// route GET /v1/subscriptions/{id}:test to GetSubscription with the id
// "{id}:test" and answer 404.
func (rs routes) methodNotAllowed(next http.Handler, m runtime.Marshaler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		allow := rs.allowed(r.URL.Path)
		if len(allow) == 0 || slices.Contains(allow, r.Method) {
			next.ServeHTTP(w, r)
			return
		}
		writeMethodNotAllowed(r.Context(), m, w, r, allow)
	})
}

// routingError answers the gateway's routing failures: a method the path
// does not serve is 405 with Allow (the gateway's default is 501, a server
// error for a client's mistake); the rest keep the default answers.
func (rs routes) routingError(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	if httpStatus != http.StatusMethodNotAllowed {
		runtime.DefaultRoutingErrorHandler(ctx, mux, m, w, r, httpStatus)
		return
	}
	writeMethodNotAllowed(ctx, m, w, r, rs.allowed(r.URL.Path))
}

// writeMethodNotAllowed writes a 405 with Allow and a google.rpc.Status
// body like every other error of the API (code UNIMPLEMENTED, the nearest
// gRPC code).
func writeMethodNotAllowed(_ context.Context, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, allow []string) {
	w.Header().Set("Allow", strings.Join(allow, ", "))
	st := status.Newf(codes.Unimplemented, "method %s is not allowed on this path; use %s", r.Method, strings.Join(allow, " or "))
	body, err := m.Marshal(st.Proto())
	if err != nil {
		body = []byte(`{"code":12,"message":"method not allowed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusMethodNotAllowed)
	_, _ = w.Write(body)
}
