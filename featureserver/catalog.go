package featureserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// ErrInvalidCatalog is wrapped by every error LoadCatalog and New return for a catalog that
// cannot be served: a syntax error, an unknown field, a duplicate or missing name, an unknown
// data type, a feature service naming a feature that does not exist.
var ErrInvalidCatalog = errors.New("featureserver: invalid catalog")

// DataType is the type of a feature or join key value. The server converts record values
// (always strings in the output stream) to it, and encodes it on the wire as Tecton does.
type DataType string

// The supported data types. Arrays, maps and structs are not supported.
const (
	// Int64 values are sent as JSON strings ("42"), as Tecton does, so that clients in
	// languages with float64-only numbers do not lose precision.
	Int64 DataType = "int64"
	// Float64 values are sent as JSON numbers. Non-finite values cannot be written.
	Float64 DataType = "float64"
	// String values are sent as JSON strings.
	String DataType = "string"
	// Bool values are sent as JSON booleans; the wire name of the type is "boolean", and
	// catalogs may spell it either way.
	Bool DataType = "bool"
)

// wireName is the type's name in Tecton's dataType descriptions.
func (t DataType) wireName() string {
	if t == Bool {
		return "boolean"
	}
	return string(t)
}

// normalize returns the canonical spelling of t, and whether t is a supported type.
func (t DataType) normalize() (DataType, bool) {
	switch t {
	case Int64, Float64, String, Bool:
		return t, true
	case "boolean":
		return Bool, true
	}
	return t, false
}

// Field is a named, typed value: a feature of a feature view, or a join key.
type Field struct {
	// Name is the feature's name within its feature view (without the "<view>." prefix), or
	// the join key's name. Required; must not contain '.'.
	Name string
	// Type is the value's data type. Join keys may only be String or Int64.
	Type DataType
}

// FeatureView is a feature view whose features a feature service can serve.
//
// The online store is keyed by feature view name and join key values, as the output-stream
// records are: a feature view is defined once per catalog and may appear in the feature
// services of any workspace.
type FeatureView struct {
	// Name is the feature view's name, the feature_view_name of its records. Required, unique
	// in the catalog, must not contain '.'.
	Name string
	// JoinKeys are the entity keys that identify a row, read from a record's entity_keys and
	// a request's join_key_map. At least one is required, except for on-demand views, which
	// have none.
	JoinKeys []Field
	// Features are the view's features, in the order a feature service lists them when it
	// names the whole view. At least one is required; a record's feature_values are matched
	// to them by name.
	Features []Field
	// OnDemand marks an on-demand feature view: its features are computed at request time
	// and carry no effective time. This stand-in computes nothing: each feature returns the
	// request_context_map value of the same name, converted to its type, and that request
	// context key is required by every feature service that includes the feature.
	OnDemand bool
	// AggregationInterval, when positive, aligns the effective time the view reports down to
	// a multiple of the interval (in UTC), as Tecton does for aggregate feature views with a
	// fixed aggregation interval. Such a view may never look caught up with a record: that is
	// the case the consistency timeout exists for. Default 0: continuous, the effective time
	// is the record's feature_timestamp.
	AggregationInterval time.Duration
	// FeatureStartTime, when set, is the effective time reported for a key the store holds
	// nothing for (status MISSING_DATA), as some aggregate views report the start of an empty
	// window. Default zero: such a key answers null with MISSING_DATA and no effective time at
	// all, as Tecton answers a key it has never materialised — the first record of a new
	// entity, which a client must not take for caught up.
	FeatureStartTime time.Time
	// Synthetic makes the view answer every key it holds no written row for with
	// deterministic values derived from a hash of the join key values, as if a batch job had
	// materialised them at the start of the current BatchSchedule period. It stands in for
	// batch feature views (lifetime value, ...) that no output stream feeds, so demos show
	// plausible numbers instead of nulls. Records of the view still override it. Default
	// false.
	Synthetic bool
	// BatchSchedule is the period of the simulated batch job of a Synthetic view: reported
	// effective times are the current time truncated to it. Default DefaultBatchSchedule
	// (24h); ignored unless Synthetic.
	BatchSchedule time.Duration
}

// FeatureService is a named, ordered list of features served together.
type FeatureService struct {
	// Name is the feature service's name, the feature_service_name of requests. Required,
	// unique within its workspace.
	Name string
	// Features lists the served features as "<feature view>.<feature>", in response order;
	// "<feature view>.*" stands for all the view's features in their declared order. At least
	// one; a feature may appear only once.
	Features []string
}

// Workspace is a Tecton workspace: a namespace of feature services.
type Workspace struct {
	// Name is the workspace's name, the workspace_name of requests. Required, unique.
	Name string
	// FeatureServices are the workspace's feature services.
	FeatureServices []FeatureService
}

// Catalog describes what the server serves: feature views, and the feature services of each
// workspace that combine their features. Build one in Go, load one from JSON with
// LoadCatalog, or use DemoCatalog. New validates it and keeps its own compiled copy, so the
// Catalog may be changed or reused afterwards without affecting a running Server.
type Catalog struct {
	// FeatureViews are all the feature views any feature service uses.
	FeatureViews []FeatureView
	// Workspaces are the workspaces and their feature services.
	Workspaces []Workspace
}

// DemoCatalog returns the catalog of SPEC §1's workflow, the default of `outflow
// featureserver` and `outflow dev`.
//
// Workspace "prod" has the feature service "promo_fs" with the stream feature view
// user_items_added_to_cart (cart_count int64, cart_value float64), fed by the output stream,
// and the batch feature view user_stats (lifetime_value float64, offers_redeemed int64), which
// is Synthetic; both are keyed by user_id (string). The feature service "promo_realtime_fs"
// adds the on-demand feature cart_request.channel (string), which echoes the request context
// key "channel".
func DemoCatalog() *Catalog {
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	userID := []Field{{Name: "user_id", Type: String}}
	return &Catalog{
		FeatureViews: []FeatureView{
			{
				// No FeatureStartTime: a user's first record finds nothing at all (null,
				// MISSING_DATA, no effective time) until it is materialised.
				Name:     "user_items_added_to_cart",
				JoinKeys: userID,
				Features: []Field{{Name: "cart_count", Type: Int64}, {Name: "cart_value", Type: Float64}},
			},
			{
				Name:             "user_stats",
				JoinKeys:         userID,
				Features:         []Field{{Name: "lifetime_value", Type: Float64}, {Name: "offers_redeemed", Type: Int64}},
				FeatureStartTime: start,
				Synthetic:        true,
				BatchSchedule:    24 * time.Hour,
			},
			{
				Name:     "cart_request",
				Features: []Field{{Name: "channel", Type: String}},
				OnDemand: true,
			},
		},
		Workspaces: []Workspace{{
			Name: "prod",
			FeatureServices: []FeatureService{
				{Name: "promo_fs", Features: []string{
					"user_items_added_to_cart.cart_count",
					"user_items_added_to_cart.cart_value",
					"user_stats.lifetime_value",
					"user_stats.offers_redeemed",
				}},
				{Name: "promo_realtime_fs", Features: []string{
					"user_items_added_to_cart.*",
					"user_stats.*",
					"cart_request.channel",
				}},
			},
		}},
	}
}

// Wire shapes of a catalog file. They exist so that durations and times have a readable JSON
// form and unknown fields are rejected, which a typo in a hand-written file otherwise hides.
type (
	wireCatalog struct {
		FeatureViews []wireFeatureView `json:"feature_views"`
		Workspaces   []wireWorkspace   `json:"workspaces"`
	}
	wireField struct {
		Name string   `json:"name"`
		Type DataType `json:"type"`
	}
	wireFeatureView struct {
		Name                string      `json:"name"`
		JoinKeys            []wireField `json:"join_keys"`
		Features            []wireField `json:"features"`
		OnDemand            bool        `json:"on_demand"`
		AggregationInterval string      `json:"aggregation_interval"`
		FeatureStartTime    string      `json:"feature_start_time"`
		Synthetic           bool        `json:"synthetic"`
		BatchSchedule       string      `json:"batch_schedule"`
	}
	wireWorkspace struct {
		Name            string               `json:"name"`
		FeatureServices []wireFeatureService `json:"feature_services"`
	}
	wireFeatureService struct {
		Name     string   `json:"name"`
		Features []string `json:"features"`
	}
)

// maxCatalogBytes bounds a catalog file. Real catalogs are a few KiB; the bound only keeps a
// wrong path (a log file, a device) from being read whole.
const maxCatalogBytes = 16 << 20

// LoadCatalog reads a catalog from JSON and validates it. The format mirrors Catalog in
// snake_case, with durations as Go duration strings and times in RFC 3339:
//
//	{
//	  "feature_views": [
//	    {"name": "user_items_added_to_cart",
//	     "join_keys": [{"name": "user_id", "type": "string"}],
//	     "features": [{"name": "cart_count", "type": "int64"}, {"name": "cart_value", "type": "float64"}],
//	     "aggregation_interval": "0s", "feature_start_time": "2024-01-01T00:00:00Z"},
//	    {"name": "user_stats", "join_keys": [{"name": "user_id", "type": "string"}],
//	     "features": [{"name": "lifetime_value", "type": "float64"}],
//	     "synthetic": true, "batch_schedule": "24h"},
//	    {"name": "cart_request", "on_demand": true, "features": [{"name": "channel", "type": "string"}]}
//	  ],
//	  "workspaces": [
//	    {"name": "prod", "feature_services": [
//	      {"name": "promo_fs", "features": ["user_items_added_to_cart.*", "user_stats.lifetime_value"]}]}
//	  ]
//	}
//
// Types are int64, float64, string and bool (or boolean). Unknown fields are errors. Every
// error wraps ErrInvalidCatalog.
func LoadCatalog(r io.Reader) (*Catalog, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxCatalogBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading: %w", ErrInvalidCatalog, err)
	}
	if len(data) > maxCatalogBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalidCatalog, maxCatalogBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var wire wireCatalog
	if err := dec.Decode(&wire); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidCatalog, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: unexpected data after the JSON object", ErrInvalidCatalog)
	}
	c := &Catalog{}
	for i, wv := range wire.FeatureViews {
		v := FeatureView{
			Name:      wv.Name,
			JoinKeys:  fields(wv.JoinKeys),
			Features:  fields(wv.Features),
			OnDemand:  wv.OnDemand,
			Synthetic: wv.Synthetic,
		}
		if v.AggregationInterval, err = parseDuration(wv.AggregationInterval); err != nil {
			return nil, fmt.Errorf("%w: feature_views[%d].aggregation_interval: %w", ErrInvalidCatalog, i, err)
		}
		if v.BatchSchedule, err = parseDuration(wv.BatchSchedule); err != nil {
			return nil, fmt.Errorf("%w: feature_views[%d].batch_schedule: %w", ErrInvalidCatalog, i, err)
		}
		if wv.FeatureStartTime != "" {
			if v.FeatureStartTime, err = time.Parse(time.RFC3339Nano, wv.FeatureStartTime); err != nil {
				return nil, fmt.Errorf("%w: feature_views[%d].feature_start_time: want RFC 3339", ErrInvalidCatalog, i)
			}
		}
		c.FeatureViews = append(c.FeatureViews, v)
	}
	for _, ww := range wire.Workspaces {
		w := Workspace{Name: ww.Name}
		for _, ws := range ww.FeatureServices {
			w.FeatureServices = append(w.FeatureServices, FeatureService(ws))
		}
		c.Workspaces = append(c.Workspaces, w)
	}
	if _, err := c.compile(); err != nil {
		return nil, err
	}
	return c, nil
}

func fields(wire []wireField) []Field {
	if len(wire) == 0 {
		return nil
	}
	out := make([]Field, len(wire))
	for i, f := range wire {
		out[i] = Field(f)
	}
	return out
}

func parseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("want a duration such as \"1h\": %w", err)
	}
	return d, nil
}

// compiled is the validated, indexed, immutable form of a Catalog that a Server reads.
type compiled struct {
	views      map[string]*viewDef
	workspaces map[string]map[string]*serviceDef
}

// viewDef is a validated feature view.
type viewDef struct {
	FeatureView
	// index maps a feature name to its position in Features.
	index map[string]int
}

// effectiveTime is the effective time the view reports for a row last written with a record
// of featureTime.
func (v *viewDef) effectiveTime(featureTime time.Time) time.Time {
	if v.AggregationInterval > 0 {
		return featureTime.Truncate(v.AggregationInterval)
	}
	return featureTime
}

// serviceDef is a validated feature service.
type serviceDef struct {
	workspace string
	name      string
	// features are the served features in response order.
	features []servedFeature
	// views are the distinct non-on-demand views of features, in first-use order.
	views []*viewDef
	// joinKeys is the union of the join keys of views, in first-use order.
	joinKeys []Field
	// requestContext is the union of the on-demand features' request context keys.
	requestContext []Field
}

// servedFeature is one feature of a feature service.
type servedFeature struct {
	view  *viewDef
	index int    // position in view.Features
	name  string // "<view>.<feature>"
}

func (f servedFeature) field() Field { return f.view.Features[f.index] }

// compile validates c and builds its index. Errors wrap ErrInvalidCatalog.
func (c *Catalog) compile() (*compiled, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: nil", ErrInvalidCatalog)
	}
	out := &compiled{
		views:      make(map[string]*viewDef, len(c.FeatureViews)),
		workspaces: make(map[string]map[string]*serviceDef, len(c.Workspaces)),
	}
	for i := range c.FeatureViews {
		v, err := compileView(c.FeatureViews[i])
		if err != nil {
			return nil, fmt.Errorf("%w: feature_views[%d] (%s): %w", ErrInvalidCatalog, i, c.FeatureViews[i].Name, err)
		}
		if _, dup := out.views[v.Name]; dup {
			return nil, fmt.Errorf("%w: feature view %q is defined twice", ErrInvalidCatalog, v.Name)
		}
		out.views[v.Name] = v
	}
	if len(c.Workspaces) == 0 {
		return nil, fmt.Errorf("%w: no workspace", ErrInvalidCatalog)
	}
	for _, w := range c.Workspaces {
		if w.Name == "" {
			return nil, fmt.Errorf("%w: a workspace has no name", ErrInvalidCatalog)
		}
		if _, dup := out.workspaces[w.Name]; dup {
			return nil, fmt.Errorf("%w: workspace %q is defined twice", ErrInvalidCatalog, w.Name)
		}
		services := make(map[string]*serviceDef, len(w.FeatureServices))
		for _, fs := range w.FeatureServices {
			svc, err := out.compileService(w.Name, fs)
			if err != nil {
				return nil, fmt.Errorf("%w: workspace %q: feature service %q: %w", ErrInvalidCatalog, w.Name, fs.Name, err)
			}
			if _, dup := services[svc.name]; dup {
				return nil, fmt.Errorf("%w: workspace %q: feature service %q is defined twice", ErrInvalidCatalog, w.Name, fs.Name)
			}
			services[svc.name] = svc
		}
		out.workspaces[w.Name] = services
	}
	return out, nil
}

func compileView(v FeatureView) (*viewDef, error) {
	if v.Name == "" || strings.Contains(v.Name, ".") {
		return nil, errors.New("name must be non-empty and must not contain '.'")
	}
	if len(v.Features) == 0 {
		return nil, errors.New("no features")
	}
	if v.AggregationInterval < 0 || v.BatchSchedule < 0 {
		return nil, errors.New("durations must not be negative")
	}
	if v.OnDemand {
		if len(v.JoinKeys) > 0 || v.AggregationInterval > 0 || v.Synthetic {
			return nil, errors.New("an on-demand view has no join keys, aggregation interval or synthetic data")
		}
	} else if len(v.JoinKeys) == 0 {
		return nil, errors.New("no join keys")
	}
	if v.Synthetic && v.BatchSchedule == 0 {
		v.BatchSchedule = DefaultBatchSchedule
	}
	if !v.FeatureStartTime.IsZero() {
		v.FeatureStartTime = v.FeatureStartTime.UTC()
	}

	var err error
	if v.JoinKeys, err = checkFields("join key", v.JoinKeys, func(t DataType) bool { return t == String || t == Int64 }); err != nil {
		return nil, err
	}
	if v.Features, err = checkFields("feature", v.Features, func(DataType) bool { return true }); err != nil {
		return nil, err
	}
	def := &viewDef{FeatureView: v, index: make(map[string]int, len(v.Features))}
	for i, f := range v.Features {
		def.index[f.Name] = i
	}
	return def, nil
}

// checkFields validates names and types and returns a copy with canonical type spellings.
func checkFields(kind string, in []Field, allowed func(DataType) bool) ([]Field, error) {
	out := make([]Field, len(in))
	seen := make(map[string]bool, len(in))
	for i, f := range in {
		if f.Name == "" || strings.Contains(f.Name, ".") {
			return nil, fmt.Errorf("%s %d: name must be non-empty and must not contain '.'", kind, i)
		}
		if seen[f.Name] {
			return nil, fmt.Errorf("%s %q is listed twice", kind, f.Name)
		}
		seen[f.Name] = true
		t, ok := f.Type.normalize()
		if !ok || !allowed(t) {
			return nil, fmt.Errorf("%s %q: unsupported type %q", kind, f.Name, f.Type)
		}
		out[i] = Field{Name: f.Name, Type: t}
	}
	return out, nil
}

func (c *compiled) compileService(workspace string, fs FeatureService) (*serviceDef, error) {
	if fs.Name == "" {
		return nil, errors.New("no name")
	}
	if len(fs.Features) == 0 {
		return nil, errors.New("no features")
	}
	svc := &serviceDef{workspace: workspace, name: fs.Name}
	seen := map[string]bool{}
	add := func(v *viewDef, i int) error {
		name := v.Name + "." + v.Features[i].Name
		if seen[name] {
			return fmt.Errorf("feature %q is listed twice", name)
		}
		seen[name] = true
		svc.features = append(svc.features, servedFeature{view: v, index: i, name: name})
		return nil
	}
	for _, ref := range fs.Features {
		viewName, feature, ok := strings.Cut(ref, ".")
		if !ok {
			return nil, fmt.Errorf("feature %q: want \"<feature view>.<feature>\"", ref)
		}
		v := c.views[viewName]
		if v == nil {
			return nil, fmt.Errorf("feature %q: unknown feature view %q", ref, viewName)
		}
		if feature == "*" {
			for i := range v.Features {
				if err := add(v, i); err != nil {
					return nil, err
				}
			}
			continue
		}
		i, ok := v.index[feature]
		if !ok {
			return nil, fmt.Errorf("feature %q: feature view %q has no feature %q", ref, viewName, feature)
		}
		if err := add(v, i); err != nil {
			return nil, err
		}
	}

	joinTypes := map[string]DataType{}
	contextTypes := map[string]DataType{}
	for _, f := range svc.features {
		if f.view.OnDemand {
			field := f.field()
			if t, ok := contextTypes[field.Name]; ok {
				if t != field.Type {
					return nil, fmt.Errorf("request context key %q has two types, %s and %s", field.Name, t, field.Type)
				}
				continue
			}
			contextTypes[field.Name] = field.Type
			svc.requestContext = append(svc.requestContext, field)
			continue
		}
		if !slices.Contains(svc.views, f.view) {
			svc.views = append(svc.views, f.view)
			for _, jk := range f.view.JoinKeys {
				if t, ok := joinTypes[jk.Name]; ok {
					if t != jk.Type {
						return nil, fmt.Errorf("join key %q has two types, %s and %s", jk.Name, t, jk.Type)
					}
					continue
				}
				joinTypes[jk.Name] = jk.Type
				svc.joinKeys = append(svc.joinKeys, jk)
			}
		}
	}
	return svc, nil
}
