package match

import (
	"fmt"
	"testing"

	"github.com/outflow-dev/outflow/filter"
	"github.com/outflow-dev/outflow/record"
)

// BenchmarkMatch matches records against indexes of 1k, 10k and 100k
// subscriptions, 10 per feature view, while the records keep hitting the same
// 100 feature views: every subscription beyond those views' 1000 is one the
// records never match. ns/op and allocs/op should not change with subs=,
// because Match looks the feature view up first and never visits other
// views' subscriptions.
//
// The kinds are: plain, no filters (every candidate matches, the index's
// slice is returned as is); entity, an entity filter that half of the
// candidates pass; cel, a CEL filter on half of the candidates (the record is
// converted for CEL once) and false on the other half.
func BenchmarkMatch(b *testing.B) {
	env, err := filter.NewEnv()
	if err != nil {
		b.Fatal(err)
	}
	celTrue, err := env.Compile(`record.entity_keys["user_id"] == "u1"`)
	if err != nil {
		b.Fatal(err)
	}
	celFalse, err := env.Compile(`record.entity_keys["user_id"] == "nobody"`)
	if err != nil {
		b.Fatal(err)
	}
	const perView, hotViews = 10, 100
	for _, kind := range []string{"plain", "entity", "cel"} {
		for _, total := range []int{1_000, 10_000, 100_000} {
			b.Run(fmt.Sprintf("%s/subs=%d", kind, total), func(b *testing.B) {
				subs := make([]*Subscription, 0, total)
				for i := range total {
					view := fmt.Sprintf("fv_%d", i/perView)
					sp := spec{id: fmt.Sprintf("sub_%07d", i), views: []string{view}}
					if kind == "entity" {
						if i%2 == 0 {
							sp.entity = map[string][]string{"user_id": {"u0", "u1", "u2"}}
						} else {
							sp.entity = map[string][]string{"user_id": {"u3"}}
						}
					}
					s := Compile(env, sp.stored())
					if kind == "cel" {
						// One compiled program shared by many subscriptions
						// keeps setup fast; Match cannot tell.
						s.Filter = celFalse
						if i%2 == 0 {
							s.Filter = celTrue
						}
					}
					subs = append(subs, s)
				}
				ix := NewIndex(subs, IndexOptions{})
				recs := make([]*record.Record, 1024)
				for i := range recs {
					recs[i] = rec(fmt.Sprintf("fv_%d", (i*7)%hotViews), map[string]string{"user_id": "u1"})
				}
				want := perView
				if kind != "plain" {
					want = perView / 2
				}
				if n := len(ix.Match(recs[0])); n != want {
					b.Fatalf("a record matches %d subscriptions, want %d", n, want)
				}
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					ix.Match(recs[i&1023])
					i++
				}
			})
		}
	}
}

// BenchmarkMatchManyEntitySubs is the many-subs case of issue 10: one
// feature view with subs= subscriptions, each filtering on its own user, and
// a record that matches one of them. ns/op and allocs/op should not grow
// with subs=: the index finds the one candidate by a lookup of the record's
// entity value instead of visiting every subscription.
func BenchmarkMatchManyEntitySubs(b *testing.B) {
	env, err := filter.NewEnv()
	if err != nil {
		b.Fatal(err)
	}
	for _, total := range []int{1, 1_000, 10_000} {
		b.Run(fmt.Sprintf("subs=%d", total), func(b *testing.B) {
			subs := make([]*Subscription, 0, total)
			for i := range total {
				sp := spec{id: fmt.Sprintf("sub_%07d", i), views: []string{"fv"},
					entity: map[string][]string{"user_id": {fmt.Sprintf("u%d", i)}}}
				subs = append(subs, Compile(env, sp.stored()))
			}
			ix := NewIndex(subs, IndexOptions{})
			r := rec("fv", map[string]string{"user_id": "u0"})
			if n := len(ix.Match(r)); n != 1 {
				b.Fatalf("the record matches %d subscriptions, want 1", n)
			}
			b.ReportAllocs()
			for b.Loop() {
				ix.Match(r)
			}
		})
	}
}
