package webhook

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestURLCache(t *testing.T) {
	t.Parallel()
	g, err := NewGuard(GuardConfig{AllowInsecure: true})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		raw      string
		wantHost string // "" when refused
	}{
		{"https://receiver.example/hook?x=1", "receiver.example"},
		{"https://receiver.example:8443/hook", "receiver.example:8443"},
		{"https://receiver.example:/hook", "receiver.example"}, // as http.NewRequest drops an empty port
		{"https://[2606:4700::1111]:/hook", "[2606:4700::1111]"},
		{"https://[2606:4700::1111]/hook", "[2606:4700::1111]"},
		{"ftp://receiver.example/hook", ""},
		{"https://10.0.0.1/hook", ""},
	}
	var c urlCache
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			for range 2 { // the second is answered from the cache
				u, err := c.check(g, tt.raw)
				if tt.wantHost == "" {
					if want := g.CheckURL(tt.raw); err == nil || want == nil || err.Error() != want.Error() {
						t.Fatalf("check = %v, %v; want CheckURL's error %v", u, err, g.CheckURL(tt.raw))
					}
					continue
				}
				if err != nil || u.Host != tt.wantHost {
					t.Fatalf("check = %v, %v; want host %q", u, err, tt.wantHost)
				}
			}
			_, cached := c.m.load(tt.raw)
			if cached != (tt.wantHost != "") {
				t.Fatalf("cached = %v; only accepted URLs are kept", cached)
			}
		})
	}
}

func TestURLCacheIsBounded(t *testing.T) {
	t.Parallel()
	g, err := NewGuard(GuardConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var c urlCache
	first, err := c.check(g, "https://r0.example/")
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= maxCached; i++ {
		if _, err := c.check(g, fmt.Sprintf("https://r%d.example/", i)); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	c.m.m.Range(func(any, any) bool { n++; return true })
	if n > maxCached {
		t.Fatalf("%d entries after %d URLs, want at most %d", n, maxCached+1, maxCached)
	}
	again, err := c.check(g, "https://r0.example/")
	if err != nil || again.Host != first.Host {
		t.Fatalf("after emptying: %v, %v", again, err)
	}
}

// TestSignWithPooledMACs checks that pooled HMAC states sign as fresh ones
// do, call after call (a state not reset would chain the previous
// message into the next signature), from many goroutines at once.
func TestSignWithPooledMACs(t *testing.T) {
	t.Parallel()
	a, err := ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseSecret("whsec_" + "c2Vjb25kLXNlY3JldC1rZXktZm9yLXJvdGF0aW9u")
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Unix(1_700_000_000, 0)
	var macs macCache
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				secrets := [][]Secret{{a}, {b}, {a, b}, {b, {}, a}}[i%4]
				id := fmt.Sprintf("evt_%d_%d", g, i)
				body := fmt.Appendf(nil, `{"n":%d}`, i)
				if got, want := sign(&macs, secrets, id, ts, body), Sign(secrets, id, ts, body); got != want {
					t.Errorf("pooled signature %q, want %q", got, want)
					return
				}
			}
		})
	}
	wg.Wait()
}
