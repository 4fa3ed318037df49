package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/outflow-dev/outflow/store"
)

// violations collects the bad fields of a request; err turns them into one
// INVALID_ARGUMENT status with a google.rpc.BadRequest detail naming each.
type violations []*errdetails.BadRequest_FieldViolation

func (v *violations) add(field, format string, args ...any) {
	*v = append(*v, &errdetails.BadRequest_FieldViolation{Field: field, Description: fmt.Sprintf(format, args...)})
}

func (v violations) err() error {
	if len(v) == 0 {
		return nil
	}
	parts := make([]string, 0, len(v))
	for _, fv := range v {
		parts = append(parts, fv.GetField()+": "+fv.GetDescription())
	}
	st := status.New(codes.InvalidArgument, "invalid request: "+strings.Join(parts, "; "))
	withDetails, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: v})
	if err != nil {
		return st.Err()
	}
	return withDetails.Err()
}

// invalidField is a one-violation INVALID_ARGUMENT status.
func invalidField(field, format string, args ...any) error {
	var v violations
	v.add(field, format, args...)
	return v.err()
}

// toStatus maps a domain error to the gRPC status a client sees; it is the
// one place where that happens. what names the resource ("subscription
// \"sub_…\""). Internal failures are logged with the request id and
// answered without their text, which may hold internals.
func (s *Server) toStatus(ctx context.Context, err error, what string) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		return status.Errorf(codes.NotFound, "%s not found", what)
	case errors.Is(err, store.ErrAlreadyExists):
		return status.Errorf(codes.AlreadyExists, "%s already exists", what)
	case errors.Is(err, store.ErrConflict):
		return status.Errorf(codes.Aborted, "%s was changed concurrently; read it again and retry with its new etag", what)
	case errors.Is(err, store.ErrLimitExceeded):
		return status.Errorf(codes.ResourceExhausted, "%s: %s", what, strings.TrimPrefix(err.Error(), "creating "))
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "request deadline exceeded")
	}
	id := requestIDFrom(ctx)
	s.logger.ErrorContext(ctx, "request failed", slog.String("request_id", id), slog.Any("error", err))
	return status.Errorf(codes.Internal, "internal error; quote request id %s when reporting it", id)
}
