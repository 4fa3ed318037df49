package server

import (
	"math"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outflow-dev/outflow/filter"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/webhook"
)

// Defaults filled into a subscription on create and update (SPEC §3, §5).
const (
	DefaultConsistencyTimeout = 10 * time.Second
	DefaultWebhookTimeout     = 10 * time.Second
	DefaultMaxInFlight        = 16
	// DefaultMaxAttempts covers SPEC §5's schedule: immediately, 5s, 5m,
	// 30m, 2h, 5h, 10h, 10h.
	DefaultMaxAttempts = 8
	// DefaultMaxAge lets the whole default schedule (about 27.6h) run.
	DefaultMaxAge = 28 * time.Hour
)

// Bounds on every subscription field (SPEC §7: every input is bounded).
const (
	maxNameLen           = 200
	maxIdentifierLen     = 256
	maxFeatureViews      = 100
	maxEntityFilterKeys  = 32
	maxEntityValues      = 1000
	maxEntityValueLen    = 1024
	maxJoinKeys          = 32
	maxHeadersTotalBytes = 16 << 10
	maxWebhookTimeout    = 60 * time.Second
	maxConsistencyWait   = 5 * time.Minute
	maxMaxInFlight       = 256
	maxRateLimit         = 100_000
	maxMaxAttempts       = 50
	maxMaxAge            = 7 * 24 * time.Hour
	maxIDLen             = 64
)

// identifier is the shape of feature view, workspace, feature service and
// entity/join key names: what Tecton and Feast accept, and no whitespace.
var identifier = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.:-]*$`)

// validator checks subscriptions against the API's rules; it holds what
// those rules need from the server's configuration.
type validator struct {
	filters *filter.Env
	guard   *webhook.Guard
}

// applyDefaults fills the unset optional fields of sub. Zero means unset for
// counts and durations; negative values are left for validate to refuse.
func applyDefaults(sub *outflowv1.Subscription) {
	if sub.State == outflowv1.Subscription_STATE_UNSPECIFIED {
		sub.State = outflowv1.Subscription_ACTIVE
	}
	if e := sub.Enrichment; e != nil {
		if e.Consistency == outflowv1.Enrichment_CONSISTENCY_UNSPECIFIED {
			e.Consistency = outflowv1.Enrichment_STRICT
		}
		if e.Backend == outflowv1.Enrichment_BACKEND_UNSPECIFIED {
			e.Backend = outflowv1.Enrichment_TECTON
		}
		if isZeroDuration(e.ConsistencyTimeout) {
			e.ConsistencyTimeout = durationpb.New(DefaultConsistencyTimeout)
		}
	}
	if w := sub.GetWebhook(); w != nil {
		if isZeroDuration(w.Timeout) {
			w.Timeout = durationpb.New(DefaultWebhookTimeout)
		}
		if w.MaxInFlight == 0 {
			w.MaxInFlight = DefaultMaxInFlight
		}
	}
	if sub.RetryPolicy == nil {
		sub.RetryPolicy = &outflowv1.RetryPolicy{}
	}
	if sub.RetryPolicy.MaxAttempts == 0 {
		sub.RetryPolicy.MaxAttempts = DefaultMaxAttempts
	}
	if isZeroDuration(sub.RetryPolicy.MaxAge) {
		sub.RetryPolicy.MaxAge = durationpb.New(DefaultMaxAge)
	}
}

func isZeroDuration(d *durationpb.Duration) bool {
	return d == nil || (d.Seconds == 0 && d.Nanos == 0)
}

// validate adds a violation for every bad field of sub, named from prefix
// (for example "subscription.webhook.url").
func (v *validator) validate(sub *outflowv1.Subscription, prefix string, out *violations) {
	p := func(field string) string { return prefix + field }

	switch {
	case sub.Name == "":
		out.add(p("name"), "required")
	case !utf8.ValidString(sub.Name):
		out.add(p("name"), "must be valid UTF-8")
	case utf8.RuneCountInString(sub.Name) > maxNameLen:
		out.add(p("name"), "at most %d characters", maxNameLen)
	case strings.IndexFunc(sub.Name, unicode.IsControl) >= 0:
		out.add(p("name"), "must not contain control characters")
	case strings.TrimFunc(sub.Name, unicode.IsSpace) == "":
		out.add(p("name"), "must not be only white space")
	case strings.IndexFunc(sub.Name, invisible) >= 0:
		out.add(p("name"), "must not contain invisible formatting characters (bidi overrides, zero-width characters)")
	}

	switch n := len(sub.FeatureViewNames); {
	case n == 0:
		out.add(p("feature_view_names"), "at least one feature view is required")
	case n > maxFeatureViews:
		out.add(p("feature_view_names"), "at most %d feature views, got %d", maxFeatureViews, n)
	default:
		seen := make(map[string]bool, n)
		for _, name := range sub.FeatureViewNames {
			if msg := checkIdentifier(name); msg != "" {
				out.add(p("feature_view_names"), "%q %s", clip(name), msg)
			} else if seen[name] {
				out.add(p("feature_view_names"), "%q is listed twice", name)
			}
			seen[name] = true
		}
	}

	v.validateEntityFilter(sub.EntityFilter, p("entity_filter"), out)

	if sub.Filter != "" {
		if _, err := v.filters.Compile(sub.Filter); err != nil {
			out.add(p("filter"), "%s", strings.TrimPrefix(err.Error(), filter.ErrInvalid.Error()+": "))
		}
	}

	if e := sub.Enrichment; e != nil {
		validateEnrichment(e, p("enrichment."), out)
	}

	switch t := sub.Target.(type) {
	case nil:
		out.add(p("target"), "exactly one of webhook or stream is required")
	case *outflowv1.Subscription_Webhook:
		if t.Webhook == nil {
			out.add(p("webhook"), "required")
		} else {
			v.validateWebhook(t.Webhook, p("webhook."), out)
		}
	case *outflowv1.Subscription_Stream:
		if t.Stream == nil {
			out.add(p("stream"), "required")
		}
	}

	if r := sub.RetryPolicy; r != nil {
		if r.MaxAttempts < 1 || r.MaxAttempts > maxMaxAttempts {
			out.add(p("retry_policy.max_attempts"), "must be between 1 and %d, got %d", maxMaxAttempts, r.MaxAttempts)
		}
		checkDuration(r.MaxAge, time.Second, maxMaxAge, p("retry_policy.max_age"), out)
	}

	if _, ok := outflowv1.Subscription_State_name[int32(sub.State)]; !ok || sub.State == outflowv1.Subscription_STATE_UNSPECIFIED {
		out.add(p("state"), "unknown state %d; use ACTIVE, PAUSED or DISABLED", sub.State)
	}
}

func (v *validator) validateEntityFilter(ef map[string]*outflowv1.EntityValues, field string, out *violations) {
	if len(ef) > maxEntityFilterKeys {
		out.add(field, "at most %d entity keys, got %d", maxEntityFilterKeys, len(ef))
		return
	}
	for key, vals := range ef {
		if msg := checkIdentifier(key); msg != "" {
			out.add(field, "entity key %q %s", clip(key), msg)
			continue
		}
		f := field + "." + key
		switch n := len(vals.GetValues()); {
		case n == 0:
			out.add(f, "at least one value is required")
		case n > maxEntityValues:
			out.add(f, "at most %d values, got %d", maxEntityValues, n)
		default:
			for _, val := range vals.GetValues() {
				if val == "" || len(val) > maxEntityValueLen || !utf8.ValidString(val) {
					out.add(f, "values must be non-empty UTF-8 of at most %d bytes", maxEntityValueLen)
					break
				}
			}
		}
	}
}

func validateEnrichment(e *outflowv1.Enrichment, prefix string, out *violations) {
	if _, ok := outflowv1.Enrichment_Backend_name[int32(e.Backend)]; !ok || e.Backend == outflowv1.Enrichment_BACKEND_UNSPECIFIED {
		out.add(prefix+"backend", "unknown backend %d; use TECTON or FEAST", e.Backend)
	}
	for field, name := range map[string]string{"workspace_name": e.WorkspaceName, "feature_service_name": e.FeatureServiceName} {
		switch {
		case name == "" && field == "workspace_name" && e.Backend == outflowv1.Enrichment_FEAST:
			// One Feast feature server serves one project: there is no workspace to name.
		case name == "":
			out.add(prefix+field, "required")
		default:
			if msg := checkIdentifier(name); msg != "" {
				out.add(prefix+field, "%s", msg)
			}
		}
	}
	if len(e.JoinKeys) > maxJoinKeys {
		out.add(prefix+"join_keys", "at most %d entries, got %d", maxJoinKeys, len(e.JoinKeys))
	} else {
		for from, to := range e.JoinKeys {
			if checkIdentifier(from) != "" || checkIdentifier(to) != "" {
				out.add(prefix+"join_keys", "%q -> %q: entity and join key names must be identifiers of at most %d bytes", clip(from), clip(to), maxIdentifierLen)
			}
		}
	}
	if _, ok := outflowv1.Enrichment_Consistency_name[int32(e.Consistency)]; !ok || e.Consistency == outflowv1.Enrichment_CONSISTENCY_UNSPECIFIED {
		out.add(prefix+"consistency", "unknown consistency %d; use STRICT, BEST_EFFORT or NONE", e.Consistency)
	}
	checkDuration(e.ConsistencyTimeout, time.Millisecond, maxConsistencyWait, prefix+"consistency_timeout", out)
}

func (v *validator) validateWebhook(w *outflowv1.WebhookTarget, prefix string, out *violations) {
	switch {
	case w.Url == "":
		out.add(prefix+"url", "required")
	default:
		// Host names are not resolved here: the guard checks the resolved
		// address again at dial time.
		if err := v.guard.CheckURL(w.Url); err != nil {
			out.add(prefix+"url", "%s", err)
		}
	}

	if len(w.Headers) > webhook.MaxHeaders {
		out.add(prefix+"headers", "at most %d headers, got %d", webhook.MaxHeaders, len(w.Headers))
	} else {
		total := 0
		for name, value := range w.Headers {
			total += len(name) + len(value)
			if err := webhook.ValidateHeader(name, value); err != nil {
				out.add(prefix+"headers", "%s", err)
			}
		}
		if total > maxHeadersTotalBytes {
			out.add(prefix+"headers", "at most %d bytes of names and values in all, got %d", maxHeadersTotalBytes, total)
		}
	}

	checkDuration(w.Timeout, time.Millisecond, maxWebhookTimeout, prefix+"timeout", out)
	if math.IsNaN(w.RateLimit) || w.RateLimit < 0 || w.RateLimit > maxRateLimit {
		out.add(prefix+"rate_limit", "must be between 0 (no limit) and %d events per second", maxRateLimit)
	}
	if w.MaxInFlight < 1 || w.MaxInFlight > maxMaxInFlight {
		out.add(prefix+"max_in_flight", "must be between 1 and %d, got %d", maxMaxInFlight, w.MaxInFlight)
	}
}

func checkDuration(d *durationpb.Duration, minimum, maximum time.Duration, field string, out *violations) {
	if d == nil {
		return
	}
	if err := d.CheckValid(); err != nil {
		out.add(field, "not a valid duration")
		return
	}
	if got := d.AsDuration(); got < minimum || got > maximum {
		out.add(field, "must be between %s and %s, got %s", minimum, maximum, got)
	}
}

// checkIdentifier returns what is wrong with name as an identifier, or "".
func checkIdentifier(name string) string {
	switch {
	case name == "":
		return "must not be empty"
	case len(name) > maxIdentifierLen:
		return "is longer than 256 bytes"
	case !identifier.MatchString(name):
		return "may hold only letters, digits and _ . : -"
	}
	return ""
}

// invisible reports format characters (Unicode category Cf: bidi
// embeddings, overrides and isolates, zero-width spaces and joiners, the
// byte order mark, …). In a name they make two labels look alike or text
// display in an order other than the one stored, which is how spoofed names
// are built; a human label needs none of them.
func invisible(r rune) bool { return unicode.Is(unicode.Cf, r) }

// idKinds names the resources behind id prefixes, for NOT_FOUND messages.
var idKinds = map[string]string{"sub_": "subscription", "dlv_": "delivery", "rpl_": "replay"}

// checkID validates a resource id from a request. An empty id is a missing
// argument (INVALID_ARGUMENT); a malformed one is NOT_FOUND, like any other
// id the server never issued: ids are opaque to clients (SPEC §3).
func checkID(field, id, prefix string) error {
	if id == "" {
		return invalidField(field, "required")
	}
	if len(id) > maxIDLen || !strings.HasPrefix(id, prefix) || !identifier.MatchString(id) {
		return status.Errorf(codes.NotFound, "%s %q not found", idKinds[prefix], clip(id))
	}
	return nil
}

// clip shortens user input quoted back in an error message.
func clip(s string) string {
	const n = 64
	if len(s) <= n {
		return s
	}
	for i := n; i > 0; i-- {
		if utf8.RuneStart(s[i]) {
			return s[:i] + "…"
		}
	}
	return ""
}
