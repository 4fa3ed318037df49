package enrich

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/outflow-dev/outflow/feast"
	"github.com/outflow-dev/outflow/tecton"
)

// ErrInvalidConfig is wrapped by every error New returns for a Config that fails validation.
var ErrInvalidConfig = errors.New("enrich: invalid config")

// ErrInvalidRequest is wrapped by the error Enrich returns, before any call, when the record and
// the subscription's enrichment settings cannot form a GetFeatures request: no record or
// settings, no workspace or feature service, a record without entity keys, or a join_keys rename
// that maps to an empty name or makes two entity keys collide. It is not retriable: the same
// record and settings fail the same way, so the event should fail at once.
var ErrInvalidRequest = errors.New("enrich: invalid request")

// ErrTimeout is wrapped by the *StoreError Enrich returns when the consistency_timeout ended
// before the feature store gave any answer (a call still in flight, or nothing but retriable
// errors with no error to report).
var ErrTimeout = errors.New("enrich: consistency timeout")

// StoreError is a feature-store failure that ended an Enrich call. It keeps the store's error,
// so the dispatcher can record it on the delivery, and says whether a later attempt may succeed.
type StoreError struct {
	// Err is the last error of the feature store (a *tecton.APIError, *tecton.TransportError or
	// *tecton.ParseError for the Tecton backend; their feast counterparts for Feast), or
	// ErrTimeout wrapped when no call answered within the consistency_timeout.
	Err error
	// Retriable is true when a later delivery attempt may succeed: the store kept failing with
	// retriable errors (5xx, 429, timeouts) until the consistency_timeout or
	// Config.MaxErrorRetries ran out. It is false for errors that a retry cannot fix (400, 401,
	// 403, 404, an answer that cannot be parsed), which fail the event at once (SPEC §4).
	Retriable bool
	// RetryAfter is the delay the feature server last asked for (Retry-After), so that the
	// retry queue does not come back earlier; 0 when it asked for none.
	RetryAfter time.Duration
	// Attempts is the number of feature-store calls Enrich made, including failed ones.
	Attempts int
	// OperatorFault reports a failure of the gateway's own configuration, not of the
	// subscription: the feature store refused the gateway's credentials (HTTP 401 or 403), or
	// the subscription's backend is not configured on this gateway (ErrNoBackend). Retriable is
	// then true, and the dispatcher retries the event with backoff without counting the attempt
	// against the subscription's retry policy, and logs and counts the failure for the
	// operator (SPEC §4: an operator's misconfiguration must not burn subscribers' retries).
	OperatorFault bool
}

// Error describes the failure, with the store's error.
func (e *StoreError) Error() string {
	var b strings.Builder
	b.WriteString("enrich: feature store failed")
	if e.OperatorFault {
		b.WriteString(" (gateway misconfigured)")
	} else if e.Retriable {
		b.WriteString(" (retriable)")
	}
	b.WriteString(" after ")
	b.WriteString(strconv.Itoa(e.Attempts))
	if e.Attempts == 1 {
		b.WriteString(" attempt")
	} else {
		b.WriteString(" attempts")
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the store's error.
func (e *StoreError) Unwrap() error { return e.Err }

// InconsistentError is returned by Enrich with consistency STRICT when the online store still
// did not reflect the record after consistency_timeout. The dispatcher turns it into a failed
// delivery attempt, so the event joins the retry queue and is dead-lettered after the retry
// policy like any failed delivery (SPEC §4). It is always retriable: the online store may catch
// up later.
type InconsistentError struct {
	// Attempts is the number of feature-store calls Enrich made, including failed ones.
	Attempts int
	// Last is the freshest vector seen; never nil. It is shared with other waiters and must be
	// treated as read-only.
	Last *tecton.Vector
	// FeatureView and FeatureTimestamp identify the record the vector was compared with.
	FeatureView      string
	FeatureTimestamp time.Time
	// Missing is the number of features of FeatureView in Last without an effective time: the
	// online store had not materialised the entity's key at all (MISSING_DATA with no
	// effective time, as for the first record of a new entity).
	Missing int
	// Lag is how far the oldest feature of FeatureView in Last that has an effective time was
	// behind FeatureTimestamp: FeatureTimestamp minus that effective time. It is 0 when Missing
	// is positive, where no lag can be measured. For aggregate feature views, whose effective
	// times align to the aggregation interval, a Lag that stays below the interval means the
	// record may never be "caught up".
	Lag time.Duration
	// Timeout is the consistency_timeout that ran out.
	Timeout time.Duration
}

// Error describes how far the vector was behind the record, without entity keys or values.
func (e *InconsistentError) Error() string {
	if e.Missing > 0 {
		return fmt.Sprintf("enrich: feature vector still has %d features of feature view %q without an effective time (not materialised) for record at feature_timestamp %s after %d attempts in %s",
			e.Missing, e.FeatureView, e.FeatureTimestamp.Format(time.RFC3339Nano), e.Attempts, e.Timeout)
	}
	return fmt.Sprintf("enrich: feature vector still behind record of feature view %q (feature_timestamp %s) by %s after %d attempts in %s",
		e.FeatureView, e.FeatureTimestamp.Format(time.RFC3339Nano), e.Lag, e.Attempts, e.Timeout)
}

// IsRetriable reports whether a later delivery attempt of the same event may succeed after Enrich
// failed with err: true for an *InconsistentError and a retriable *StoreError, false for every
// other error — a non-retriable *StoreError, ErrInvalidRequest, a cancelled context — and nil.
func IsRetriable(err error) bool {
	if _, ok := errors.AsType[*InconsistentError](err); ok {
		return true
	}
	if sErr, ok := errors.AsType[*StoreError](err); ok {
		return sErr.Retriable
	}
	return false
}

// isRetriable reports whether a feature-store error of either backend says the same call may
// succeed later.
func isRetriable(err error) bool {
	return tecton.IsRetriable(err) || feast.IsRetriable(err)
}

// retryAfterOf returns the Retry-After a feature store of either backend asked for, or 0.
func retryAfterOf(err error) time.Duration {
	if apiErr, ok := errors.AsType[*tecton.APIError](err); ok {
		return apiErr.RetryAfter
	}
	if apiErr, ok := errors.AsType[*feast.APIError](err); ok {
		return apiErr.RetryAfter
	}
	return 0
}

// isAuthError reports whether a feature store refused the gateway's credentials: a 401 or 403
// from either backend. Both mean the key or token the operator configured is wrong, expired
// or lacks a grant.
func isAuthError(err error) bool {
	status := 0
	if apiErr, ok := errors.AsType[*tecton.APIError](err); ok {
		status = apiErr.StatusCode
	} else if apiErr, ok := errors.AsType[*feast.APIError](err); ok {
		status = apiErr.StatusCode
	}
	return status == http.StatusUnauthorized || status == http.StatusForbidden
}
