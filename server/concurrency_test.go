package server_test

import (
	"fmt"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/server"
)

const writers = 50

// TestConcurrentUpdatesSameEtag: 50 writers race with the same etag;
// exactly one wins, the others get ABORTED, and the winner's write is the
// one stored.
func TestConcurrentUpdatesSameEtag(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{})
	ctx := as(b.keyA)
	created := b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions", b.keyA, webhookSub("contended"))
	id, etag := created["id"].(string), created["etag"].(string)

	var wg sync.WaitGroup
	var aborted atomic.Int32
	winners := make(chan string, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("writer %02d", i)
			_, err := b.subs.UpdateSubscription(ctx, &outflowv1.UpdateSubscriptionRequest{
				Subscription: &outflowv1.Subscription{Id: id, Etag: etag, Name: name},
				UpdateMask:   &fieldmaskpb.FieldMask{Paths: []string{"name"}},
			})
			switch status.Code(err) {
			case codes.OK:
				winners <- name
			case codes.Aborted:
				aborted.Add(1)
			default:
				t.Errorf("%s: %v", name, err)
			}
		}()
	}
	wg.Wait()
	close(winners)
	var won []string
	for w := range winners {
		won = append(won, w)
	}
	if len(won) != 1 || int(aborted.Load()) != writers-1 {
		t.Fatalf("%d winners %v and %d aborted; want 1 and %d", len(won), won, aborted.Load(), writers-1)
	}
	got, err := b.subs.GetSubscription(ctx, &outflowv1.GetSubscriptionRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetName() != won[0] || got.GetEtag() != "r2" {
		t.Errorf("stored name %q etag %q; want the winner's %q at r2", got.GetName(), got.GetEtag(), won[0])
	}
}

// TestConcurrentReadModifyWrite: 50 writers each add their own feature view
// with read → update-with-etag, retrying on ABORTED. Exactly the winners'
// writes land: all 50 additions, none lost, one revision each.
func TestConcurrentReadModifyWrite(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{})
	ctx := as(b.keyA)
	id := b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions", b.keyA, webhookSub("appended"))["id"].(string)

	var wg sync.WaitGroup
	var aborted atomic.Int32
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := fmt.Sprintf("fv_%02d", i)
			for attempt := 0; attempt < 500; attempt++ {
				cur, err := b.subs.GetSubscription(ctx, &outflowv1.GetSubscriptionRequest{Id: id})
				if err != nil {
					t.Errorf("%s: get: %v", mine, err)
					return
				}
				_, err = b.subs.UpdateSubscription(ctx, &outflowv1.UpdateSubscriptionRequest{
					Subscription: &outflowv1.Subscription{Id: id, Etag: cur.GetEtag(), FeatureViewNames: append(cur.GetFeatureViewNames(), mine)},
					UpdateMask:   &fieldmaskpb.FieldMask{Paths: []string{"feature_view_names"}},
				})
				if err == nil {
					return
				}
				if status.Code(err) != codes.Aborted {
					t.Errorf("%s: update: %v", mine, err)
					return
				}
				aborted.Add(1)
			}
			t.Errorf("%s never won", mine)
		}()
	}
	wg.Wait()
	got, err := b.subs.GetSubscription(ctx, &outflowv1.GetSubscriptionRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	fvs := got.GetFeatureViewNames()
	sort.Strings(fvs)
	if len(fvs) != writers+1 {
		t.Fatalf("stored %d feature views, want the original plus %d: %v", len(fvs), writers, fvs)
	}
	if want := fmt.Sprintf("r%d", writers+1); got.GetEtag() != want {
		t.Errorf("etag %s, want %s: one revision per winning write", got.GetEtag(), want)
	}
	t.Logf("%d writers, %d ABORTED retries", writers, aborted.Load())
}
