package tecton

import (
	"slices"
	"strconv"

	"github.com/outflow-dev/outflow/internal/jsonenc"
)

// appendRequestBody appends the JSON of a request body, byte for byte what json.Marshal writes
// for wireRequest{Params: p}, without reflection or sorting through encoding/json: after the
// answer's fast path, json.Marshal of the batch request was the largest part of a
// get-features-batch call in the gateway (issue 10). Only bodies without request context
// values are written here (ok false otherwise: those take json.Marshal, which knows how to
// write any value). FuzzAppendRequestBody holds the two to the same bytes.
func appendRequestBody(dst []byte, p *wireParams) (_ []byte, ok bool) {
	if len(p.RequestContextMap) > 0 {
		return dst, false
	}
	for i := range p.RequestData {
		if len(p.RequestData[i].RequestContextMap) > 0 {
			return dst, false
		}
	}
	dst = append(dst, `{"params":{"workspace_name":`...)
	dst = jsonenc.AppendString(dst, p.WorkspaceName, true)
	dst = append(dst, `,"feature_service_name":`...)
	dst = jsonenc.AppendString(dst, p.FeatureServiceName, true)
	if len(p.JoinKeyMap) > 0 {
		dst = append(dst, `,"join_key_map":`...)
		dst = appendStringMap(dst, p.JoinKeyMap)
	}
	if len(p.RequestData) > 0 {
		dst = append(dst, `,"request_data":[`...)
		for i := range p.RequestData {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, '{')
			if m := p.RequestData[i].JoinKeyMap; len(m) > 0 {
				dst = append(dst, `"join_key_map":`...)
				dst = appendStringMap(dst, m)
			}
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	m := p.MetadataOptions
	dst = append(dst, `,"metadata_options":{"include_names":`...)
	dst = strconv.AppendBool(dst, m.IncludeNames)
	dst = append(dst, `,"include_effective_times":`...)
	dst = strconv.AppendBool(dst, m.IncludeEffectiveTimes)
	dst = append(dst, `,"include_data_types":`...)
	dst = strconv.AppendBool(dst, m.IncludeDataTypes)
	dst = append(dst, `,"include_serving_status":`...)
	dst = strconv.AppendBool(dst, m.IncludeServingStatus)
	dst = append(dst, '}')
	if o := p.RequestOptions; o != nil {
		dst = append(dst, `,"request_options":{"read_from_cache":`...)
		dst = strconv.AppendBool(dst, o.ReadFromCache)
		dst = append(dst, '}')
	}
	return append(dst, "}}"...), true
}

// appendStringMap writes a map as json.Marshal does: keys in bytewise order.
func appendStringMap(dst []byte, m map[string]string) []byte {
	var small [8]string
	keys := small[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = jsonenc.AppendString(dst, k, true)
		dst = append(dst, ':')
		dst = jsonenc.AppendString(dst, m[k], true)
	}
	return append(dst, '}')
}
