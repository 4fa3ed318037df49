package server

import (
	"encoding/json"
	"net/http/httptest"
	"net/url"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// FuzzStreamEventsRequest: reading StreamEvents' query never panics; it
// either fails with INVALID_ARGUMENT naming the parameter, or yields the
// token as given and a shard only when one was asked for.
func FuzzStreamEventsRequest(f *testing.F) {
	for _, q := range []string{"", "resume_token=abc", "shard.index=1&shard.count=3", "shard.count=x", "shard.index=99999999999", "resume_token=%zz"} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, rawQuery string) {
		r := httptest.NewRequest("GET", "/v1/subscriptions/sub_x/events:stream", nil)
		r.URL.RawQuery = rawQuery
		r.SetPathValue("subscription_id", "sub_x")
		req, err := streamEventsRequest(r)
		q, _ := url.ParseQuery(rawQuery)
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("error %v is not INVALID_ARGUMENT", err)
			}
			return
		}
		if req.GetSubscriptionId() != "sub_x" || req.GetResumeToken() != q.Get("resume_token") {
			t.Fatalf("request %v from %q", req, rawQuery)
		}
		if (req.GetShard() != nil) != (q.Has("shard.index") || q.Has("shard.count")) {
			t.Fatalf("shard %v from %q", req.GetShard(), rawQuery)
		}
	})
}

// TestNDJSONLine: an event line is the envelope with resume_token as its
// last member; a heartbeat line has no id.
func TestNDJSONLine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		envelope, token, want string
	}{
		{`{"id":"evt_1","source":{"partition":0,"offset":0}}`, "tok", `{"id":"evt_1","source":{"partition":0,"offset":0},"resume_token":"tok"}` + "\n"},
		{`{}`, `a"b`, `{"resume_token":"a\"b"}` + "\n"},
		{" {\"id\":\"x\"}\n", "t", `{"id":"x","resume_token":"t"}` + "\n"},
	} {
		if got := string(ndjsonLine(streamMessage{envelope: []byte(tc.envelope), token: tc.token})); got != tc.want {
			t.Errorf("ndjsonLine(%s) = %s, want %s", tc.envelope, got, tc.want)
		}
	}
	var hb map[string]any
	line := ndjsonLine(streamMessage{})
	if err := json.Unmarshal(line, &hb); err != nil || hb["heartbeat_time"] == nil || hb["id"] != nil {
		t.Errorf("heartbeat line %s: %v", line, err)
	}
}
