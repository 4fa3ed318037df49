package server_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/outflow-dev/outflow/server"
)

// TestCostlyFilterRefused: a filter CEL estimates at about 10^9 steps per
// record is refused at create and update with a BadRequest on "filter",
// instead of being accepted and never matching.
func TestCostlyFilterRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{})
	costly := "true"
	for i := range 9 {
		costly = "[1,2,3,4,5,6,7,8,9,10].all(v" + string(rune('a'+i)) + ", " + costly + ")"
	}
	body := webhookSub("costly")
	body["filter"] = costly
	out := b.restJSON(t, 400, "POST", "/v1/subscriptions", b.keyA, body)
	if !strings.Contains(string(mustJSON(t, out)), `"field":"subscription.filter"`) {
		t.Errorf("create answer = %v, want a BadRequest on filter", out)
	}
	created := b.restJSON(t, 200, "POST", "/v1/subscriptions", b.keyA, webhookSub("cheap"))
	out = b.restJSON(t, 400, "PATCH", "/v1/subscriptions/"+created["id"].(string)+"?update_mask=filter", b.keyA, map[string]any{"filter": costly})
	if !strings.Contains(string(mustJSON(t, out)), `"field":"subscription.filter"`) {
		t.Errorf("update answer = %v, want a BadRequest on filter", out)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
