package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/outflow-dev/outflow/store"
)

type requestIDKey struct{}
type tenantKey struct{}

// keyIDKey holds the id of the API key that authenticated a call, for
// ending its streams once it is revoked.
type keyIDKey struct{}

// requestIDHeader carries a request id in and out (gRPC metadata and, through
// the gateway, the HTTP header X-Request-Id).
const requestIDHeader = "x-request-id"

func requestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// tenantFrom returns the tenant the auth interceptor put in ctx. Handlers run
// only behind that interceptor, so a missing tenant is a bug, answered as
// UNAUTHENTICATED rather than serving without a tenant.
func tenantFrom(ctx context.Context) (string, error) {
	t, ok := ctx.Value(tenantKey{}).(string)
	if !ok || t == "" {
		return "", status.Error(codes.Unauthenticated, "no tenant for this request")
	}
	return t, nil
}

// unauthenticatedMethods may be called without an API key: only health
// checks (SPEC §7), which load balancers call without credentials.
func unauthenticated(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/grpc.health.v1.Health/")
}

// observe gives every call a request id, recovers panics into INTERNAL, and
// counts calls by method and code.
func (s *Server) observe(ctx context.Context, fullMethod string, call func(context.Context) error) (err error) {
	id := incomingRequestID(ctx)
	ctx = context.WithValue(ctx, requestIDKey{}, id)
	_ = grpc.SetHeader(ctx, metadata.Pairs(requestIDHeader, id))
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			s.logger.ErrorContext(ctx, "panic serving request",
				slog.String("request_id", id), slog.String("method", fullMethod),
				slog.Any("panic", r), slog.String("stack", string(debug.Stack())))
			err = status.Errorf(codes.Internal, "internal error; quote request id %s when reporting it", id)
		}
		code := status.Code(err)
		s.metrics.requests.WithLabelValues(fullMethod, code.String()).Inc()
		s.logger.DebugContext(ctx, "request",
			slog.String("request_id", id), slog.String("method", fullMethod),
			slog.String("code", code.String()), slog.Duration("duration", time.Since(start)))
	}()
	if !unauthenticated(fullMethod) {
		if ctx, err = s.authenticate(ctx); err != nil {
			return err
		}
		if err := s.admitTenant(ctx); err != nil {
			return err
		}
	}
	return call(ctx)
}

// admitTenant spends one of the tenant's API calls (Config.RequestsPerSecond)
// or refuses the call with RESOURCE_EXHAUSTED and Retry-After.
func (s *Server) admitTenant(ctx context.Context) error {
	tenant, err := tenantFrom(ctx)
	if err != nil {
		return err
	}
	done, refused := s.tenantCalls.take(tenant, perSecond(s.cfg.RequestsPerSecond), s.cfg.RequestBurst, 0, time.Now())
	if refused != nil {
		return exhausted(ctx, refused, "too many API calls: this tenant may make %g per second (bursts of %d); retry after the time in Retry-After",
			s.cfg.RequestsPerSecond, s.cfg.RequestBurst)
	}
	done() // the rate is what is limited here, not the calls in flight
	return nil
}

func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	var resp any
	err := s.observe(ctx, info.FullMethod, func(ctx context.Context) error {
		var err error
		resp, err = handler(ctx, req)
		return err
	})
	return resp, err
}

func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return s.observe(ss.Context(), info.FullMethod, func(ctx context.Context) error {
		return handler(srv, &contextStream{ServerStream: ss, ctx: ctx})
	})
}

// contextStream is a ServerStream whose Context carries the request id and
// tenant.
type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c *contextStream) Context() context.Context { return c.ctx }

// authenticate resolves the bearer API key to its tenant.
func (s *Server) authenticate(ctx context.Context) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	values := md.Get("authorization")
	if len(values) == 0 {
		return ctx, status.Error(codes.Unauthenticated, missingKeyMessage)
	}
	key, ok := bearerKey(values[0])
	if !ok {
		return ctx, status.Error(codes.Unauthenticated, malformedKeyMessage)
	}
	k, err := s.store.AuthenticateKey(ctx, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return ctx, status.Error(codes.Unauthenticated, "invalid or revoked API key")
	case err != nil:
		id := requestIDFrom(ctx)
		s.logger.ErrorContext(ctx, "authenticating a request", slog.String("request_id", id), slog.Any("error", err))
		return ctx, status.Errorf(codes.Unavailable, "cannot check the API key right now; retry (request id %s)", id)
	}
	return context.WithValue(context.WithValue(ctx, tenantKey{}, k.TenantID), keyIDKey{}, k.ID), nil
}

// The answers to a call without a usable Authorization header.
const (
	missingKeyMessage   = "missing API key: send the header 'authorization: Bearer <api key>'"
	malformedKeyMessage = "malformed authorization header: expected 'Bearer <api key>'"
)

// bearerKey returns the key of an "authorization: Bearer <key>" value.
func bearerKey(value string) (string, bool) {
	scheme, key, ok := strings.Cut(value, " ")
	key = strings.TrimSpace(key)
	if !ok || !strings.EqualFold(scheme, "bearer") || key == "" {
		return "", false
	}
	return key, true
}

// incomingRequestID keeps a caller's well-formed request id (so one id
// follows a request across systems) and makes one otherwise.
func incomingRequestID(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(requestIDHeader); len(v) > 0 && validRequestID(v[0]) {
		return v[0]
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}
