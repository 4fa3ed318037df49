package match

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/outflow-dev/outflow/filter"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/record"
	"github.com/outflow-dev/outflow/store"
	"github.com/outflow-dev/outflow/webhook"
)

// Subscription is a stored subscription prepared for matching: its entity
// filter parsed into sets and its CEL filter compiled, once, when the
// subscription is loaded, so that matching a record costs map lookups and at
// most one filter evaluation. Its webhook secrets are decoded then too, so
// that signing a delivery decodes nothing (SigningSecrets).
//
// Make Subscriptions with Compile, which fills in state that matching relies
// on beyond the exported fields.
//
// A Subscription is shared by every goroutine that reads the Index holding
// it, so it is immutable: no field, and nothing a field points to (Proto and
// the EntityFilter maps included), may be changed. A change to the stored
// subscription produces a new Subscription in a new Index.
type Subscription struct {
	// ID is the subscription's id, "sub_…".
	ID string
	// TenantID owns the subscription.
	TenantID string
	// Revision is the stored revision this value was built from; it
	// increases with every change, and the Matcher never replaces a
	// Subscription with one of a lower Revision.
	Revision int64
	// State is Proto.State, copied out because the dispatcher reads it per
	// record: Index.Match returns ACTIVE and PAUSED subscriptions and the
	// caller decides what PAUSED means for the event (SPEC §3: "events kept
	// for later").
	State outflowv1.Subscription_State
	// Proto is the subscription's configuration as the API shows it
	// (without secret and etag).
	Proto *outflowv1.Subscription
	// Secrets sign the subscription's webhook requests. Never log them.
	Secrets store.Secrets
	// FeatureViews are the feature view names the subscription listens to,
	// sorted and without duplicates.
	FeatureViews []string
	// EntityFilter maps each entity key the subscription filters on to the
	// set of values it accepts. A record passes when every key is among its
	// entity keys with one of the accepted values. Nil when the subscription
	// has no entity filter.
	EntityFilter map[string]map[string]struct{}
	// Filter is the compiled CEL filter, or nil when the subscription has
	// none (or when it failed to compile; see Err).
	Filter *filter.Filter
	// entity is EntityFilter as a slice, which the hot path ranges over
	// several times faster than a map.
	entity []entityCondition
	// signing is Secrets decoded once, for SigningSecrets.
	signing []signingSecret
	// Err is non-nil when the stored CEL filter does not compile. The API
	// validates filters, so this means the filter language changed under a
	// stored subscription; such a subscription is kept out of matching (it
	// would otherwise receive every record of its feature views) but can
	// still be read with Index.Get, so queued deliveries for it can finish.
	Err error
}

// signingSecret is one of Secrets, decoded; err says why it could not be.
type signingSecret struct {
	secret webhook.Secret
	err    error
	// prev is the stored previous secret, nil for the current one.
	prev *store.PreviousSecret
}

// entityCondition is one key of an entity filter and its accepted values.
type entityCondition struct {
	key    string
	values map[string]struct{}
}

// Compile prepares a stored subscription for matching, compiling its CEL
// filter with env. It always returns a Subscription; when the filter does not
// compile, the Subscription's Err says why and Matchable reports false. sub
// and its Proto become owned by the result and must not be changed afterwards.
func Compile(env *filter.Env, sub *store.Subscription) *Subscription {
	p := sub.Proto
	s := &Subscription{
		ID:           p.GetId(),
		TenantID:     sub.TenantID,
		Revision:     sub.Revision,
		State:        p.GetState(),
		Proto:        p,
		Secrets:      sub.Secrets,
		FeatureViews: slices.Compact(slices.Sorted(slices.Values(p.GetFeatureViewNames()))),
	}
	s.signing = decodeSecrets(sub.Secrets)
	if ef := p.GetEntityFilter(); len(ef) > 0 {
		s.EntityFilter = make(map[string]map[string]struct{}, len(ef))
		for key, vals := range ef {
			set := make(map[string]struct{}, len(vals.GetValues()))
			for _, v := range vals.GetValues() {
				set[v] = struct{}{}
			}
			s.EntityFilter[key] = set
			s.entity = append(s.entity, entityCondition{key: key, values: set})
		}
		// A fixed order keeps matching deterministic.
		slices.SortFunc(s.entity, func(a, b entityCondition) int { return strings.Compare(a.key, b.key) })
	}
	if expr := p.GetFilter(); expr != "" {
		f, err := env.Compile(expr)
		if err != nil {
			s.Err = fmt.Errorf("compiling the filter of subscription %s: %w", s.ID, err)
		} else {
			s.Filter = f
		}
	}
	return s
}

// decodeSecrets decodes the current secret and every previous one.
func decodeSecrets(ss store.Secrets) []signingSecret {
	out := make([]signingSecret, 0, 1+len(ss.Previous))
	sec, err := webhook.ParseSecret(ss.Current)
	out = append(out, signingSecret{secret: sec, err: err})
	for i := range ss.Previous {
		p := &ss.Previous[i]
		if p.Secret == "" {
			continue // never signs
		}
		sec, err := webhook.ParseSecret(p.Secret)
		out = append(out, signingSecret{secret: sec, err: err, prev: p})
	}
	return out
}

// SigningSecrets appends to buf the secrets that sign a webhook request sent
// at now, decoded when the subscription was compiled rather than per
// request: the current one, then the previous ones whose overlap lasts (as
// store.Secrets.Active lists them). A stored secret that does not decode is
// an error only while it would sign.
func (s *Subscription) SigningSecrets(buf []webhook.Secret, now time.Time) ([]webhook.Secret, error) {
	signing := s.signing
	if signing == nil { // not made by Compile: decode now rather than sign with nothing
		signing = decodeSecrets(s.Secrets)
	}
	for _, k := range signing {
		if k.prev != nil && !k.prev.Signs(now) {
			continue
		}
		if k.err != nil {
			return nil, k.err
		}
		buf = append(buf, k.secret)
	}
	return buf, nil
}

// Matchable reports whether the subscription takes part in matching: it is
// ACTIVE or PAUSED and its filter compiled. DISABLED subscriptions (and any
// state this version does not know) receive nothing.
func (s *Subscription) Matchable() bool {
	if s.Err != nil {
		return false
	}
	return s.State == outflowv1.Subscription_ACTIVE || s.State == outflowv1.Subscription_PAUSED
}

// filtered reports whether the subscription may reject a record of one of its
// feature views.
func (s *Subscription) filtered() bool {
	return len(s.entity) > 0 || s.Filter != nil
}

// MatchEntity reports whether entity keys pass the subscription's entity
// filter: every filtered key present with one of its accepted values. A
// subscription without an entity filter passes every record.
func (s *Subscription) MatchEntity(keys map[string]string) bool {
	for _, c := range s.entity {
		v, ok := keys[c.key]
		if !ok {
			return false
		}
		if _, ok := c.values[v]; !ok {
			return false
		}
	}
	return true
}

// Matches reports whether rec passes the subscription's feature views,
// entity filter and CEL filter, ignoring its state. It is for matching one
// subscription, as a replay does; the dispatcher uses Index.Match, which
// converts the record for CEL once for all subscriptions. An error from the
// CEL evaluation comes with false.
func (s *Subscription) Matches(rec *record.Record) (bool, error) {
	if _, found := slices.BinarySearch(s.FeatureViews, rec.FeatureViewName); !found || s.Err != nil {
		return false, nil
	}
	if !s.MatchEntity(rec.EntityKeys) {
		return false, nil
	}
	if s.Filter == nil {
		return true, nil
	}
	ok, err := s.Filter.Match(rec.Proto())
	if err != nil {
		return false, fmt.Errorf("matching subscription %s: %w", s.ID, err)
	}
	return ok, nil
}

// sameAs reports whether s was built from exactly the stored subscription
// sub, so the Matcher can keep s (and skip recompiling its filter, and
// logging a compile failure again) on a resync that finds nothing new.
// Equal revisions alone are not enough: an operator's SQL may change a row
// without bumping its revision.
func (s *Subscription) sameAs(sub *store.Subscription) bool {
	return s.Revision == sub.Revision &&
		s.TenantID == sub.TenantID &&
		s.Secrets.Equal(sub.Secrets) &&
		proto.Equal(s.Proto, sub.Proto)
}
