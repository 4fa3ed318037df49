// Package filter compiles and evaluates subscription filters: CEL
// expressions over the variable `record`, an outflow.v1.Record, that must
// yield a bool. The API compiles a filter when a subscription is created or
// updated, so a subscription never holds an expression that cannot run; the
// dispatcher compiles it again when it loads the subscription and evaluates
// it per record.
package filter

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/cost"
	"cel.dev/cel-go/interpreter"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/record"
)

// Limits bounding what one filter may cost, so a tenant cannot make record
// matching slow for everyone.
const (
	// MaxLength is the longest accepted expression, in bytes.
	MaxLength = 4096
	// maxNesting bounds the parser's recursion (nested calls and brackets).
	maxNesting = 32
	// maxCost bounds the work of one evaluation, in CEL cost units (about
	// one per operation, plus string lengths for string functions).
	maxCost = 100_000
	// MaxEstimatedCost bounds a filter's worst-case cost per record as
	// CEL's estimator computes it at compile time, with every string of the
	// record as long as a whole record may be (1 MiB), entity_keys and
	// feature_values as large as the decoder allows (64 and 1024 entries).
	// Those sizes are never all reached at once, so the bound is ten times
	// maxCost: it accepts a regular expression over an entity key, and
	// refuses what would exceed maxCost on ordinary records (nested
	// comprehensions), which would otherwise be accepted and then never
	// match.
	MaxEstimatedCost = 10 * maxCost
)

// ErrInvalid is returned (wrapped) for an expression that does not compile,
// does not type-check against outflow.v1.Record, does not yield a bool, or
// exceeds a limit. Its message is meant for the API user.
var ErrInvalid = errors.New("invalid filter")

// Env compiles filters. It is safe for concurrent use; build one and share it.
type Env struct {
	env *cel.Env
}

// NewEnv builds the CEL environment: the variable `record` of type
// outflow.v1.Record, and CEL's standard library.
func NewEnv() (*Env, error) {
	env, err := cel.NewEnv(
		cel.Types(&outflowv1.Record{}),
		cel.Variable("record", cel.ObjectType("outflow.v1.Record")),
		cel.ParserRecursionLimit(maxNesting),
	)
	if err != nil {
		return nil, fmt.Errorf("building the filter environment: %w", err)
	}
	return &Env{env: env}, nil
}

// Filter is a compiled expression, safe for concurrent evaluation.
type Filter struct {
	expr string
	prg  cel.Program
}

// Compile parses and type-checks expr. Errors wrap ErrInvalid and say what
// is wrong, with CEL's position markers.
func (e *Env) Compile(expr string) (*Filter, error) {
	switch {
	case strings.TrimSpace(expr) == "":
		return nil, fmt.Errorf("%w: the expression is empty", ErrInvalid)
	case len(expr) > MaxLength:
		return nil, fmt.Errorf("%w: the expression is %d bytes, more than the limit of %d", ErrInvalid, len(expr), MaxLength)
	case !utf8.ValidString(expr):
		return nil, fmt.Errorf("%w: the expression is not valid UTF-8", ErrInvalid)
	}
	ast, iss := e.env.Compile(expr)
	if iss.Err() != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, iss.Err())
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		return nil, fmt.Errorf("%w: the expression yields %s, not bool", ErrInvalid, cel.FormatCELType(ast.OutputType()))
	}
	est, err := e.env.EstimateCost(ast, recordSizes{})
	if err != nil {
		return nil, fmt.Errorf("%w: estimating its cost: %s", ErrInvalid, err)
	}
	if est.Max > MaxEstimatedCost {
		return nil, fmt.Errorf("%w: the expression may cost up to %d steps per record, more than the limit of %d; avoid nested comprehensions over lists and maps", ErrInvalid, est.Max, MaxEstimatedCost)
	}
	prg, err := e.env.Program(ast, cel.CostLimit(maxCost), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, err)
	}
	return &Filter{expr: expr, prg: prg}, nil
}

// recordSizes tells CEL's cost estimator how large the parts of a record
// can be (see MaxEstimatedCost); other nodes get CEL's own estimates.
type recordSizes struct{}

func (recordSizes) EstimateSize(n cost.AstNode) *cost.SizeEstimate {
	p := n.Path()
	if len(p) < 2 || p[0] != "record" {
		return nil
	}
	var size cost.SizeEstimate
	switch {
	case len(p) == 2 && p[1] == "entity_keys":
		size = cost.RangedSizeEstimate(1, record.DefaultMaxEntityKeys)
	case len(p) == 2 && p[1] == "feature_values":
		size = cost.RangedSizeEstimate(0, record.DefaultMaxFeatureValues)
	default: // a string: a field, or a map's key or value
		size = cost.RangedSizeEstimate(0, record.DefaultMaxBytes)
	}
	return &size
}

func (recordSizes) EstimateCallCost(string, string, *cost.AstNode, []cost.AstNode) *cost.CallEstimate {
	return nil
}

// String returns the source expression.
func (f *Filter) String() string { return f.expr }

// recordActivation binds `record` for one evaluation without the map (and
// its allocations) a map[string]any activation would cost per record.
type recordActivation struct{ rec *outflowv1.Record }

func (a recordActivation) ResolveName(name string) (any, bool) {
	if name == "record" {
		return a.rec, true
	}
	return nil, false
}

func (a recordActivation) Parent() interpreter.Activation { return nil }

// Match evaluates the filter for rec. An error (a missing map key, a cost
// limit hit) means the record does not match; the caller decides whether to
// count it.
func (f *Filter) Match(rec *outflowv1.Record) (bool, error) {
	out, _, err := f.prg.Eval(recordActivation{rec})
	if err != nil {
		return false, fmt.Errorf("evaluating filter: %w", err)
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("evaluating filter: yielded %T, not bool", out.Value())
	}
	return b, nil
}
