package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"

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

// gatewayErrors are the forms of the INVALID_ARGUMENT messages the gateway
// makes itself, from our decoder's errors (fieldNamingJSON), its path and
// query parameter parsing: each names the field at fault in its first group.
var gatewayErrors = []*regexp.Regexp{
	regexp.MustCompile(`(?s)^field ("(?:[^"\\]|\\.)*"): (.*)$`),
	regexp.MustCompile(`(?s)^type mismatch, parameter: ([^\s,]+), error: (.*)$`),
	regexp.MustCompile(`(?s)^missing parameter ([^\s]+)()$`),
	regexp.MustCompile(`(?s)^(?:parsing field|parsing list|duplicate field|too many values for field|field already set for oneof|parsing map key|parsing map value) "([^"]+)":? ?(.*)$`),
}

// gatewayViolation names the field an INVALID_ARGUMENT message of the
// gateway is about, and what is wrong with it; "request" when the message
// names none.
func gatewayViolation(msg string) (field, desc string) {
	for _, re := range gatewayErrors {
		if m := re.FindStringSubmatch(msg); m != nil {
			if unquoted, err := strconv.Unquote(m[1]); err == nil {
				m[1] = unquoted
			}
			if m[2] == "" {
				m[2] = msg
			}
			return m[1], m[2]
		}
	}
	return "request", msg
}

// httpError is the gateway's error handler. The gateway answers a body,
// path or query parameter it cannot decode with an INVALID_ARGUMENT status
// that carries only text; SPEC §3 wants every validation error to name the
// bad field in a google.rpc.BadRequest, so such a status gets one. Statuses
// from the gRPC service keep their details.
func httpError(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	if st, ok := status.FromError(err); ok && st.Code() == codes.InvalidArgument && len(st.Details()) == 0 {
		field, desc := gatewayViolation(st.Message())
		if withDetails, derr := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: desc}}}); derr == nil {
			err = withDetails.Err()
		}
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}
