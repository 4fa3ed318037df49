package featureserver

import (
	"math"
	"strconv"
	"time"

	"github.com/outflow-dev/outflow/internal/jsonenc"
)

// rawJSON is an answer already encoded: serveHTTP writes it as is.
type rawJSON []byte

// appendFeaturesResponse writes the get-features (batch false) or get-features-batch answer of
// rows, byte for byte what marshal(buildFeaturesResponse(...)) writes, without reflection or an
// interface value per cell: encoding the answer through encoding/json cost the reference
// feature server more than serving it (issue 10). TestAppendFeaturesResponseMatches and
// FuzzAppendFeaturesResponse hold the two to the same bytes. ok is false when a value cannot
// be written as JSON (a non-finite float, which convert never stores); the caller then uses
// marshal, which reports it.
func appendFeaturesResponse(dst []byte, svc *serviceDef, opts metadataOptions, rows [][]cell, batch bool, slo sloInfo) ([]byte, bool) {
	ok := true
	appendRow := func(dst []byte, cells []cell) []byte {
		dst = append(dst, `{"features":[`...)
		for i, c := range cells {
			if i > 0 {
				dst = append(dst, ',')
			}
			var good bool
			dst, good = appendWireValue(dst, c.value)
			ok = ok && good
		}
		return append(dst, "]}"...)
	}
	dst = append(dst, `{"result":`...)
	if batch {
		dst = append(dst, '[')
		for r, cells := range rows {
			if r > 0 {
				dst = append(dst, ',')
			}
			dst = appendRow(dst, cells)
		}
		dst = append(dst, ']')
	} else {
		dst = appendRow(dst, rows[0])
	}
	// The metadata object is there when any option asks for something (featureMetadataList's
	// non-nil list, or SLO info); its features list is left out when empty (omitempty).
	anyOpt := opts.names || opts.effectiveTimes || opts.dataTypes || opts.servingStatus
	if anyOpt || opts.sloInfo {
		dst = append(dst, `,"metadata":{`...)
		sep := false
		if anyOpt && len(svc.features) > 0 {
			dst = append(dst, `"features":[`...)
			for i, f := range svc.features {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = appendFeatureMetadata(dst, f, i, opts, rows, batch)
			}
			dst = append(dst, ']')
			sep = true
		}
		if opts.sloInfo {
			writeSLO := func() {
				var good bool
				dst, good = appendSLO(dst, slo)
				ok = ok && good
			}
			if sep {
				dst = append(dst, ',')
			}
			if !batch {
				dst = append(dst, `"sloInfo":`...)
				writeSLO()
			} else {
				if len(rows) > 0 {
					dst = append(dst, `"sloInfo":[`...)
					for r := range rows {
						if r > 0 {
							dst = append(dst, ',')
						}
						writeSLO()
					}
					dst = append(dst, "],"...)
				}
				dst = append(dst, `"batchSloInfo":`...)
				writeSLO()
			}
		}
		dst = append(dst, '}')
	}
	return append(dst, '}'), ok
}

// appendFeatureMetadata writes one metadata.features entry, as featureMetadataList builds it.
func appendFeatureMetadata(dst []byte, f servedFeature, i int, opts metadataOptions, rows [][]cell, batch bool) []byte {
	dst = append(dst, '{')
	sep := false
	comma := func() {
		if sep {
			dst = append(dst, ',')
		}
		sep = true
	}
	if opts.names && f.name != "" {
		comma()
		dst = append(dst, `"name":`...)
		dst = jsonenc.AppendString(dst, f.name, false)
	}
	if opts.effectiveTimes && !f.view.OnDemand {
		if batch {
			some := false
			for r := range rows {
				if rows[r][i].hasEffective {
					some = true
					break
				}
			}
			if some {
				comma()
				dst = append(dst, `"effectiveTime":[`...)
				for r := range rows {
					if r > 0 {
						dst = append(dst, ',')
					}
					if c := rows[r][i]; c.hasEffective {
						dst = appendTime(dst, c.effective)
					} else {
						dst = append(dst, "null"...)
					}
				}
				dst = append(dst, ']')
			}
		} else if c := rows[0][i]; c.hasEffective {
			comma()
			dst = append(dst, `"effectiveTime":`...)
			dst = appendTime(dst, c.effective)
		}
	}
	if opts.dataTypes {
		comma()
		dst = append(dst, `"dataType":{"type":`...)
		dst = jsonenc.AppendString(dst, f.field().Type.wireName(), false)
		dst = append(dst, '}')
	}
	if opts.servingStatus {
		comma()
		dst = append(dst, `"status":`...)
		if batch {
			dst = append(dst, '[')
			for r := range rows {
				if r > 0 {
					dst = append(dst, ',')
				}
				dst = jsonenc.AppendString(dst, rows[r][i].status, false)
			}
			dst = append(dst, ']')
		} else {
			dst = jsonenc.AppendString(dst, rows[0][i].status, false)
		}
	}
	return append(dst, '}')
}

// appendTime writes formatTime(t) as a JSON string.
func appendTime(dst []byte, t time.Time) []byte {
	dst = append(dst, '"')
	dst = t.UTC().AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"')
}

// appendSLO writes one sloInfo; ok is false when one of its numbers is not finite.
func appendSLO(dst []byte, s sloInfo) (_ []byte, ok bool) {
	dst = append(dst, `{"sloEligible":`...)
	dst = strconv.AppendBool(dst, s.SLOEligible)
	dst = append(dst, `,"sloServerTimeSeconds":`...)
	dst, ok1 := appendJSONFloat(dst, s.SLOServerTimeSeconds)
	dst = append(dst, `,"serverTimeSeconds":`...)
	dst, ok2 := appendJSONFloat(dst, s.ServerTimeSeconds)
	dst = append(dst, `,"storeMaxLatency":`...)
	dst, ok3 := appendJSONFloat(dst, s.StoreMaxLatency)
	return append(dst, '}'), ok1 && ok2 && ok3
}

// appendWireValue writes one cell value as encoding/json writes wireValue(v): an int64 as a
// decimal string, nil, strings, float64 and bool as themselves.
func appendWireValue(dst []byte, v any) ([]byte, bool) {
	switch v := v.(type) {
	case nil:
		return append(dst, "null"...), true
	case string:
		return jsonenc.AppendString(dst, v, false), true
	case float64:
		return appendJSONFloat(dst, v)
	case bool:
		return strconv.AppendBool(dst, v), true
	case int64:
		dst = append(dst, '"')
		dst = strconv.AppendInt(dst, v, 10)
		return append(dst, '"'), true
	}
	return dst, false
}

// appendJSONFloat writes f as encoding/json does (ES6 number formatting); ok is false for a
// NaN or an infinity, which JSON cannot hold.
func appendJSONFloat(dst []byte, f float64) ([]byte, bool) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return dst, false
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// e-09 → e-9, as encoding/json writes it.
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst, true
}
