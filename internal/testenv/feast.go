package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// FeastURLEnv names the environment variable holding the base URL of the Feast feature server
// (`feast serve`, SQLite online store) that scripts/testenv.sh starts.
const FeastURLEnv = "OUTFLOW_TEST_FEAST_URL"

// The feature repo scripts/testenv.sh applies to the Feast server (see write_feast_repo there).
const (
	// FeastFeatureService serves every feature of FeastFeatureView.
	FeastFeatureService = "user_fs"
	// FeastFeatureView holds cart_count (INT64) and lifetime_value (FLOAT64), with no ttl.
	FeastFeatureView = "user_stats"
	// FeastJoinKey is the join key of the view's one entity (STRING).
	FeastJoinKey = "user_id"
	// feastPushSource is the push source that writes FeastFeatureView.
	feastPushSource = "user_stats_push"
)

// FeastURL returns the Feast feature server's base URL from OUTFLOW_TEST_FEAST_URL. Without it
// the test is skipped, or fails under CI=true, like the other services. The server is shared by
// every test of the run, so a test isolates itself by the join key values it uses: see
// FeastUserID.
func FeastURL(t testing.TB) string {
	t.Helper()
	return strings.TrimRight(requireEnv(t, os.Getenv, FeastURLEnv), "/")
}

// FeastUserID returns a user_id no other test uses: prefix, then random characters.
func FeastUserID(prefix string) string {
	return prefix + strings.ToLower(rand.Text())[:12]
}

// FeastRow is one row written to FeastFeatureView.
type FeastRow struct {
	UserID        string
	CartCount     int64
	LifetimeValue float64
	// EventTimestamp is the row's event time; Feast's SQLite store keeps whole seconds.
	EventTimestamp time.Time
}

// FeastPush writes rows to the online store of the Feast server at baseURL through its push
// source (POST /push, to "online"), as a stream job would. It fails the test on any error.
func FeastPush(t testing.TB, baseURL string, rows ...FeastRow) {
	t.Helper()
	if err := feastPush(t.Context(), baseURL, rows); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

func feastPush(ctx context.Context, baseURL string, rows []FeastRow) error {
	df := map[string][]any{"user_id": {}, "cart_count": {}, "lifetime_value": {}, "event_timestamp": {}}
	for _, r := range rows {
		df["user_id"] = append(df["user_id"], r.UserID)
		df["cart_count"] = append(df["cart_count"], r.CartCount)
		df["lifetime_value"] = append(df["lifetime_value"], r.LifetimeValue)
		df["event_timestamp"] = append(df["event_timestamp"], r.EventTimestamp.UTC().Format(time.RFC3339Nano))
	}
	body, err := json.Marshal(map[string]any{"push_source_name": feastPushSource, "df": df, "to": "online"})
	if err != nil {
		return fmt.Errorf("encoding a Feast push: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/push", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("building a Feast push: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	// No keep-alive: a pooled connection of http.DefaultClient would outlive the test and
	// show up in the goleak check of every package that pushes.
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("pushing %d rows to Feast: %w", len(rows), err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pushing %d rows to Feast: HTTP %d: %s", len(rows), resp.StatusCode, msg)
	}
	return nil
}
