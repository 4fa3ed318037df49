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

// urlCache holds the webhook URLs a Sender's guard accepted, parsed, so an
// attempt parses its URL neither for the check nor for the request. It is
// keyed by the raw URL: the guard's verdict on a URL depends on nothing else
// (it resolves no name; the resolved address is still checked at every dial).
// Refused URLs are not kept.
type urlCache struct {
	m sync.Map // raw URL → *url.URL, never modified once stored
	n atomic.Int64
}

// check returns raw parsed, the way http.NewRequest would set it (an empty
// port dropped), or the guard's error.
func (c *urlCache) check(g *Guard, raw string) (*url.URL, error) {
	if u, ok := c.m.Load(raw); ok {
		return u.(*url.URL), nil
	}
	u, err := g.checkedURL(raw)
	if err != nil {
		return nil, err
	}
	if i := strings.LastIndexByte(u.Host, ':'); i >= 0 && i > strings.LastIndexByte(u.Host, ']') {
		u.Host = strings.TrimSuffix(u.Host, ":")
	}
	if c.n.Add(1) > maxCached {
		c.m.Clear()
		c.n.Store(1)
	}
	c.m.Store(raw, u)
	return u, nil
}

// macCache keeps, per secret, a pool of HMAC-SHA256 states keyed with it.
// hmac.New hashes the key into its inner and outer pads; keying a state per
// delivery was a tenth of a delivery's allocations. Reset takes a pooled
// state back to just keyed.
type macCache struct {
	m sync.Map // secret key → *sync.Pool of hash.Hash
	n atomic.Int64
}

// mac returns a state keyed with key and the function that gives it back.
// A nil cache keys a new state every time.
func (c *macCache) mac(key string) (hash.Hash, func()) {
	if c == nil {
		return hmac.New(sha256.New, []byte(key)), func() {}
	}
	p, ok := c.m.Load(key)
	if !ok {
		if c.n.Add(1) > maxCached {
			c.m.Clear()
			c.n.Store(1)
		}
		p, _ = c.m.LoadOrStore(key, &sync.Pool{New: func() any { return hmac.New(sha256.New, []byte(key)) }})
	}
	pool := p.(*sync.Pool)
	h := pool.Get().(hash.Hash)
	return h, func() {
		h.Reset()
		pool.Put(h)
	}
}
