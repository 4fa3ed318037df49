package match

import (
	"cmp"
	"maps"
	"slices"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/record"
)

// Index is an immutable snapshot of the subscriptions, arranged for matching
// records: by feature view name first, so that the cost of matching a record
// depends on the subscriptions of its feature view and not on how many other
// subscriptions exist. An Index is safe for concurrent use and never changes;
// the Matcher publishes a new one for every change.
type Index struct {
	// views holds, per feature view name, the matchable subscriptions that
	// list it.
	views map[string]view
	// byID holds every loaded subscription, matchable or not.
	byID map[string]*Subscription
	// onFilterError, when not nil, hears about CEL evaluation errors.
	onFilterError func(subID string, err error)
	// toProto converts a record for CEL; tests count its calls.
	toProto func(*record.Record) *outflowv1.Record
	// webhooksOnly leaves stream subscriptions out of views.
	webhooksOnly bool
}

// view is one feature view's share of an Index.
type view struct {
	// subs are the matchable subscriptions of the view, sorted by ID, with
	// len == cap so that a caller's append to a slice Match returned copies
	// instead of writing into the index.
	subs []*Subscription
	// filtered is true when some of subs has an entity or CEL filter; when
	// it is false every record of the view matches all of subs.
	filtered bool
	// always are the subscriptions of subs without an entity filter (with a
	// CEL filter or not), sorted by ID: candidates for every record.
	always []*Subscription
	// byKey indexes the subscriptions with an entity filter by one key of
	// their filter (the first, in key order) and each accepted value of it,
	// so a record's candidates are found by a lookup of its own entity values
	// instead of a visit to every subscription. Sorted by key; each list is
	// sorted by ID.
	byKey []keyIndex
}

// keyIndex is one entity key's share of a view's index.
type keyIndex struct {
	key    string
	values map[string][]*Subscription
}

// IndexOptions tunes an Index. The zero value is ready to use.
type IndexOptions struct {
	// OnFilterError, when not nil, is called by Match for each subscription
	// whose CEL filter failed to evaluate on a record (such as a missing map
	// key; the record then does not match that subscription). It is called
	// on the dispatcher's hot path, from any goroutine, so it must be fast
	// and safe for concurrent use, like incrementing a counter. Default: the
	// errors are dropped.
	OnFilterError func(subID string, err error)
	// WebhooksOnly leaves stream subscriptions out of matching (Get still
	// returns them): the dispatcher delivers only webhooks, and each stream
	// client's own reader matches its subscription's records, so evaluating
	// a stream subscription's filter on every record here would cost CPU
	// whether or not a client is connected. Default: false, every
	// subscription matches.
	WebhooksOnly bool
}

// NewIndex builds an Index over subs. When subs holds one ID several times,
// the one of highest Revision is kept (the last such on a tie). Subscriptions
// that are not Matchable can be read with Get but never match.
func NewIndex(subs []*Subscription, opts IndexOptions) *Index {
	ix := &Index{
		views:         make(map[string]view),
		byID:          make(map[string]*Subscription, len(subs)),
		onFilterError: opts.OnFilterError,
		toProto:       (*record.Record).Proto,
		webhooksOnly:  opts.WebhooksOnly,
	}
	for _, s := range subs {
		if cur, ok := ix.byID[s.ID]; ok && cur.Revision > s.Revision {
			continue
		}
		ix.byID[s.ID] = s
	}
	byView := make(map[string][]*Subscription)
	for _, s := range ix.byID {
		if !ix.indexed(s) {
			continue
		}
		for _, name := range s.FeatureViews {
			byView[name] = append(byView[name], s)
		}
	}
	for name, subs := range byView {
		ix.views[name] = newView(subs)
	}
	return ix
}

// indexed reports whether s belongs in the views: it can match, and is not
// left out as a stream subscription.
func (ix *Index) indexed(s *Subscription) bool {
	return s.Matchable() && !(ix.webhooksOnly && s.Proto.GetStream() != nil)
}

// newView sorts subs by ID, records whether any of them filters, and
// indexes the entity-filtered ones by the values of their first entity key.
func newView(subs []*Subscription) view {
	slices.SortFunc(subs, func(a, b *Subscription) int { return cmp.Compare(a.ID, b.ID) })
	v := view{subs: slices.Clip(subs)}
	byKey := map[string]map[string][]*Subscription{}
	for _, s := range v.subs {
		if s.filtered() {
			v.filtered = true
		}
		if len(s.entity) == 0 {
			v.always = append(v.always, s)
			continue
		}
		c := s.entity[0]
		values := byKey[c.key]
		if values == nil {
			values = map[string][]*Subscription{}
			byKey[c.key] = values
		}
		for val := range c.values {
			values[val] = append(values[val], s) // subs is sorted, so each list is
		}
	}
	for _, key := range slices.Sorted(maps.Keys(byKey)) {
		v.byKey = append(v.byKey, keyIndex{key: key, values: byKey[key]})
	}
	return v
}

// Len returns how many subscriptions the index holds, those that cannot
// match included.
func (ix *Index) Len() int { return len(ix.byID) }

// Get returns the subscription with the given id whatever its state, or nil
// when the index does not hold it (deleted, or created after this snapshot).
func (ix *Index) Get(id string) *Subscription { return ix.byID[id] }

// Match returns the subscriptions rec matches: those that are ACTIVE or
// PAUSED, list rec.FeatureViewName, pass their entity filter (every listed
// key among rec.EntityKeys with one of its values) and whose CEL filter, if
// any, yields true. A CEL evaluation error counts as no match and is passed
// to IndexOptions.OnFilterError. DISABLED subscriptions never match.
//
// PAUSED subscriptions are returned because SPEC §3 keeps their events "for
// later": the caller checks State and parks those events instead of
// delivering them.
//
// The result is sorted by subscription ID, is nil when nothing matches, and
// may share memory with the index: it must not be modified (appending to it
// is safe).
//
// Match does not visit every subscription of the feature view: the
// candidates are the subscriptions without an entity filter and those whose
// entity filter accepts one of rec's entity values (a map lookup per entity
// key the view's filters use), so 10,000 subscriptions each filtering on its
// own entity cost what one does. Candidates have their entity filter checked
// in full before their CEL filter, and rec is converted to the protobuf
// message CEL reads at most once, only when a CEL filter has to run. When
// every subscription of the view matches, or none does, Match allocates
// nothing; otherwise it allocates the result once.
func (ix *Index) Match(rec *record.Record) []*Subscription {
	v := ix.views[rec.FeatureViewName]
	if !v.filtered {
		return v.subs
	}
	n := len(v.always)
	for _, k := range v.byKey {
		if val, ok := rec.EntityKeys[k.key]; ok {
			n += len(k.values[val])
		}
	}
	if n == len(v.subs) {
		return ix.matchAll(v, rec)
	}
	m := matching{ix: ix, rec: rec, max: n}
	for _, s := range v.always {
		m.check(s)
	}
	for _, k := range v.byKey {
		if val, ok := rec.EntityKeys[k.key]; ok {
			for _, s := range k.values[val] {
				m.check(s)
			}
		}
	}
	if len(v.byKey) > 0 && len(m.out) > 1 {
		slices.SortFunc(m.out, func(a, b *Subscription) int { return cmp.Compare(a.ID, b.ID) })
	}
	return m.out
}

// matching collects the result of one Match over candidates.
type matching struct {
	ix  *Index
	rec *record.Record
	pr  *outflowv1.Record // rec for CEL, converted once when first needed
	max int               // how many candidates there are: the result's capacity
	out []*Subscription
}

// ok reports whether s, a candidate, matches the record.
func (m *matching) ok(s *Subscription) bool {
	if !s.MatchEntity(m.rec.EntityKeys) {
		return false
	}
	if s.Filter == nil {
		return true
	}
	if m.pr == nil {
		m.pr = m.ix.toProto(m.rec)
	}
	ok, err := s.Filter.Match(m.pr)
	if err != nil && m.ix.onFilterError != nil {
		m.ix.onFilterError(s.ID, err)
	}
	return ok
}

func (m *matching) check(s *Subscription) {
	if !m.ok(s) {
		return
	}
	if m.out == nil {
		m.out = make([]*Subscription, 0, m.max)
	}
	m.out = append(m.out, s)
}

// matchAll is Match when every subscription of v is a candidate: it returns
// v.subs itself, without allocating, when all of them match.
func (ix *Index) matchAll(v view, rec *record.Record) []*Subscription {
	var (
		out []*Subscription
		// all is true while every candidate so far matched; out is only
		// built once one did not.
		all = true
		m   = matching{ix: ix, rec: rec}
	)
	for i, s := range v.subs {
		ok := m.ok(s)
		switch {
		case ok && !all:
			out = append(out, s)
		case !ok && all:
			all = false
			if i > 0 {
				out = append(make([]*Subscription, 0, len(v.subs)-1), v.subs[:i]...)
			}
		}
	}
	if all {
		return v.subs
	}
	return out
}

// with returns a copy of ix with changes applied: a Subscription replaces
// the one of its ID, unless that one has a higher Revision (a stale read
// never undoes a newer one), and a nil value removes the ID. Only the
// feature views the changed subscriptions leave or join are rebuilt; the
// rest of the new index shares the old one's slices. The two maps are
// copied, which is cheap next to the database read behind every change.
func (ix *Index) with(changes map[string]*Subscription) *Index {
	next := &Index{
		views:         maps.Clone(ix.views),
		byID:          maps.Clone(ix.byID),
		onFilterError: ix.onFilterError,
		toProto:       ix.toProto,
		webhooksOnly:  ix.webhooksOnly,
	}
	if next.byID == nil {
		next.byID = make(map[string]*Subscription, len(changes))
	}
	if next.views == nil {
		next.views = make(map[string]view)
	}
	touched := make(map[string]struct{})
	for id, s := range changes {
		old := ix.byID[id]
		if s != nil && old != nil && old.Revision > s.Revision {
			continue
		}
		if old == s {
			continue
		}
		if old != nil {
			for _, name := range old.FeatureViews {
				touched[name] = struct{}{}
			}
		}
		if s == nil {
			delete(next.byID, id)
			continue
		}
		next.byID[id] = s
		for _, name := range s.FeatureViews {
			touched[name] = struct{}{}
		}
	}
	for name := range touched {
		var subs []*Subscription
		for _, s := range ix.views[name].subs {
			if _, changed := changes[s.ID]; !changed || next.byID[s.ID] == s {
				subs = append(subs, s)
			}
		}
		for id := range changes {
			s := next.byID[id]
			if s != nil && s != ix.byID[id] && ix.indexed(s) {
				if _, found := slices.BinarySearch(s.FeatureViews, name); found {
					subs = append(subs, s)
				}
			}
		}
		if len(subs) == 0 {
			delete(next.views, name)
		} else {
			next.views[name] = newView(subs)
		}
	}
	return next
}
