package filter

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
)

func testRecord() *outflowv1.Record {
	return &outflowv1.Record{
		Version:          "1",
		Producer:         "tecton",
		FeatureViewName:  "user_items_added_to_cart",
		FeatureTimestamp: timestamppb.New(time.Date(2022, 6, 7, 0, 36, 8, 832793000, time.UTC)),
		EntityKeys:       map[string]string{"user_id": "vip_42"},
		FeatureValues:    map[string]string{"cart_count": "3"},
	}
}

func TestCompileAndMatch(t *testing.T) {
	t.Parallel()
	env, err := NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		expr string
		want bool
	}{
		{`record.entity_keys["user_id"].startsWith("vip_")`, true},
		{`record.entity_keys.user_id.startsWith("vip_")`, true},
		{`record.entity_keys["user_id"] == "u1"`, false},
		{`"user_id" in record.entity_keys && record.producer == "tecton"`, true},
		{`int(record.feature_values["cart_count"]) >= 3`, true},
		{`record.feature_timestamp > timestamp("2022-01-01T00:00:00Z")`, true},
		{`record.feature_view_name.matches("^user_")`, true},
		{`has(record.entity_keys.merchant_id)`, false},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			t.Parallel()
			f, err := env.Compile(tt.expr)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			got, err := f.Match(testRecord())
			if err != nil {
				t.Fatalf("Match: %v", err)
			}
			if got != tt.want {
				t.Errorf("Match = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCompileRejects(t *testing.T) {
	t.Parallel()
	env, err := NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, expr, wantInMessage string
	}{
		{"empty", "  ", "empty"},
		{"syntax", `record.entity_keys[`, "Syntax error"},
		{"not bool", `record.feature_view_name`, "not bool"},
		{"int", `1 + 2`, "not bool"},
		{"unknown field", `record.nope == "x"`, "undefined field"},
		{"unknown variable", `event.id == "x"`, "undeclared reference"},
		{"wrong operand types", `record.entity_keys["user_id"] + 1 == 2`, "no matching overload"},
		{"too long", `record.producer == "` + strings.Repeat("a", MaxLength) + `"`, "limit"},
		{"too deep", strings.Repeat("(", 200) + "true" + strings.Repeat(")", 200), "recursion"},
		{"invalid utf8", "record.producer == \"\xff\"", "UTF-8"},
		// About 10^9 steps: accepted, it would never match.
		{"too costly", nestedAll(9), "may cost up to"},
		{"too costly over the record", `record.feature_values.all(k, record.feature_values.all(j, record.feature_values[k] == record.feature_values[j]))`, "may cost up to"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := env.Compile(tt.expr)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Compile(%q) error = %v, want ErrInvalid", tt.expr, err)
			}
			if !strings.Contains(err.Error(), tt.wantInMessage) {
				t.Errorf("error %q does not mention %q", err, tt.wantInMessage)
			}
		})
	}
}

// nestedAll returns n comprehensions over ten elements nested in each other:
// 10^n iterations.
func nestedAll(n int) string {
	list := "[1,2,3,4,5,6,7,8,9,10]"
	expr := "true"
	for i := range n {
		expr = list + ".all(v" + strconv.Itoa(i) + ", " + expr + ")"
	}
	return expr
}

// TestCompileAcceptsOrdinaryCosts: filters a tenant would write stay under
// the estimated cost limit, even at the record's worst-case sizes.
func TestCompileAcceptsOrdinaryCosts(t *testing.T) {
	t.Parallel()
	env, err := NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	for _, expr := range []string{
		`record.entity_keys.user_id.startsWith("vip_")`,
		`record.entity_keys.user_id.matches("^vip_[0-9]+$")`,
		`record.feature_values.exists(k, k.startsWith("cart_") && record.feature_values[k] == "1")`,
		`"user_id" in record.entity_keys && record.feature_view_name in ["a", "b", "c"]`,
		nestedAll(3),
	} {
		if _, err := env.Compile(expr); err != nil {
			t.Errorf("Compile(%q) = %v", expr, err)
		}
	}
}

func TestMatchMissingKeyIsAnError(t *testing.T) {
	t.Parallel()
	env, err := NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	f, err := env.Compile(`record.entity_keys["merchant_id"] == "m1"`)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := f.Match(testRecord()); err == nil || ok {
		t.Errorf("Match = %v, %v; want false and an error for a missing key", ok, err)
	}
}

func TestCostLimitStopsRunawayExpressions(t *testing.T) {
	t.Parallel()
	env, err := NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	// Quadratic in the size of the list: over the cost limit of one
	// evaluation, yet under the compile-time estimate's limit (ten times
	// more), so the evaluation limit is what stops it.
	f, err := env.Compile(`[` + strings.Repeat("1,", 350) + `1].all(x, [` + strings.Repeat("1,", 350) + `1].all(y, x == y))`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Match(testRecord()); err == nil || !strings.Contains(err.Error(), "cost") {
		t.Errorf("Match error = %v, want a cost limit error", err)
	}
}

func FuzzCompile(f *testing.F) {
	// Invariants: Compile never panics; it returns a filter or an error that
	// wraps ErrInvalid; a compiled filter evaluates without panicking.
	for _, s := range []string{
		`record.entity_keys["user_id"].startsWith("vip_")`, `true`, `1`, `record.`, `((((`,
		`record.feature_timestamp > timestamp("2022-01-01T00:00:00Z")`, `size(record.entity_keys) > 0`,
	} {
		f.Add(s)
	}
	env, err := NewEnv()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		flt, err := env.Compile(expr)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Compile(%q) error %v does not wrap ErrInvalid", expr, err)
			}
			return
		}
		_, _ = flt.Match(testRecord())
	})
}
