package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/store"
	"github.com/outflow-dev/outflow/webhook"
)

// Page sizes of list calls (SPEC §6).
const (
	defaultPageSize = 50
	maxPageSize     = 1000
)

// secretBytes is the size of generated webhook secrets: 32 random bytes,
// inside the 24–64 of SPEC §3.
const secretBytes = 32

// subscriptionService implements outflowv1.SubscriptionServiceServer.
type subscriptionService struct {
	outflowv1.UnimplementedSubscriptionServiceServer
	*Server
}

var _ outflowv1.SubscriptionServiceServer = (*subscriptionService)(nil)

func subscriptionName(id string) string { return fmt.Sprintf("subscription %q", id) }

func (s *subscriptionService) CreateSubscription(ctx context.Context, req *outflowv1.CreateSubscriptionRequest) (*outflowv1.Subscription, error) {
	tenant, err := tenantFrom(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetSubscription() == nil {
		return nil, invalidField("subscription", "required")
	}
	sub := proto.CloneOf(req.GetSubscription())
	sub.Id, sub.Secret, sub.Etag, sub.StateReason = "", "", "", ""
	sub.CreateTime, sub.UpdateTime = nil, nil
	applyDefaults(sub)
	var v violations
	s.validator.validate(sub, "subscription.", &v)
	if err := v.err(); err != nil {
		return nil, err
	}
	if sub.Id, err = store.NewID("sub_"); err != nil {
		return nil, s.toStatus(ctx, err, "subscription")
	}
	secret, err := webhook.GenerateSecret(rand.Reader, secretBytes)
	if err != nil {
		return nil, s.toStatus(ctx, err, "subscription")
	}
	stored, err := s.store.CreateSubscription(ctx, tenant, sub, secret, s.cfg.MaxSubscriptionsPerTenant)
	if errors.Is(err, store.ErrAlreadyExists) {
		return nil, status.Errorf(codes.AlreadyExists, "a subscription named %q already exists", sub.Name)
	}
	if err != nil {
		return nil, s.toStatus(ctx, err, "subscription")
	}
	return present(stored, true), nil
}

func (s *subscriptionService) GetSubscription(ctx context.Context, req *outflowv1.GetSubscriptionRequest) (*outflowv1.Subscription, error) {
	stored, err := s.lookup(ctx, "id", req.GetId())
	if err != nil {
		return nil, err
	}
	return present(stored, false), nil
}

func (s *subscriptionService) ListSubscriptions(ctx context.Context, req *outflowv1.ListSubscriptionsRequest) (*outflowv1.ListSubscriptionsResponse, error) {
	tenant, err := tenantFrom(ctx)
	if err != nil {
		return nil, err
	}
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	fv := req.GetFeatureViewName()
	if fv != "" {
		if msg := checkIdentifier(fv); msg != "" {
			return nil, invalidField("feature_view_name", "%s", msg)
		}
	}
	q := store.ListQuery{FeatureViewName: fv, Limit: size + 1}
	if req.GetPageToken() != "" {
		if q.After, err = s.pageTokens.decode(req.GetPageToken(), tenant, fv); err != nil {
			return nil, invalidField("page_token", "%s", err)
		}
	}
	subs, err := s.store.ListSubscriptions(ctx, tenant, q)
	if err != nil {
		return nil, s.toStatus(ctx, err, "subscriptions")
	}
	resp := &outflowv1.ListSubscriptionsResponse{}
	if len(subs) > size {
		subs = subs[:size]
		last := subs[size-1].Proto
		resp.NextPageToken = s.pageTokens.encode(tenant, fv, store.Cursor{CreateTime: last.GetCreateTime().AsTime(), ID: last.GetId()})
	}
	resp.Subscriptions = make([]*outflowv1.Subscription, len(subs))
	for i, sub := range subs {
		resp.Subscriptions[i] = present(sub, false)
	}
	return resp, nil
}

// maxUpdateAttempts bounds how often an update without an etag re-reads and
// re-applies itself when a concurrent write wins the race.
const maxUpdateAttempts = 5

func (s *subscriptionService) UpdateSubscription(ctx context.Context, req *outflowv1.UpdateSubscriptionRequest) (*outflowv1.Subscription, error) {
	tenant, err := tenantFrom(ctx)
	if err != nil {
		return nil, err
	}
	patch := req.GetSubscription()
	if patch == nil {
		return nil, invalidField("subscription", "required")
	}
	id := patch.GetId()
	if err := checkID("subscription.id", id, "sub_"); err != nil {
		return nil, err
	}
	// A foreign etag (parseEtag's -1) matches no revision: ABORTED when
	// the subscription exists, NOT_FOUND when it does not.
	wantRevision := parseEtag(patch.GetEtag())
	paths, err := maskPaths(req.GetUpdateMask())
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		current, err := s.store.GetSubscription(ctx, tenant, id)
		if err != nil {
			return nil, s.toStatus(ctx, err, subscriptionName(id))
		}
		if patch.GetEtag() != "" && current.Revision != wantRevision {
			return nil, status.Errorf(codes.Aborted, "subscription %q has changed since etag %q was read; read it again", id, patch.GetEtag())
		}
		merged := proto.CloneOf(current.Proto)
		applyMask(merged, patch, paths)
		if merged.State != current.Proto.State {
			merged.StateReason = "" // a user decided the state; the server's reason no longer applies
		}
		applyDefaults(merged)
		var v violations
		s.validator.validate(merged, "subscription.", &v)
		if err := v.err(); err != nil {
			return nil, err
		}
		updated, err := s.store.UpdateSubscription(ctx, tenant, merged, current.Revision)
		switch {
		case errors.Is(err, store.ErrConflict) && patch.GetEtag() == "" && attempt < maxUpdateAttempts:
			continue // no etag: last writer wins, so apply the patch again on the new revision
		case errors.Is(err, store.ErrAlreadyExists):
			return nil, status.Errorf(codes.AlreadyExists, "a subscription named %q already exists", merged.Name)
		case err != nil:
			return nil, s.toStatus(ctx, err, subscriptionName(id))
		}
		return present(updated, false), nil
	}
}

func (s *subscriptionService) DeleteSubscription(ctx context.Context, req *outflowv1.DeleteSubscriptionRequest) (*emptypb.Empty, error) {
	tenant, err := tenantFrom(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkID("id", req.GetId(), "sub_"); err != nil {
		return nil, err
	}
	revision := parseEtag(req.GetEtag())
	if revision < 0 {
		// An etag this server never issued matches no revision.
		if _, err := s.store.GetSubscription(ctx, tenant, req.GetId()); err != nil {
			return nil, s.toStatus(ctx, err, subscriptionName(req.GetId()))
		}
		return nil, s.toStatus(ctx, store.ErrConflict, subscriptionName(req.GetId()))
	}
	if err := s.store.DeleteSubscription(ctx, tenant, req.GetId(), revision); err != nil {
		return nil, s.toStatus(ctx, err, subscriptionName(req.GetId()))
	}
	return &emptypb.Empty{}, nil
}

func (s *subscriptionService) RotateSubscriptionSecret(ctx context.Context, req *outflowv1.RotateSubscriptionSecretRequest) (*outflowv1.Subscription, error) {
	tenant, err := tenantFrom(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkID("id", req.GetId(), "sub_"); err != nil {
		return nil, err
	}
	secret, err := webhook.GenerateSecret(rand.Reader, secretBytes)
	if err != nil {
		return nil, s.toStatus(ctx, err, subscriptionName(req.GetId()))
	}
	stored, err := s.store.RotateSecret(ctx, tenant, req.GetId(), secret, s.cfg.SecretOverlap)
	if err != nil {
		return nil, s.toStatus(ctx, err, subscriptionName(req.GetId()))
	}
	return present(stored, true), nil
}

// lookup validates an id from the request and reads the tenant's
// subscription with it.
func (s *Server) lookup(ctx context.Context, field, id string) (*store.Subscription, error) {
	tenant, err := tenantFrom(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkID(field, id, "sub_"); err != nil {
		return nil, err
	}
	stored, err := s.store.GetSubscription(ctx, tenant, id)
	if err != nil {
		return nil, s.toStatus(ctx, err, subscriptionName(id))
	}
	return stored, nil
}

// present returns the API form of a stored subscription: with its etag, and
// with its secret only when withSecret (create and rotate answers).
func present(stored *store.Subscription, withSecret bool) *outflowv1.Subscription {
	sub := proto.CloneOf(stored.Proto)
	sub.Etag = formatEtag(stored.Revision)
	if withSecret {
		sub.Secret = stored.Secrets.Current
	}
	return sub
}

func pageSize(n int32) (int, error) {
	switch {
	case n == 0:
		return defaultPageSize, nil
	case n < 0 || n > maxPageSize:
		return 0, invalidField("page_size", "must be between 1 and %d, got %d", maxPageSize, n)
	}
	return int(n), nil
}

// Etags are "r" and the revision number. Clients must treat them as opaque;
// the prefix keeps them from being mistaken for numbers.
func formatEtag(revision int64) string { return "r" + strconv.FormatInt(revision, 10) }

// parseEtag returns the revision of an etag: 0 for none, and -1 for one
// this server never issued, which matches no revision (a mismatch, not a
// malformed argument: clients cannot know the form).
func parseEtag(etag string) int64 {
	if etag == "" {
		return 0
	}
	n, err := strconv.ParseInt(strings.TrimPrefix(etag, "r"), 10, 64)
	if !strings.HasPrefix(etag, "r") || err != nil || n <= 0 {
		return -1
	}
	return n
}
