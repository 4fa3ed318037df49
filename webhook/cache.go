package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"hash"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
)

// maxCached bounds each of a Sender's caches, in entries. Past it a cache is
// emptied and fills again with what is in use: a gateway delivering to more
// URLs (or secrets) than this at once pays a parse (or a keying) per miss,
// as it did before the caches, and no more memory than the bound.
const maxCached = 8192

// boundedMap is a concurrent map of at most about maxCached entries, for
// values that are cheap to make again: a store past the bound empties it.
// The count is approximate under concurrent stores, the bound with it.
type boundedMap[V any] struct {
	m sync.Map // string → V
	n atomic.Int64
}

func (b *boundedMap[V]) load(key string) (V, bool) {
	v, ok := b.m.Load(key)
	if !ok {
		var zero V
		return zero, false
	}
	return v.(V), true
}

// loadOrStore returns key's value, storing v first when it has none.
func (b *boundedMap[V]) loadOrStore(key string, v V) V {
	if b.n.Add(1) > maxCached {
		b.m.Clear()
		b.n.Store(1)
	}
	got, _ := b.m.LoadOrStore(key, v)
	return got.(V)
}

// urlCache holds the webhook URLs a Sender's guard accepted, parsed, so an
// attempt parses its URL neither for the check nor for the request. It is
// keyed by the raw URL: the guard's verdict on a URL depends on nothing else
// (it resolves no name; the resolved address is still checked at every dial).
// Refused URLs are not kept.
type urlCache struct {
	m boundedMap[*url.URL] // never modified once stored
}

// check returns raw parsed, the way http.NewRequest would set it (an empty
// port dropped), or the guard's error.
func (c *urlCache) check(g *Guard, raw string) (*url.URL, error) {
	if u, ok := c.m.load(raw); ok {
		return u, nil
	}
	u, err := g.checkedURL(raw)
	if err != nil {
		return nil, err
	}
	if i := strings.LastIndexByte(u.Host, ':'); i >= 0 && i > strings.LastIndexByte(u.Host, ']') {
		u.Host = strings.TrimSuffix(u.Host, ":")
	}
	return c.m.loadOrStore(raw, u), nil
}

// macCache keeps, per secret, a pool of HMAC-SHA256 states keyed with it.
// hmac.New hashes the key into its inner and outer pads; keying a state per
// delivery was a tenth of a delivery's allocations. Reset takes a pooled
// state back to just keyed.
type macCache struct {
	m boundedMap[*sync.Pool] // secret key → pool of hash.Hash
}

// get returns a state keyed with key, and the pool to give it back to with
// put. A nil cache keys a new state every time (and put drops it).
func (c *macCache) get(key string) (hash.Hash, *sync.Pool) {
	if c == nil {
		return hmac.New(sha256.New, []byte(key)), nil
	}
	pool, ok := c.m.load(key)
	if !ok {
		pool = c.m.loadOrStore(key, &sync.Pool{New: func() any { return hmac.New(sha256.New, []byte(key)) }})
	}
	return pool.Get().(hash.Hash), pool
}

// put gives h, used, back to pool (nil: h is dropped).
func (c *macCache) put(pool *sync.Pool, h hash.Hash) {
	if pool == nil {
		return
	}
	h.Reset()
	pool.Put(h)
}
