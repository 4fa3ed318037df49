package filter

import (
	"errors"
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
	// Quadratic in the size of the list: far over the cost limit.
	f, err := env.Compile(`[` + strings.Repeat("1,", 600) + `1].all(x, [` + strings.Repeat("1,", 600) + `1].all(y, x == y))`)
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
