package grafana_test

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"

	"github.com/outflow-dev/outflow/dispatcher"
)

const (
	dashboardFile = "outflow-dashboard.json"
	modulePath    = "github.com/outflow-dev/outflow"
	// moduleRoot is the repository root, relative to this package's
	// directory, where go test runs.
	moduleRoot = "../.."
	dsVariable = "${DS_PROMETHEUS}"
)

// operatorMetrics are the families SPEC §8 names, which the dashboard must
// show: records consumed and poison, consumer lag, deliveries by outcome,
// end-to-end latency, GetFeatures latency and consistency retries,
// retry-queue depth and streams connected.
var operatorMetrics = []string{
	"outflow_records_consumed_total",
	"outflow_records_poison_total",
	"outflow_consumer_lag",
	"outflow_deliveries_total",
	"outflow_end_to_end_latency_seconds",
	"outflow_getfeatures_duration_seconds",
	"outflow_consistency_retries_total",
	"outflow_retry_queue_depth",
	"outflow_streams_connected",
}

// notOnDashboard lists outflow_ metrics the gateway registers that the
// dashboard leaves out on purpose, each with the reason. Any other
// registered outflow_ metric missing from the dashboard fails the test, so
// a new metric gets a panel or a reason.
var notOnDashboard = map[string]string{}

type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's panels
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Datasource *datasource     `json:"datasource"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s is not valid JSON: %v", dashboardFile, err)
	}
	return d
}

// allPanels flattens rows, collapsed or not.
func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// TestDashboardShape checks what Grafana needs to import the dashboard and
// an operator needs to read it: every panel has a title, a known type, the
// templated Prometheus data source and queries; ids are unique; panels fit
// the 24-column grid without overlapping.
func TestDashboardShape(t *testing.T) {
	t.Parallel()
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q: both are needed to import and link the dashboard", d.UID, d.Title)
	}
	if d.SchemaVersion < 39 {
		t.Errorf("schemaVersion %d, want 39 or later (Grafana 10.4+)", d.SchemaVersion)
	}

	vars := map[string]variable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if v, ok := vars["DS_PROMETHEUS"]; !ok || v.Type != "datasource" || string(v.Query) != `"prometheus"` {
		t.Errorf("want a templating variable DS_PROMETHEUS of type datasource over prometheus, got %+v", v)
	}

	ids := map[int]string{}
	type cell struct{ x, y int }
	grid := map[cell]string{}
	for _, p := range allPanels(d.Panels) {
		name := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if p.Title == "" {
			t.Errorf("%s has no title", name)
		}
		if prev, dup := ids[p.ID]; dup || p.ID <= 0 {
			t.Errorf("%s: id not unique and positive (also %s)", name, prev)
		}
		ids[p.ID] = name
		g := p.GridPos
		if g.W < 1 || g.H < 1 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("%s: gridPos %+v outside the 24-column grid", name, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, taken := grid[cell{x, y}]; taken {
					t.Errorf("%s overlaps %s at (%d,%d)", name, other, x, y)
				}
				grid[cell{x, y}] = name
			}
		}
		switch p.Type {
		case "row":
			continue
		case "timeseries", "stat", "gauge", "bargauge", "table", "heatmap":
		default:
			t.Errorf("%s: unexpected type %q", name, p.Type)
		}
		if p.Datasource == nil || p.Datasource.UID != dsVariable || p.Datasource.Type != "prometheus" {
			t.Errorf("%s: datasource %+v, want the %s variable", name, p.Datasource, dsVariable)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s has no targets", name)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("%s: refId %q missing or repeated", name, tg.RefID)
			}
			refs[tg.RefID] = true
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("%s, target %s: empty expr", name, tg.RefID)
			}
			if tg.Datasource != nil && tg.Datasource.UID != dsVariable {
				t.Errorf("%s, target %s: datasource %+v, want %s", name, tg.RefID, tg.Datasource, dsVariable)
			}
		}
	}
}

// TestDashboardMetricsExist checks every metric name in every query of the
// dashboard against the metrics the gateway really registers, and that the
// dashboard shows the operator metrics of SPEC §8 and every other outflow_
// metric not excused in notOnDashboard.
func TestDashboardMetricsExist(t *testing.T) {
	t.Parallel()
	d := loadDashboard(t)
	known := registeredMetrics(t)

	series := map[string]metricType{} // exposed series name → its family's type
	family := map[string]string{}     // exposed series name → family name
	for name, typ := range known {
		for _, s := range seriesNames(name, typ) {
			series[s], family[s] = typ, name
		}
	}

	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	used := map[string]bool{}
	check := func(where, expr string) {
		names, err := metricNames(expr)
		if err != nil {
			t.Errorf("%s: %v in %q", where, err, expr)
			return
		}
		if len(names) == 0 {
			t.Errorf("%s: no metric in %q", where, expr)
		}
		for _, n := range names {
			f, ok := family[n]
			if !ok {
				t.Errorf("%s: %s is not a metric the gateway registers (expr %q)", where, n, expr)
				continue
			}
			used[f] = true
		}
		// A quantile needs the buckets of a real histogram, summed by le.
		if strings.Contains(expr, "histogram_quantile") {
			hasBucket := slices.ContainsFunc(names, func(n string) bool {
				return strings.HasSuffix(n, "_bucket") && series[n] == histogram
			})
			if !hasBucket || !leGrouping.MatchString(expr) {
				t.Errorf("%s: histogram_quantile needs a histogram's _bucket series aggregated by (le, …): %q", where, expr)
			}
		}
		for _, m := range varRef.FindAllStringSubmatch(expr, -1) {
			name := m[1] + m[2]
			if !vars[name] && !strings.HasPrefix(name, "__") {
				t.Errorf("%s: uses $%s, which the dashboard does not define", where, name)
			}
		}
	}
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			check(fmt.Sprintf("panel %q, target %s", p.Title, tg.RefID), tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			if err := json.Unmarshal(v.Query, &q.Query); err != nil {
				t.Errorf("variable %s: unreadable query %s", v.Name, v.Query)
				continue
			}
		}
		// label_values(<selector>, <label>): the selector is PromQL.
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("variable %s: want label_values(<metric>, <label>), got %q", v.Name, q.Query)
			continue
		}
		check("variable "+v.Name, m[1])
	}

	for _, f := range operatorMetrics {
		if !used[f] {
			t.Errorf("the dashboard does not show %s, one of the operator metrics of SPEC §8", f)
		}
	}
	for _, f := range slices.Sorted(maps.Keys(known)) {
		if strings.HasPrefix(f, "outflow_") && !used[f] && notOnDashboard[f] == "" {
			t.Errorf("the gateway registers %s but the dashboard does not show it: add a panel, or list it in notOnDashboard with the reason", f)
		}
	}
}

var (
	leGrouping  = regexp.MustCompile(`\bby\s*\(([^)]*,\s*)?le\s*[,)]`)
	varRef      = regexp.MustCompile(`\$(?:\{(\w+)[^}]*\}|(\w+))`)
	labelValues = regexp.MustCompile(`^\s*label_values\((.+),\s*\w+\s*\)\s*$`)
)

type metricType string

const (
	counter   metricType = "counter"
	gauge     metricType = "gauge"
	histogram metricType = "histogram"
	summary   metricType = "summary"
	// untyped: declared with NewDesc, whose type is chosen per sample.
	untyped metricType = "untyped"
)

// seriesNames returns the names a family is exposed under: a histogram as
// <name>_bucket, _sum and _count, a summary as <name>, _sum and _count.
func seriesNames(name string, typ metricType) []string {
	switch typ {
	case histogram:
		return []string{name + "_bucket", name + "_sum", name + "_count"}
	case summary:
		return []string{name, name + "_sum", name + "_count"}
	}
	return []string{name}
}

// registeredMetrics returns the gateway's metric families and types from
// two sources, cross-checked:
//
//   - a registry built the way `outflow serve` builds it, with the Go and
//     process collectors and dispatcher.NewMetrics: the real thing, types
//     included;
//   - the metric definitions in the source of every package of this module
//     linked into cmd/outflow (prometheus.*Opts{Name: …} literals and
//     prometheus.NewDesc calls). This reaches the metrics that only exist
//     inside serve() or server.New, which need a database to construct: the
//     retry-queue depth, the consumer lag, the API and stream gauges.
//
// The source scan must find exactly the registry's dispatcher metrics, with
// the same types, which shows it reads definitions correctly.
func registeredMetrics(t *testing.T) map[string]metricType {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := dispatcher.NewMetrics(reg)
	// Vectors without children are not gathered: record one call.
	m.ObserveCall("get-features", time.Millisecond, nil)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	fromRegistry := map[string]metricType{}
	for _, f := range families {
		fromRegistry[f.GetName()] = map[dto.MetricType]metricType{
			dto.MetricType_COUNTER: counter, dto.MetricType_GAUGE: gauge, dto.MetricType_HISTOGRAM: histogram,
			dto.MetricType_SUMMARY: summary, dto.MetricType_UNTYPED: untyped,
		}[f.GetType()]
	}

	fromSource := sourceMetrics(t)
	dispatcherDefs := map[string]metricType{}
	for name, def := range fromSource {
		if def.pkg == modulePath+"/dispatcher" {
			dispatcherDefs[name] = def.typ
		}
	}
	registryOutflow := map[string]metricType{}
	for name, typ := range fromRegistry {
		if strings.HasPrefix(name, "outflow_") {
			registryOutflow[name] = typ
		}
	}
	if !maps.Equal(dispatcherDefs, registryOutflow) {
		t.Fatalf("the source scan of dispatcher/ found %v, but dispatcher.NewMetrics registers %v: fix sourceMetrics", dispatcherDefs, registryOutflow)
	}

	known := fromRegistry
	for _, name := range slices.Sorted(maps.Keys(fromSource)) {
		t.Logf("%s (%s) defined at %s", name, fromSource[name].typ, fromSource[name].pos)
	}
	for name, def := range fromSource {
		if prev, ok := known[name]; ok && prev != def.typ && def.typ != untyped {
			t.Errorf("%s is a %s in the registry but defined as a %s at %s", name, prev, def.typ, def.pos)
		}
		if _, ok := known[name]; !ok {
			known[name] = def.typ
		}
	}
	return known
}

type metricDef struct {
	typ metricType
	pkg string
	pos string
}

// sourceMetrics scans the Go files of every package of this module that
// cmd/outflow links (as go list reports them, build tags applied) for
// metric definitions.
func sourceMetrics(t *testing.T) map[string]metricDef {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-deps", "-f",
		`{{with .Module}}{{if eq .Path "`+modulePath+`"}}{{$.ImportPath}}|{{$.Dir}}|{{join $.GoFiles ","}}{{end}}{{end}}`,
		"./cmd/outflow")
	cmd.Dir = moduleRoot
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	defs := map[string]metricDef{}
	fset := token.NewFileSet()
	for line := range strings.Lines(string(out)) {
		parts := strings.Split(strings.TrimSpace(line), "|")
		if len(parts) != 3 || parts[2] == "" {
			continue
		}
		pkg, dir := parts[0], parts[1]
		for _, name := range strings.Split(parts[2], ",") {
			path := filepath.Join(dir, name)
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatalf("parsing %s: %v", path, err)
			}
			for _, d := range fileMetrics(t, fset, f) {
				d.pkg = pkg
				if prev, dup := defs[d.name]; dup {
					t.Errorf("%s is defined twice: at %s and %s", d.name, prev.pos, d.pos)
				}
				defs[d.name] = d.metricDef
			}
		}
	}
	if len(defs) == 0 {
		t.Fatalf("go list found no metric definitions:\n%s", out)
	}
	return defs
}

type namedDef struct {
	name string
	metricDef
}

var optsTypes = map[string]metricType{
	"CounterOpts": counter, "GaugeOpts": gauge, "HistogramOpts": histogram, "SummaryOpts": summary,
}

// fileMetrics finds prometheus.{Counter,Gauge,Histogram,Summary}Opts
// literals and prometheus.NewDesc calls in f. A definition whose name is
// not a string literal (or that uses Namespace/Subsystem) fails the test:
// it would need teaching, not silent skipping.
func fileMetrics(t *testing.T, fset *token.FileSet, f *ast.File) []namedDef {
	t.Helper()
	local := ""
	for _, imp := range f.Imports {
		if p, _ := strconv.Unquote(imp.Path.Value); p == "github.com/prometheus/client_golang/prometheus" {
			local = "prometheus"
			if imp.Name != nil {
				local = imp.Name.Name
			}
		}
	}
	if local == "" {
		return nil
	}
	isProm := func(e ast.Expr) (string, bool) {
		sel, ok := e.(*ast.SelectorExpr)
		if !ok {
			return "", false
		}
		id, ok := sel.X.(*ast.Ident)
		return sel.Sel.Name, ok && id.Name == local
	}
	literal := func(e ast.Expr, what string) string {
		lit, ok := e.(*ast.BasicLit)
		if ok && lit.Kind == token.STRING {
			if s, err := strconv.Unquote(lit.Value); err == nil {
				return s
			}
		}
		t.Errorf("%s: %s is not a string literal; teach fileMetrics to resolve it", fset.Position(e.Pos()), what)
		return ""
	}
	var defs []namedDef
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.CompositeLit:
			sel, ok := isProm(n.Type)
			typ, isOpts := optsTypes[sel]
			if !ok || !isOpts {
				return true
			}
			name := ""
			for _, el := range n.Elts {
				kv, ok := el.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				switch key, _ := kv.Key.(*ast.Ident); key.Name {
				case "Name":
					name = literal(kv.Value, "the metric name")
				case "Namespace", "Subsystem":
					t.Errorf("%s: %s in metric options; teach fileMetrics to join the name", fset.Position(kv.Pos()), key.Name)
				}
			}
			if name == "" {
				t.Errorf("%s: metric options without a literal Name", fset.Position(n.Pos()))
				return true
			}
			defs = append(defs, namedDef{name, metricDef{typ: typ, pos: fset.Position(n.Pos()).String()}})
		case *ast.CallExpr:
			if sel, ok := isProm(n.Fun); ok && sel == "NewDesc" && len(n.Args) > 0 {
				if name := literal(n.Args[0], "the NewDesc name"); name != "" {
					defs = append(defs, namedDef{name, metricDef{typ: untyped, pos: fset.Position(n.Pos()).String()}})
				}
			}
		}
		return true
	})
	return defs
}

// promqlKeywords are identifiers of PromQL that are neither functions nor
// metrics.
var promqlKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "inf": true, "nan": true, "atan2": true,
}

// aggregations are PromQL's aggregation operators, which may be followed by
// a grouping before their "(": sum by (le) (…).
var aggregations = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true,
}

// metricNames returns the metric names a PromQL expression selects. It is
// a small lexer, not a parser: it skips string literals, label matchers
// ({…}), ranges ([…]), numbers, durations, Grafana variables, functions
// (an identifier before "(") and keywords with their label lists, and
// reports every other identifier. It checks that brackets balance.
func metricNames(expr string) ([]string, error) {
	var names []string
	depth := 0
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
	isDigit := func(c byte) bool { return c >= '0' && c <= '9' }
	// skipString returns the index after the string literal starting at i.
	skipString := func(i int) (int, error) {
		q := expr[i]
		for j := i + 1; j < len(expr); j++ {
			switch {
			case expr[j] == '\\' && q != '`':
				j++
			case expr[j] == q:
				return j + 1, nil
			}
		}
		return 0, fmt.Errorf("unterminated string at %d", i)
	}
	// skipUntil returns the index after the close bracket matching the
	// open one at i, skipping strings inside.
	skipUntil := func(i int, close byte) (int, error) {
		for j := i + 1; j < len(expr); j++ {
			switch c := expr[j]; {
			case c == '"' || c == '\'' || c == '`':
				end, err := skipString(j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case c == close:
				return j + 1, nil
			}
		}
		return 0, fmt.Errorf("unclosed %q at %d", expr[i], i)
	}
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			end, err := skipString(i)
			if err != nil {
				return nil, err
			}
			i = end
		case c == '{' || c == '[':
			end, err := skipUntil(i, map[byte]byte{'{': '}', '[': ']'}[c])
			if err != nil {
				return nil, err
			}
			i = end
		case c == '$':
			i++
			if i < len(expr) && expr[i] == '{' {
				end, err := skipUntil(i, '}')
				if err != nil {
					return nil, err
				}
				i = end
			}
			for i < len(expr) && isIdent(expr[i]) {
				i++
			}
		case isDigit(c) || c == '.' && i+1 < len(expr) && isDigit(expr[i+1]):
			for i < len(expr) && (isDigit(expr[i]) || expr[i] == '.') {
				i++
			}
			if i+1 < len(expr) && (expr[i] == 'e' || expr[i] == 'E') &&
				(isDigit(expr[i+1]) || (expr[i+1] == '-' || expr[i+1] == '+') && i+2 < len(expr) && isDigit(expr[i+2])) {
				i += 2
				for i < len(expr) && isDigit(expr[i]) {
					i++
				}
			}
			for i < len(expr) && isIdent(expr[i]) { // a duration's units: 5m, 1h30m
				i++
			}
		case isIdentStart(c):
			start := i
			for i < len(expr) && isIdent(expr[i]) {
				i++
			}
			word := expr[start:i]
			next := i
			for next < len(expr) && (expr[next] == ' ' || expr[next] == '\t' || expr[next] == '\n') {
				next++
			}
			calls := next < len(expr) && expr[next] == '('
			switch {
			case promqlKeywords[strings.ToLower(word)] && calls:
				end, err := skipUntil(next, ')') // a label list: by (le, op)
				if err != nil {
					return nil, err
				}
				i = end
			case promqlKeywords[strings.ToLower(word)], aggregations[strings.ToLower(word)], calls:
				// a keyword, an aggregation, or a function
			default:
				names = append(names, word)
			}
		case c == '(':
			depth++
			i++
		case c == ')':
			if depth--; depth < 0 {
				return nil, fmt.Errorf("unbalanced ')' at %d", i)
			}
			i++
		default:
			i++
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("%d unclosed '('", depth)
	}
	return names, nil
}

func TestMetricNames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		expr string
		want []string
	}{
		{`up`, []string{"up"}},
		{`sum by (le, op) (rate(a_bucket{job=~"$job", x="}{[("}[$__rate_interval]))`, []string{"a_bucket"}},
		{`histogram_quantile(0.99, sum without (instance) (rate(b_bucket[5m]))) > 1e-3`, []string{"b_bucket"}},
		{`sum(rate(c_total[1h] offset 5m)) / on (job) group_left (x) clamp_min(d, 1e-9) and bool e`, []string{"c_total", "d", "e"}},
		{`f{a='it\'s'} unless ${var:raw} * 2.5E+3 + .5`, []string{"f"}},
		{`max_over_time(g[1h:5m]) or vector(0)`, []string{"g"}},
	}
	for _, tt := range tests {
		got, err := metricNames(tt.expr)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("metricNames(%q) = %q, %v; want %q", tt.expr, got, err, tt.want)
		}
	}
	for _, bad := range []string{`sum(x`, `x)`, `x{a="b}`, `x[5m`} {
		if _, err := metricNames(bad); err == nil {
			t.Errorf("metricNames(%q): no error", bad)
		}
	}
}
