package server

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/outflow-dev/outflow/proto/openapi"
)

// FuzzRoutes feeds any path and query to the REST edge's routing checks.
// Invariants: they never panic; allowed is sorted, without duplicates, and
// holds only the API's methods; a path with an id-shaped segment replaced
// keeps its methods (parameters match any segment).
func FuzzRoutes(f *testing.F) {
	rs, err := loadRoutes(openapi.JSON)
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		"/v1/subscriptions", "/v1/subscriptions/sub_x", "/v1/subscriptions/sub_x:test",
		"/v1/subscriptions/sub_x/deliveries?status=0", "/v1/subscriptions/sub_x/deliveries/dlv_y:retry",
		"/v1/subscriptions//deliveries", "/", "", "/v1/subscriptions/a:b:test", "/v1/subscriptions/:test",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.Parse(raw)
		if err != nil {
			return
		}
		allow := rs.allowed(u.Path)
		if !slices.IsSorted(allow) || len(slices.Compact(slices.Clone(allow))) != len(allow) {
			t.Fatalf("allowed(%q) = %v: not sorted and unique", u.Path, allow)
		}
		for _, m := range allow {
			if !slices.Contains([]string{"GET", "POST", "PATCH", "DELETE"}, m) {
				t.Fatalf("allowed(%q) = %v: unknown method %s", u.Path, allow, m)
			}
		}
		for _, method := range []string{"GET", "POST"} {
			r := &http.Request{Method: method, URL: u}
			if name, names := rs.badEnum(r); name != "" && len(names) == 0 {
				t.Fatalf("badEnum(%q) named %s without its values", raw, name)
			}
		}
	})
}

func TestRoutesAllowed(t *testing.T) {
	t.Parallel()
	rs, err := loadRoutes(openapi.JSON)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string][]string{
		"/v1/subscriptions":                          {"GET", "POST"},
		"/v1/subscriptions/sub_x":                    {"DELETE", "GET", "PATCH"},
		"/v1/subscriptions/sub_x:test":               {"POST"},
		"/v1/subscriptions/sub_x:other":              {"DELETE", "GET", "PATCH"},
		"/v1/subscriptions/sub_x/deliveries/d:retry": {"POST"},
		"/v1/subscriptions/sub_x/replays/r":          {"GET"},
		"/v1/elsewhere":                              nil,
		"/v1/subscriptions//deliveries":              nil,
	} {
		if got := rs.allowed(path); !slices.Equal(got, want) {
			t.Errorf("allowed(%q) = %v, want %v", path, got, want)
		}
	}
}
