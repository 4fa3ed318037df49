package server_test

// The security suite of issue 11: every REST route with every kind of bad
// key, the SSRF address table through the API, redirects, and the
// subscription limit under concurrent creates. (The gRPC side of the key
// checks is TestEveryRPCNeedsAKeyAndATenant; the 10,000 test events,
// TestTestEventsRespectRateAndInFlight; the dial-time guard's own table,
// webhook's TestCheckAddr*/TestCheckURL/TestDialContext.)

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/outflow-dev/outflow/proto/openapi"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/server"
)

// TestEveryRESTRouteRefusesBadKeys walks every operation of the served
// OpenAPI document with no key, malformed Authorization headers, an unknown
// key and a revoked one (all 401, whatever the body), and with another
// tenant's key on tenant A's subscription (404, never 403: another
// tenant's id is as unknown as a made-up one).
func TestEveryRESTRouteRefusesBadKeys(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{})
	subID := b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions", b.keyA, webhookSub("a"))["id"].(string)
	revoked := b.revokedKey(t)

	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openapi.JSON, &doc); err != nil {
		t.Fatal(err)
	}
	badAuth := []struct{ name, header string }{
		{"no key", ""},
		{"empty bearer", "Bearer"},
		{"bearer of spaces", "Bearer    "},
		{"basic auth", "Basic dXNlcjpwYXNz"},
		{"key without a scheme", "ofk_abc"},
		{"token scheme", "Token " + b.keyA},
		{"unknown key", "Bearer ofk_unknown"},
		{"not our key format", "Bearer abc"},
		{"revoked key", "Bearer " + revoked},
		{"key with a trailing fragment", "Bearer " + b.keyA + "x"},
	}
	param := regexp.MustCompile(`\{[^}]+\}`)
	var ops []string
	for path, methods := range doc.Paths {
		for method := range methods {
			ops = append(ops, strings.ToUpper(method)+" "+path)
		}
	}
	sort.Strings(ops)
	if len(ops) < 13 {
		t.Fatalf("the document has %d operations", len(ops))
	}
	for _, op := range ops {
		method, path, _ := strings.Cut(op, " ")
		concrete := param.ReplaceAllStringFunc(path, func(p string) string {
			switch p {
			case "{delivery_id}":
				return "dlv_aaaaaaaaaaaaaaaaaaaaaaaaaa"
			case "{replay_id}":
				return "rpl_aaaaaaaaaaaaaaaaaaaaaaaaaa"
			}
			return subID
		})
		for _, ba := range badAuth {
			for _, body := range []string{"{}", `{"not":"valid"`} {
				code, _ := rawRequest(t, b, method, concrete, ba.header, body)
				if code != http.StatusUnauthorized {
					t.Errorf("%s with %s, body %s = %d, want 401", op, ba.name, body, code)
				}
			}
		}
		if strings.Contains(path, "{") {
			if code, raw := rawRequest(t, b, method, concrete, "Bearer "+b.keyB, "{}"); code != http.StatusNotFound {
				t.Errorf("%s as tenant B on tenant A's subscription = %d %s, want 404", op, code, raw)
			}
		}
	}
	// Tenant A's subscription is untouched by all of it.
	got := b.restJSON(t, http.StatusOK, "GET", "/v1/subscriptions/"+subID, b.keyA, nil)
	if got["name"] != "a" || got["etag"] != "r1" {
		t.Errorf("tenant A's subscription changed: %v", got)
	}
}

func rawRequest(t *testing.T, b *bundle, method, path, auth, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, b.httpURL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf strings.Builder
	_, _ = fmt.Fprint(&buf, resp.Status)
	return resp.StatusCode, buf.String()
}

// ssrfURLs are webhook URLs a tenant must not be able to point the gateway
// at: loopback, private, link-local, metadata and reserved addresses in the
// forms resolvers and URL parsers disagree on, IDNA forms that map to them,
// and what is not https.
var ssrfURLs = []string{
	"https://127.0.0.1/", "https://127.1.2.3/", "https://127.0.0.1:8443/h",
	"https://[::1]/", "https://[0:0:0:0:0:0:0:1]/", "https://[::ffff:127.0.0.1]/", "https://[::ffff:7f00:1]/",
	"https://localhost/", "https://LOCALHOST./", "https://api.localhost/", "https://a.b.localhost:9000/",
	"https://0.0.0.0/", "https://[::]/", "https://0/",
	"https://10.0.0.1/", "https://172.16.0.1/", "https://172.31.255.255/", "https://192.168.1.1/",
	"https://100.64.0.1/", "https://[fc00::1]/", "https://[fd12:3456::1]/",
	"https://169.254.169.254/latest/meta-data/", "https://[fe80::1]/", "https://[fe80::1%25eth0]/",
	"https://[::ffff:169.254.169.254]/", "https://[fd00:ec2::254]/",
	"https://224.0.0.1/", "https://[ff02::1]/", "https://255.255.255.255/", "https://240.0.0.1/",
	"https://2130706433/", "https://0x7f000001/", "https://0x7f.1/", "https://0177.0.0.1/", "https://127.1/",
	"https://017700000001/", "https://1.2.3./",
	"https://127\u30020\u30020\u30021/", "https://169\uff0e254\uff0e169\uff0e254/", "https://10\uff610\uff610\uff611/",
	"https://\uff11\uff12\uff17.0.0.1/", "https://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/",
	"https://api\u3002localhost/", "https://2130706433\u3002/",
	"http://promo.example.com/", "ftp://promo.example.com/", "file:///etc/passwd", "gopher://127.0.0.1/",
	"https://user:pw@promo.example.com/", "//promo.example.com/h", "https:///h",
}

// TestSSRFAddressTable: every form is refused at create and at update with
// a violation of webhook.url, and leaves nothing stored or changed.
func TestSSRFAddressTable(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{})
	if len(ssrfURLs) < 48 {
		t.Fatalf("only %d forms", len(ssrfURLs))
	}
	created := b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions", b.keyA, webhookSub("public"))
	id := created["id"].(string)
	for _, u := range ssrfURLs {
		body := webhookWith(func(w map[string]any) { w["url"] = u })
		body["name"] = "blocked"
		code, raw := b.rest(t, "POST", "/v1/subscriptions", b.keyA, body)
		if code != http.StatusBadRequest || !hasViolation(t, raw, "subscription.webhook.url") {
			t.Errorf("create with %q = %d %s, want 400 naming subscription.webhook.url", u, code, raw)
		}
		code, raw = b.rest(t, "PATCH", "/v1/subscriptions/"+id+"?update_mask=webhook.url", b.keyA, map[string]any{"webhook": map[string]any{"url": u}})
		if code != http.StatusBadRequest || !hasViolation(t, raw, "subscription.webhook.url") {
			t.Errorf("update to %q = %d %s, want 400 naming subscription.webhook.url", u, code, raw)
		}
	}
	if n := b.countSubscriptions(t); n != 1 {
		t.Errorf("%d subscriptions stored, want only the public one", n)
	}
	got := b.restJSON(t, http.StatusOK, "GET", "/v1/subscriptions/"+id, b.keyA, nil)
	if got["etag"] != created["etag"] {
		t.Errorf("refused updates changed the subscription: etag %v, was %v", got["etag"], created["etag"])
	}
}

// TestTestEventDoesNotFollowRedirects: a receiver that answers :test with
// a redirect (to a metadata address, or to another loopback server) does not
// get the gateway to follow it; the answer reports the 3xx.
func TestTestEventDoesNotFollowRedirects(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{AllowInsecureURLs: true, AllowCIDRs: mustPrefixes(t, "127.0.0.0/8")})
	var redirected atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { redirected.Add(1) }))
	defer target.Close()
	for _, location := range []string{"http://169.254.169.254/latest/meta-data/", target.URL + "/internal", "http://127\u30020\u30020\u30021:1/"} {
		for _, code := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
			receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, location, code)
			}))
			name := fmt.Sprintf("redirect %d %d", code, len(location))
			sub := webhookWith(func(w map[string]any) { w["url"] = receiver.URL + "/hook" })
			sub["name"] = name
			id := b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions", b.keyA, sub)["id"].(string)
			resp, err := b.subs.SendTestEvent(as(b.keyA), &outflowv1.SendTestEventRequest{Id: id})
			receiver.Close()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if resp.GetStatusCode() != int32(code) || !strings.Contains(resp.GetError(), "redirect") {
				t.Errorf("%s to %s: answered %d %q, want %d and a redirect error", name, location, resp.GetStatusCode(), resp.GetError(), code)
			}
		}
	}
	if n := redirected.Load(); n != 0 {
		t.Errorf("the redirect target got %d requests", n)
	}
}

// TestConcurrentCreatesAtTheLimit: 120 creates race, over REST and gRPC,
// for a tenant allowed 25 subscriptions: exactly 25 succeed, the rest are
// RESOURCE_EXHAUSTED / 429, and another tenant is not affected.
func TestConcurrentCreatesAtTheLimit(t *testing.T) {
	t.Parallel()
	const limit, creates = 25, 120
	b := setup(t, server.Config{MaxSubscriptionsPerTenant: limit})
	var ok, refused atomic.Int32
	var wg sync.WaitGroup
	for i := range creates {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("racer %03d", i)
			if i%2 == 0 {
				code, raw := b.rest(t, "POST", "/v1/subscriptions", b.keyA, webhookSub(name))
				switch code {
				case http.StatusOK:
					ok.Add(1)
				case http.StatusTooManyRequests:
					refused.Add(1)
				default:
					t.Errorf("REST create: %d %s", code, raw)
				}
				return
			}
			_, err := b.subs.CreateSubscription(as(b.keyA), &outflowv1.CreateSubscriptionRequest{Subscription: &outflowv1.Subscription{
				Name: name, FeatureViewNames: []string{"fv"},
				Target: &outflowv1.Subscription_Stream{Stream: &outflowv1.StreamTarget{}},
			}})
			switch status.Code(err) {
			case codes.OK:
				ok.Add(1)
			case codes.ResourceExhausted:
				refused.Add(1)
			default:
				t.Errorf("gRPC create: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != limit || refused.Load() != creates-limit {
		t.Errorf("%d created and %d refused, want %d and %d", ok.Load(), refused.Load(), limit, creates-limit)
	}
	if n := b.countSubscriptions(t); n != limit {
		t.Errorf("%d subscriptions stored, want the limit %d", n, limit)
	}
	b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions", b.keyB, webhookSub("tenant b's"))
}
