package featureserver

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

const sampleCatalog = `{
  "feature_views": [
    {"name": "user_items_added_to_cart",
     "join_keys": [{"name": "user_id", "type": "string"}],
     "features": [{"name": "cart_count", "type": "int64"}, {"name": "cart_value", "type": "float64"}],
     "aggregation_interval": "0s", "feature_start_time": "2024-01-01T00:00:00Z"},
    {"name": "user_stats", "join_keys": [{"name": "user_id", "type": "string"}],
     "features": [{"name": "lifetime_value", "type": "float64"}, {"name": "vip", "type": "boolean"}],
     "synthetic": true, "batch_schedule": "24h"},
    {"name": "cart_request", "on_demand": true, "features": [{"name": "channel", "type": "string"}]}
  ],
  "workspaces": [
    {"name": "prod", "feature_services": [
      {"name": "promo_fs", "features": ["user_items_added_to_cart.*", "user_stats.lifetime_value", "cart_request.channel"]}]}
  ]
}`

func TestLoadCatalog(t *testing.T) {
	t.Parallel()
	c, err := LoadCatalog(strings.NewReader(sampleCatalog))
	if err != nil {
		t.Fatalf("LoadCatalog: %v", err)
	}
	want := &Catalog{
		FeatureViews: []FeatureView{
			{
				Name:             "user_items_added_to_cart",
				JoinKeys:         []Field{{"user_id", String}},
				Features:         []Field{{"cart_count", Int64}, {"cart_value", Float64}},
				FeatureStartTime: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
			},
			{
				Name:          "user_stats",
				JoinKeys:      []Field{{"user_id", String}},
				Features:      []Field{{"lifetime_value", Float64}, {"vip", "boolean"}},
				Synthetic:     true,
				BatchSchedule: 24 * time.Hour,
			},
			{Name: "cart_request", Features: []Field{{"channel", String}}, OnDemand: true},
		},
		Workspaces: []Workspace{{Name: "prod", FeatureServices: []FeatureService{{
			Name:     "promo_fs",
			Features: []string{"user_items_added_to_cart.*", "user_stats.lifetime_value", "cart_request.channel"},
		}}}},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("LoadCatalog\n got %+v\nwant %+v", c, want)
	}
	compiled, err := c.compile()
	if err != nil {
		t.Fatal(err)
	}
	svc := compiled.workspaces["prod"]["promo_fs"]
	var names []string
	for _, f := range svc.features {
		names = append(names, f.name)
	}
	wantNames := []string{"user_items_added_to_cart.cart_count", "user_items_added_to_cart.cart_value", "user_stats.lifetime_value", "cart_request.channel"}
	if !reflect.DeepEqual(names, wantNames) {
		t.Errorf("features %v, want %v", names, wantNames)
	}
	if !reflect.DeepEqual(svc.joinKeys, []Field{{"user_id", String}}) || !reflect.DeepEqual(svc.requestContext, []Field{{"channel", String}}) {
		t.Errorf("join keys %v, request context %v", svc.joinKeys, svc.requestContext)
	}
}

func TestDemoCatalogCompiles(t *testing.T) {
	t.Parallel()
	if _, err := DemoCatalog().compile(); err != nil {
		t.Fatal(err)
	}
}

func TestLoadCatalogRejects(t *testing.T) {
	t.Parallel()
	const ws = `"workspaces": [{"name": "prod", "feature_services": [{"name": "fs", "features": ["v.f"]}]}]`
	const view = `{"name": "v", "join_keys": [{"name": "k", "type": "string"}], "features": [{"name": "f", "type": "int64"}]}`
	tests := []struct {
		name   string
		json   string
		wantIn string
	}{
		{"not JSON", `{`, "unexpected EOF"},
		{"trailing data", `{"feature_views": [` + view + `], ` + ws + `} {}`, "after the JSON object"},
		{"unknown field", `{"feature_views": [` + view + `], ` + ws + `, "version": 2}`, "unknown field"},
		{"no workspace", `{"feature_views": [` + view + `]}`, "no workspace"},
		{"duplicate view", `{"feature_views": [` + view + `, ` + view + `], ` + ws + `}`, "defined twice"},
		{"dotted view name", `{"feature_views": [{"name": "a.b", "join_keys": [{"name": "k", "type": "string"}], "features": [{"name": "f", "type": "int64"}]}], ` + ws + `}`, "must not contain '.'"},
		{"unknown type", `{"feature_views": [{"name": "v", "join_keys": [{"name": "k", "type": "string"}], "features": [{"name": "f", "type": "decimal"}]}], ` + ws + `}`, "unsupported type"},
		{"float join key", `{"feature_views": [{"name": "v", "join_keys": [{"name": "k", "type": "float64"}], "features": [{"name": "f", "type": "int64"}]}], ` + ws + `}`, "unsupported type"},
		{"no join keys", `{"feature_views": [{"name": "v", "features": [{"name": "f", "type": "int64"}]}], ` + ws + `}`, "no join keys"},
		{"on-demand with join keys", `{"feature_views": [{"name": "v", "on_demand": true, "join_keys": [{"name": "k", "type": "string"}], "features": [{"name": "f", "type": "int64"}]}], ` + ws + `}`, "on-demand"},
		{"bad duration", `{"feature_views": [{"name": "v", "join_keys": [{"name": "k", "type": "string"}], "features": [{"name": "f", "type": "int64"}], "aggregation_interval": "hourly"}], ` + ws + `}`, "aggregation_interval"},
		{"bad start time", `{"feature_views": [{"name": "v", "join_keys": [{"name": "k", "type": "string"}], "features": [{"name": "f", "type": "int64"}], "feature_start_time": "yesterday"}], ` + ws + `}`, "feature_start_time"},
		{"unknown view", `{"feature_views": [` + view + `], "workspaces": [{"name": "prod", "feature_services": [{"name": "fs", "features": ["w.f"]}]}]}`, "unknown feature view"},
		{"unknown feature", `{"feature_views": [` + view + `], "workspaces": [{"name": "prod", "feature_services": [{"name": "fs", "features": ["v.g"]}]}]}`, "has no feature"},
		{"feature twice", `{"feature_views": [` + view + `], "workspaces": [{"name": "prod", "feature_services": [{"name": "fs", "features": ["v.f", "v.*"]}]}]}`, "listed twice"},
		{"duplicate service", `{"feature_views": [` + view + `], "workspaces": [{"name": "prod", "feature_services": [{"name": "fs", "features": ["v.f"]}, {"name": "fs", "features": ["v.f"]}]}]}`, "defined twice"},
		{"conflicting join key types", `{"feature_views": [` + view + `, {"name": "w", "join_keys": [{"name": "k", "type": "int64"}], "features": [{"name": "f", "type": "int64"}]}], "workspaces": [{"name": "prod", "feature_services": [{"name": "fs", "features": ["v.f", "w.f"]}]}]}`, "two types"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := LoadCatalog(strings.NewReader(tt.json))
			if !errors.Is(err, ErrInvalidCatalog) || !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("LoadCatalog = %v; want ErrInvalidCatalog mentioning %q", err, tt.wantIn)
			}
		})
	}
}
