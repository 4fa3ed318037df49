package tecton

import (
	"slices"
	"strconv"
	"unicode/utf8"
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
	dst = appendMarshalString(dst, p.WorkspaceName)
	dst = append(dst, `,"feature_service_name":`...)
	dst = appendMarshalString(dst, p.FeatureServiceName)
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
		dst = appendMarshalString(dst, k)
		dst = append(dst, ':')
		dst = appendMarshalString(dst, m[k])
	}
	return append(dst, '}')
}

const hexDigits = "0123456789abcdef"

// appendMarshalString writes s as json.Marshal does: quotes, backslashes and control
// characters escaped, and <, > and & too (HTML-safe, json.Marshal's default); invalid UTF-8
// as U+FFFD; U+2028 and U+2029 escaped.
func appendMarshalString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '\\', '"':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
