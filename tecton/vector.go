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
	// is null (or the feature view's default). For a key never materialised (the first record
	// of a new entity) there is no effective time either, and the feature has not caught up
	// with any record of its view.
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
	// HasEffectiveTime is false for features that carry no effective time: on-demand
	// features, which are computed at request time, and features whose key the online store
	// has not materialised yet (status MISSING_DATA, CACHED_MISSING_DATA or UNKNOWN, often with
	// a null value). [Check] tells them apart by feature view: a feature of the record's own
	// view without an effective time has not caught up with the record; one of another view is
	// not compared.
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

// Verdict is the outcome of the consistency rule (SPEC §4) for one vector and one record: whether
// the vector is consistent with the record, and why.
type Verdict struct {
	// Consistent reports whether every feature of the record's feature view in the vector has
	// caught up with the record. It is Missing == 0 && Behind == 0.
	Consistent bool
	// Compared counts the features of the record's feature view in the vector: those the rule
	// looked at. When it is 0 the feature service holds no feature of that view, waiting can
	// change nothing, and the vector is consistent.
	Compared int
	// Missing counts the compared features without an effective time: a key the online store
	// has not materialised yet (MISSING_DATA, CACHED_MISSING_DATA, UNKNOWN or no status at
	// all). Each makes the vector inconsistent.
	Missing int
	// Behind counts the compared features whose effective time is before the record's
	// feature_timestamp (truncated to the vector's Precision).
	Behind int
	// Oldest is the earliest effective time among the compared features that have one, in
	// UTC; zero when none has. With Missing == 0 it tells how far behind the vector is.
	Oldest time.Time
}

// Fresher reports whether a vector judged v is at least as fresh as one judged w, for the same
// record: fewer features without an effective time first (a value that exists beats none),
// then the later Oldest effective time. Equal verdicts are at least as fresh, so that a caller
// keeping the freshest of a sequence keeps the latest among equals.
func (v Verdict) Fresher(w Verdict) bool {
	if v.Missing != w.Missing {
		return v.Missing < w.Missing
	}
	return !v.Oldest.Before(w.Oldest)
}

// Check applies the consistency rule of SPEC §4 to the features of one vector, for a record of
// featureView written at featureTimestamp. It is a pure function of its arguments; it is the
// one definition of the rule, which [Vector.Check] and [Vector.Consistent] apply to a Vector.
//
// Only features of featureView count. Each of them has caught up with the record when it has
// an effective time at or after featureTimestamp; one without an effective time has not (the
// online store has not materialised the key yet), whatever its status. Features of other
// feature views are ignored, stale or not, and so are features without an effective time that
// belong to another view (on-demand features, computed at request time). The vector is
// consistent when every counted feature has caught up, and also when none counts: then the
// feature service holds no feature of featureView and waiting can change nothing.
//
// precision is the granularity at which the backend stores effective times (Vector.Precision):
// when positive, featureTimestamp is truncated to it before comparing, so a store that keeps
// whole seconds reports a record written at 12:00:40.5 as caught up at 12:00:40. Zero or
// negative means full nanosecond precision. Times compare as instants, whatever their zones,
// and equality counts as caught up. An empty featureView matches no feature (a Feature whose
// Name has no '.' has an empty FeatureView but belongs to no view).
func Check(features []Feature, featureView string, featureTimestamp time.Time, precision time.Duration) Verdict {
	verdict := Verdict{Consistent: true}
	hasOldest := false
	if featureView == "" {
		return verdict
	}
	if precision > 0 {
		featureTimestamp = featureTimestamp.Truncate(precision)
	}
	for i := range features {
		f := &features[i]
		if f.FeatureView != featureView {
			continue
		}
		verdict.Compared++
		switch {
		case !f.HasEffectiveTime:
			verdict.Missing++
			continue
		case f.EffectiveTime.Before(featureTimestamp):
			verdict.Behind++
		}
		if !hasOldest || f.EffectiveTime.Before(verdict.Oldest) {
			verdict.Oldest, hasOldest = f.EffectiveTime.UTC(), true
		}
	}
	verdict.Consistent = verdict.Missing == 0 && verdict.Behind == 0
	return verdict
}

// Check applies the consistency rule (see the function [Check]) to the vector, at the vector's
// Precision. A nil Vector holds no feature and is consistent.
func (v *Vector) Check(featureView string, featureTimestamp time.Time) Verdict {
	if v == nil {
		return Check(nil, featureView, featureTimestamp, 0)
	}
	return Check(v.Features, featureView, featureTimestamp, v.Precision)
}

// Consistent reports whether the vector is consistent with a record of featureView written at
// featureTimestamp (SPEC §4), and how many features of featureView it compared: it is
// [Vector.Check] reduced to those two results. A feature of featureView without an effective
// time makes the vector inconsistent; compared is 0, and the vector consistent, only when it
// holds no feature of featureView at all. A nil Vector, or an empty featureView, yields
// (true, 0).
//
// Aggregate feature views align effective times to their aggregation interval, so such a
// vector may never become consistent; the caller's consistency_timeout bounds the wait.
func (v *Vector) Consistent(featureView string, featureTimestamp time.Time) (consistent bool, compared int) {
	verdict := v.Check(featureView, featureTimestamp)
	return verdict.Consistent, verdict.Compared
}
