package enrich

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/tecton"
)

// Proto returns the event envelope's feature_vector (SPEC §5) for this result, read from the
// given workspace and feature service. It returns nil for a nil Result.
//
// features maps each "<feature view>.<feature>" name to its value in its JSON type, exactly as
// the feature store encoded it: int64 values, which Tecton sends as JSON strings, stay strings
// so that no precision is lost; doubles are numbers; null, arrays and structs (positional
// arrays) are kept. A google.protobuf.Struct holds numbers as doubles, so a number that does not
// fit a double (beyond ±1.8e308, which protobuf JSON cannot write) is kept as its decimal
// string, and a value that is not JSON at all (never from a parsed Tecton answer) as its raw
// text with invalid UTF-8 replaced. metadata gives each feature's status and, except for
// on-demand features, its effective time; consistent is absent when nothing was checked
// (NONE); attempts counts the calls made.
func (r *Result) Proto(workspace, service string) *outflowv1.FeatureVector {
	if r == nil {
		return nil
	}
	var features []tecton.Feature
	if r.Vector != nil {
		features = r.Vector.Features
	}
	fv := &outflowv1.FeatureVector{
		WorkspaceName:      workspace,
		FeatureServiceName: service,
		Features:           &structpb.Struct{Fields: make(map[string]*structpb.Value, len(features))},
		Metadata:           make(map[string]*outflowv1.FeatureMetadata, len(features)),
		Attempts:           int32(min(r.Attempts, math.MaxInt32)),
	}
	if r.Consistent != nil {
		fv.Consistent = new(*r.Consistent)
	}
	for i := range features {
		f := &features[i]
		fv.Features.Fields[f.Name] = jsonValue(f.Value)
		md := &outflowv1.FeatureMetadata{Status: f.Status}
		if f.HasEffectiveTime {
			md.EffectiveTime = timestamppb.New(f.EffectiveTime)
		}
		fv.Metadata[f.Name] = md
	}
	return fv
}

// jsonValue converts one JSON value to a structpb.Value. Numbers are decoded as json.Number and
// converted once, so a number is never parsed twice or silently turned into ±Inf.
func jsonValue(raw json.RawMessage) *structpb.Value {
	raw = bytes.TrimSpace(raw)
	if v := scalarValue(raw); v != nil {
		return v
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		// Not JSON: keep the text visible rather than drop it, in valid UTF-8 as protobuf
		// strings require.
		return structpb.NewStringValue(strings.ToValidUTF8(string(raw), "\uFFFD"))
	}
	return toValue(v)
}

// scalarValue converts the common scalar values — null, booleans, plain strings and numbers —
// without a json.Decoder, which costs several allocations per value; it returns nil for anything
// else (arrays, objects, strings with escapes, anything malformed), which jsonValue then decodes
// in full.
func scalarValue(raw []byte) *structpb.Value {
	if len(raw) == 0 {
		return structpb.NewNullValue()
	}
	switch c := raw[0]; {
	case string(raw) == "null":
		return structpb.NewNullValue()
	case string(raw) == "true":
		return structpb.NewBoolValue(true)
	case string(raw) == "false":
		return structpb.NewBoolValue(false)
	case c == '"':
		if len(raw) < 2 || raw[len(raw)-1] != '"' {
			return nil
		}
		body := raw[1 : len(raw)-1]
		for _, b := range body {
			if b == '\\' || b == '"' || b < 0x20 || b >= utf8.RuneSelf {
				return nil // escapes, control or non-ASCII bytes: let encoding/json check them
			}
		}
		return structpb.NewStringValue(string(body))
	case c == '-' || ('0' <= c && c <= '9'):
		// Only the bytes of the JSON number grammar, so that strconv's extras (hex floats,
		// underscores, "Inf") never pass; leniency left (a leading zero, say) changes nothing.
		for _, b := range raw {
			if !('0' <= b && b <= '9' || b == '-' || b == '+' || b == '.' || b == 'e' || b == 'E') {
				return nil
			}
		}
		f, err := strconv.ParseFloat(string(raw), 64)
		if err != nil {
			return nil // out of range or malformed: the full path keeps it as text
		}
		return structpb.NewNumberValue(f)
	}
	return nil
}

// toValue converts a value decoded by encoding/json with UseNumber.
func toValue(v any) *structpb.Value {
	switch v := v.(type) {
	case nil:
		return structpb.NewNullValue()
	case bool:
		return structpb.NewBoolValue(v)
	case string:
		return structpb.NewStringValue(v)
	case json.Number:
		f, err := v.Float64()
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return structpb.NewStringValue(v.String())
		}
		return structpb.NewNumberValue(f)
	case []any:
		list := &structpb.ListValue{Values: make([]*structpb.Value, len(v))}
		for i, e := range v {
			list.Values[i] = toValue(e)
		}
		return structpb.NewListValue(list)
	case map[string]any:
		s := &structpb.Struct{Fields: make(map[string]*structpb.Value, len(v))}
		for k, e := range v {
			s.Fields[k] = toValue(e)
		}
		return structpb.NewStructValue(s)
	default:
		// encoding/json decodes into nothing else; keep the value visible rather than drop it.
		b, _ := json.Marshal(v)
		return structpb.NewStringValue(string(b))
	}
}
