package featureserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// featuresRequest is a parsed get-features or get-features-batch request body.
type featuresRequest struct {
	workspace string
	service   string
	// rows has one entry for get-features and 1 to MaxBatchSize for get-features-batch.
	rows []requestRow
	meta metadataOptions
	// readFromCache and writeToCache are request_options; both default to true.
	readFromCache, writeToCache bool
	// ignoreExtraContext is request_options.ignore_extra_request_context_fields.
	ignoreExtraContext bool
}

type requestRow struct {
	// joinKeys holds each join key's value as text: strings as given, integers in their
	// JSON spelling.
	joinKeys map[string]string
	// requestContext holds the raw JSON of each request context value; its type is checked
	// against the catalog later.
	requestContext map[string]json.RawMessage
}

type metadataOptions struct {
	names, effectiveTimes, dataTypes, sloInfo, servingStatus bool
}

// The fields each object of a request may have, by proto name. Each is also accepted in its
// lowerCamelCase JSON name. Fields Tecton defines that this server does not implement are
// accepted and ignored, so that Tecton's own clients work; anything else is a 400, so that a
// misspelt option in a client under test is caught rather than silently ignored.
var (
	bodyFields   = []string{"params"}
	commonParams = []string{
		"workspace_name", "feature_service_name", "metadata_options", "request_options",
		"allow_partial_results", "feature_service_id", "feature_package_id", "feature_package_name",
	}
	singleParams   = append(slices.Clone(commonParams), "join_key_map", "request_context_map")
	batchParams    = append(slices.Clone(commonParams), "request_data")
	metadataParams = []string{"workspace_name", "feature_service_name", "feature_service_id"}
	rowFields      = []string{"join_key_map", "request_context_map"}
	metadataFields = []string{
		"include_names", "include_effective_times", "include_data_types", "include_slo_info",
		"include_serving_status", "include_feature_descriptions", "include_feature_tags",
	}
	requestOptionFields = []string{
		"read_from_cache", "write_to_cache", "ignore_extra_request_context_fields",
		"latency_budget_ms", "coerce_null_counts_to_zero", "aggregation_leading_edge",
	}
)

// parseFeaturesRequest parses a get-features (batch false) or get-features-batch body. It
// checks the shape only; names and values are checked against the catalog by the handler.
// The body Outflow's tecton.Client sends takes a one-pass fast path (fastrequest.go); every
// other body, every error included, the general parser below.
func parseFeaturesRequest(body []byte, batch bool) (*featuresRequest, *apiError) {
	if req, ok := parseRequestFast(body, batch); ok {
		return req, nil
	}
	return parseFeaturesRequestJSON(body, batch)
}

// parseFeaturesRequestJSON is parseFeaturesRequest with encoding/json: the reference the fast
// path is checked against.
func parseFeaturesRequestJSON(body []byte, batch bool) (*featuresRequest, *apiError) {
	allowed := singleParams
	if batch {
		allowed = batchParams
	}
	params, aerr := readParams(body, allowed)
	if aerr != nil {
		return nil, aerr
	}
	req := &featuresRequest{readFromCache: true, writeToCache: true}
	if req.workspace, req.service, aerr = readServiceName(params); aerr != nil {
		return nil, aerr
	}
	if raw, ok := params["metadata_options"]; ok {
		opts, aerr := readObject(raw, "params.metadata_options", metadataFields)
		if aerr != nil {
			return nil, aerr
		}
		for _, f := range []struct {
			name string
			dst  *bool
		}{
			{"include_names", &req.meta.names},
			{"include_effective_times", &req.meta.effectiveTimes},
			{"include_data_types", &req.meta.dataTypes},
			{"include_slo_info", &req.meta.sloInfo},
			{"include_serving_status", &req.meta.servingStatus},
			{"include_feature_descriptions", new(bool)},
			{"include_feature_tags", new(bool)},
		} {
			if aerr := readBool(opts, f.name, "params.metadata_options", f.dst); aerr != nil {
				return nil, aerr
			}
		}
	}
	if raw, ok := params["request_options"]; ok {
		opts, aerr := readObject(raw, "params.request_options", requestOptionFields)
		if aerr != nil {
			return nil, aerr
		}
		for _, f := range []struct {
			name string
			dst  *bool
		}{
			{"read_from_cache", &req.readFromCache},
			{"write_to_cache", &req.writeToCache},
			{"ignore_extra_request_context_fields", &req.ignoreExtraContext},
			{"coerce_null_counts_to_zero", new(bool)},
		} {
			if aerr := readBool(opts, f.name, "params.request_options", f.dst); aerr != nil {
				return nil, aerr
			}
		}
	}
	if aerr := readBool(params, "allow_partial_results", "params", new(bool)); aerr != nil {
		return nil, aerr
	}

	if !batch {
		row, aerr := readRow(params, "params")
		if aerr != nil {
			return nil, aerr
		}
		req.rows = []requestRow{row}
		return req, nil
	}
	raw, ok := params["request_data"]
	if !ok {
		return nil, badRequest("params.request_data is required")
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, badRequest("params.request_data must be a list")
	}
	switch {
	case len(list) == 0:
		return nil, badRequest("params.request_data must have at least one row")
	case len(list) > MaxBatchSize:
		return nil, badRequest("params.request_data has %d rows; at most %d are allowed", len(list), MaxBatchSize)
	}
	for i, rawRow := range list {
		where := fmt.Sprintf("params.request_data[%d]", i)
		fields, aerr := readObject(rawRow, where, rowFields)
		if aerr != nil {
			return nil, aerr
		}
		row, aerr := readRow(fields, where)
		if aerr != nil {
			return nil, aerr
		}
		req.rows = append(req.rows, row)
	}
	return req, nil
}

// parseMetadataRequest parses a feature-service/metadata body.
func parseMetadataRequest(body []byte) (workspace, service string, aerr *apiError) {
	params, aerr := readParams(body, metadataParams)
	if aerr != nil {
		return "", "", aerr
	}
	return readServiceName(params)
}

// readParams reads {"params": {...}} and returns the members of params.
func readParams(body []byte, allowed []string) (map[string]json.RawMessage, *apiError) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, badRequest("request body is empty; want {\"params\": {...}}")
	}
	top, aerr := readObject(body, "request body", bodyFields)
	if aerr != nil {
		return nil, aerr
	}
	raw, ok := top["params"]
	if !ok {
		return nil, badRequest("params is required")
	}
	return readObject(raw, "params", allowed)
}

// readServiceName reads workspace_name and feature_service_name, both required.
func readServiceName(params map[string]json.RawMessage) (workspace, service string, aerr *apiError) {
	if aerr := readString(params, "workspace_name", "params", &workspace); aerr != nil {
		return "", "", aerr
	}
	if aerr := readString(params, "feature_service_name", "params", &service); aerr != nil {
		return "", "", aerr
	}
	if service == "" {
		var id string
		if aerr := readString(params, "feature_service_id", "params", &id); aerr != nil {
			return "", "", aerr
		}
		if id != "" {
			return "", "", badRequest("params.feature_service_id is not supported by the reference feature server; use feature_service_name")
		}
		return "", "", badRequest("params.feature_service_name is required")
	}
	if workspace == "" {
		return "", "", badRequest("params.workspace_name is required")
	}
	return workspace, service, nil
}

// readRow reads join_key_map and request_context_map from an object's members.
func readRow(fields map[string]json.RawMessage, where string) (requestRow, *apiError) {
	var row requestRow
	if raw, ok := fields["join_key_map"]; ok {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			return row, badRequest("%s.join_key_map must be an object", where)
		}
		row.joinKeys = make(map[string]string, len(m))
		for _, k := range slices.Sorted(maps.Keys(m)) {
			v, ok := joinKeyText(m[k])
			if !ok {
				return row, badRequest("%s.join_key_map[%s] must be a string or an integer", where, quote(k))
			}
			row.joinKeys[k] = v
		}
	}
	if raw, ok := fields["request_context_map"]; ok {
		if err := json.Unmarshal(raw, &row.requestContext); err != nil {
			return row, badRequest("%s.request_context_map must be an object", where)
		}
		// A null value is an absent one, as in protobuf JSON.
		maps.DeleteFunc(row.requestContext, func(_ string, v json.RawMessage) bool {
			return string(bytes.TrimSpace(v)) == "null"
		})
	}
	if len(row.joinKeys) == 0 && len(row.requestContext) == 0 {
		return row, badRequest("%s: join_key_map or request_context_map is required", where)
	}
	return row, nil
}

// joinKeyText returns a join key value as text: a JSON string's content, or an integer's
// digits (Tecton accepts int64 join keys either way).
func joinKeyText(raw json.RawMessage) (string, bool) {
	text := string(bytes.TrimSpace(raw))
	if text == "null" {
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, true
	}
	if _, err := strconv.ParseInt(text, 10, 64); err == nil {
		return text, true
	}
	return "", false
}

// readObject reads a JSON object whose members are protobuf fields: each may be spelt as its
// proto name (snake_case) or its JSON name (lowerCamelCase), as protobuf JSON parsers accept.
// It returns the members keyed by proto name. A member that is null is absent, as in protobuf
// JSON; both spellings of one field, or a field not in known, is a 400.
func readObject(raw json.RawMessage, where string, known []string) (map[string]json.RawMessage, *apiError) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		if _, isSyntax := errors.AsType[*json.SyntaxError](err); isSyntax {
			return nil, badRequest("%s is not valid JSON: %s", where, err.Error())
		}
		return nil, badRequest("%s must be a JSON object", where)
	}
	out := make(map[string]json.RawMessage, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		name := ""
		for _, f := range known {
			if k == f || k == snakeToCamel(f) {
				name = f
				break
			}
		}
		if name == "" {
			return nil, badRequest("unknown field %s in %s", quote(k), where)
		}
		if _, dup := out[name]; dup {
			return nil, badRequest("%s has both %s and %s", where, name, snakeToCamel(name))
		}
		if string(bytes.TrimSpace(m[k])) == "null" {
			continue
		}
		out[name] = m[k]
	}
	return out, nil
}

func readString(fields map[string]json.RawMessage, name, where string, dst *string) *apiError {
	raw, ok := fields[name]
	if !ok {
		return nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return badRequest("%s.%s must be a string", where, name)
	}
	return nil
}

func readBool(fields map[string]json.RawMessage, name, where string, dst *bool) *apiError {
	raw, ok := fields[name]
	if !ok {
		return nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return badRequest("%s.%s must be true or false", where, name)
	}
	return nil
}

// snakeToCamel converts a proto field name to its JSON name: "join_key_map" → "joinKeyMap".
func snakeToCamel(s string) string {
	var b strings.Builder
	upper := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' {
			upper = true
			continue
		}
		if upper && 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		upper = false
		b.WriteByte(c)
	}
	return b.String()
}

// quote quotes a client-provided string for an error message, cut to a bounded length so an
// error cannot echo a large body.
func quote(s string) string {
	const maxLen = 64
	if len(s) > maxLen {
		cut := maxLen
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "…"
	}
	return strconv.Quote(s)
}

// contextValue converts a request_context_map value to t: strings from JSON strings, int64
// from an integer or its decimal string, float64 from a finite number or its string, bool
// from true or false.
func contextValue(t DataType, raw json.RawMessage) (any, bool) {
	var s string
	isString := json.Unmarshal(raw, &s) == nil
	switch t {
	case String:
		return s, isString
	case Bool:
		var b bool
		return b, json.Unmarshal(raw, &b) == nil
	case Int64:
		if !isString {
			s = string(bytes.TrimSpace(raw))
		}
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil
	case Float64:
		if !isString {
			s = string(bytes.TrimSpace(raw))
		}
		v, err := convert(Float64, s)
		return v, err == nil
	}
	return nil, false
}
