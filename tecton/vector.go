package tecton

import (
	"encoding/json"
	"time"
)

// Feature statuses Tecton reports with the include_serving_status metadata option. A status
// this package does not know is kept as the server spelled it; a response without statuses
// leaves Feature.Status empty.
const (
	// StatusPresent means the value was read from the online store.
	StatusPresent = "PRESENT"
	// StatusMissingData means the online store holds no value for these join keys; the value
	// is null (or the feature view's default).
	StatusMissingData = "MISSING_DATA"
	// StatusCachedPresent means the value came from Tecton's feature serving cache.
	StatusCachedPresent = "CACHED_PRESENT"
	// StatusCachedMissingData means the cache remembered that no value exists.
	StatusCachedMissingData = "CACHED_MISSING_DATA"
	// StatusCachedUnknown means the cache served the value without a known presence status.
	StatusCachedUnknown = "CACHED_UNKNOWN"
	// StatusUnknown means the server reported no presence status for the value.
	StatusUnknown = "UNKNOWN"
)

// Feature is one value of a feature vector with its metadata.
type Feature struct {
	// Name is the fully qualified name Tecton reports, "<feature view>.<feature>". It is never
	// empty in a Vector returned by this package.
	Name string
	// FeatureView is Name up to its first '.', the feature view (or on-demand feature view)
	// that produced the value; empty when Name has no '.', so such a feature never matches a
	// record's feature view.
	FeatureView string
	// Value is the value exactly as Tecton encoded it, compacted: int64 as a JSON string,
	// float64 as a number, null for a missing value, arrays as arrays, structs as positional
	// arrays of their fields. Keeping raw JSON loses nothing (no float rounding of int64, no
	// guess at struct field names); DataType says how to read it. Treat it as read-only.
	Value json.RawMessage
	// DataType is Tecton's data type description, e.g. {"type":"int64"} or
	// {"elementType":{"type":"string"},"type":"array"}, normalised to lowerCamelCase keys in
	// sorted order whichever spelling the server used; nil when the response carries none. It
	// may be shared between the rows of a batch: treat it as read-only.
	DataType json.RawMessage
	// EffectiveTime is the time of the most recent value written to the online store for this
	// feature, in UTC; meaningful only when HasEffectiveTime is true.
	EffectiveTime time.Time
	// HasEffectiveTime is false for features that carry no effective time — on-demand
	// features, which are computed at request time — and those are never compared by
	// Consistent.
	HasEffectiveTime bool
	// Status is the serving status (one of the Status constants, or whatever new value the
	// server sent); empty when the response has none.
	Status string
}

// Vector is one feature vector: the answer to one GetFeatures request, or one row of a batch.
// Features keep the order of the feature service.
type Vector struct {
	// Features holds one entry per feature of the feature service, in the server's order.
	Features []Feature
	// Precision is the granularity at which the backend stores effective times: a store
	// that keeps whole seconds (Feast's SQLite online store) reports a value written for a
	// record at 12:00:40.5 as effective at 12:00:40. The consistency rule truncates the
	// record's feature timestamp to Precision before comparing, so such a store can ever be
	// caught up. Zero means full (nanosecond) precision, as Tecton reports.
	Precision time.Duration
}

// Lookup returns the feature with the given fully qualified name ("<feature view>.<feature>")
// and whether it exists. Names in a parsed Vector are unique.
func (v *Vector) Lookup(name string) (Feature, bool) {
	if v == nil {
		return Feature{}, false
	}
	for _, f := range v.Features {
		if f.Name == name {
			return f, true
		}
	}
	return Feature{}, false
}

// Consistent implements the consistency rule of SPEC §4: the vector is consistent with a
// record of featureView written at featureTimestamp when every feature of that feature view
// in the vector that has an effective time has effective_time >= featureTimestamp — that is,
// the online store already reflects the record.
//
// Features of other feature views are ignored, and so are features without an effective time
// (on-demand features): there is nothing to compare. compared counts the features that were
// compared; when it is 0 the vector holds no comparable feature of featureView and is
// consistent by definition, since waiting cannot change it. Times compare at full nanosecond
// precision, and equality counts as caught up. A nil Vector, or an empty featureView (which no
// feature belongs to), yields (true, 0).
//
// Aggregate feature views align effective times to their aggregation interval, so such a
// vector may never become consistent; the caller's consistency_timeout bounds the wait.
func (v *Vector) Consistent(featureView string, featureTimestamp time.Time) (consistent bool, compared int) {
	consistent = true
	if v == nil || featureView == "" {
		return consistent, 0
	}
	if v.Precision > 0 {
		featureTimestamp = featureTimestamp.Truncate(v.Precision)
	}
	for i := range v.Features {
		f := &v.Features[i]
		if f.FeatureView != featureView || !f.HasEffectiveTime {
			continue
		}
		compared++
		if f.EffectiveTime.Before(featureTimestamp) {
			consistent = false
		}
	}
	return consistent, compared
}
