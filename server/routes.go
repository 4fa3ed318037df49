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
	// enums are the query parameters with a closed set of values, by
	// method, with those values.
	enums map[string]map[string][]string
}

// routes are the REST routes, read from the OpenAPI document, which the
// build generates from the same .proto annotations as the gateway's
// handlers (and `make proto-check` keeps in step).
type routes []route

func loadRoutes(doc []byte) (routes, error) {
	var d struct {
		Paths map[string]map[string]struct {
			Parameters []struct {
				Name string   `json:"name"`
				In   string   `json:"in"`
				Enum []string `json:"enum"`
			} `json:"parameters"`
		} `json:"paths"`
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
		r.enums = map[string]map[string][]string{}
		for m, op := range ops {
			m = strings.ToUpper(m)
			r.methods = append(r.methods, m)
			for _, p := range op.Parameters {
				if p.In == "query" && len(p.Enum) > 0 {
					if r.enums[m] == nil {
						r.enums[m] = map[string][]string{}
					}
					r.enums[m][p.Name] = p.Enum
				}
			}
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
		switch {
		case !r.matches(comps):
		case r.verb != "":
			verbMethods = append(verbMethods, r.methods...)
		default:
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

// badEnum returns the first query parameter of r whose value is not one of
// its enum's names, and the names. The gateway would also take an enum's
// number ("status=0", the protobuf JSON leniency), which the document does
// not allow and which cannot be told from an unset field.
func (rs routes) badEnum(r *http.Request) (string, []string) {
	comps := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")
	query := r.URL.Query()
	for _, rt := range rs {
		if len(rt.enums[r.Method]) == 0 || !rt.matches(comps) {
			continue
		}
		for name, allowed := range rt.enums[r.Method] {
			for _, v := range query[name] {
				if !slices.Contains(allowed, v) {
					return name, allowed
				}
			}
		}
	}
	return "", nil
}

// matches reports whether a path, split at '/', is one of r's.
func (r route) matches(comps []string) bool {
	if len(comps) != len(r.segments) {
		return false
	}
	c := slices.Clone(comps)
	if r.verb != "" {
		last, ok := strings.CutSuffix(c[len(c)-1], ":"+r.verb)
		if !ok {
			return false
		}
		c[len(c)-1] = last
	}
	for i, seg := range r.segments {
		if strings.HasPrefix(seg, "{") {
			if c[i] == "" {
				return false
			}
		} else if c[i] != seg {
			return false
		}
	}
	return true
}

// methodNotAllowed answers 405 before the gateway routes a request whose
// path the API serves, but not with its method. The gateway alone would
// route GET /v1/subscriptions/{id}:test to GetSubscription with the id
// "{id}:test" and answer 404.
func (rs routes) methodNotAllowed(next http.Handler, m runtime.Marshaler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		allow := rs.allowed(r.URL.Path)
		if len(allow) > 0 && !slices.Contains(allow, r.Method) {
			writeMethodNotAllowed(r.Context(), m, w, r, allow)
			return
		}
		next.ServeHTTP(w, r)
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
	writeStatus(w, m, http.StatusMethodNotAllowed, st.Err())
}

// writeStatus writes err's google.rpc.Status as the body of an answer with
// the HTTP status code, as the gateway writes errors.
func writeStatus(w http.ResponseWriter, m runtime.Marshaler, code int, err error) {
	body, merr := m.Marshal(status.Convert(err).Proto())
	if merr != nil {
		body = []byte(`{"code":13,"message":"failed to marshal error message"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}
