package server_test

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/outflow-dev/outflow/proto/openapi"
	"github.com/outflow-dev/outflow/store"
)

// TestOpenAPIDeclaresBoundsAndAnswers: the served document tells a client
// (and schemathesis) what the server enforces: every id in a path has the
// pattern of the ids the server issues, every page_size its bounds, and
// every operation the 4xx answers it can give.
func TestOpenAPIDeclaresBoundsAndAnswers(t *testing.T) {
	t.Parallel()
	var doc struct {
		Paths map[string]map[string]struct {
			Parameters []struct {
				Name    string   `json:"name"`
				In      string   `json:"in"`
				Pattern string   `json:"pattern"`
				Minimum *float64 `json:"minimum"`
				Maximum *float64 `json:"maximum"`
			} `json:"parameters"`
			Responses map[string]json.RawMessage `json:"responses"`
		} `json:"paths"`
		SecurityDefinitions map[string]json.RawMessage `json:"securityDefinitions"`
	}
	if err := json.Unmarshal(openapi.JSON, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.SecurityDefinitions) == 0 {
		t.Error("no security definition: clients cannot learn that a bearer key is needed")
	}
	issued := map[string]string{}
	for _, prefix := range []string{"sub_", "dlv_", "rpl_"} {
		id, err := store.NewID(prefix)
		if err != nil {
			t.Fatal(err)
		}
		issued[prefix] = id
	}
	n := 0
	for path, ops := range doc.Paths {
		for method, op := range ops {
			n++
			want := []string{"400", "401", "429"}
			if strings.Contains(path, "{") {
				want = append(want, "404")
			}
			if method == "post" || method == "patch" {
				want = append(want, "413")
			}
			for _, code := range want {
				if _, ok := op.Responses[code]; !ok {
					t.Errorf("%s %s does not declare %s", method, path, code)
				}
			}
			for _, p := range op.Parameters {
				switch {
				case p.In == "path":
					re, err := regexp.Compile(p.Pattern)
					if p.Pattern == "" || err != nil {
						t.Errorf("%s %s: path parameter %s has no usable pattern (%q)", method, path, p.Name, p.Pattern)
						continue
					}
					matched := 0
					for _, id := range issued {
						if re.MatchString(id) {
							matched++
						}
					}
					if matched != 1 || re.MatchString("0") {
						t.Errorf("%s %s: pattern %q of %s matches %d kinds of issued ids (want 1), or malformed ones", method, path, p.Pattern, p.Name, matched)
					}
				case p.Name == "page_size":
					if p.Minimum == nil || p.Maximum == nil || *p.Minimum != 0 || *p.Maximum < 100 || *p.Maximum > 1000 {
						t.Errorf("%s %s: page_size bounds %v..%v, want 0..100 or 0..1000", method, path, p.Minimum, p.Maximum)
					}
				}
			}
		}
	}
	if n < 13 {
		t.Errorf("only %d operations", n)
	}
}
