package server

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/outflow-dev/outflow/console"
	"github.com/outflow-dev/outflow/proto/openapi"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
)

// jsonMarshaler is the REST wire format: proto field names (snake_case, as in
// the SPEC and the OpenAPI document) and no unknown fields, so a misspelt
// field is an error instead of being silently dropped.
var jsonMarshaler = fieldNamingJSON{&runtime.JSONPb{
	MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true},
	UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
}}

// httpHandler routes /v1/ to grpc-gateway, which calls the gRPC server over
// loopback (so REST calls pass the same interceptors: auth, request ids,
// metrics), plus the operational endpoints.
func (s *Server) httpHandler(ctx context.Context, grpcAddr string) (http.Handler, func(), error) {
	conn, err := grpc.NewClient("passthrough:///"+loopbackAddr(grpcAddr),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
	if err != nil {
		return nil, nil, fmt.Errorf("connecting the gateway to gRPC: %w", err)
	}
	rs, err := loadRoutes(openapi.JSON)
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	gw := runtime.NewServeMux(
		runtime.WithRoutingErrorHandler(rs.routingError),
		runtime.WithErrorHandler(httpError),
		runtime.WithMarshalerOption(runtime.MIMEWildcard, jsonMarshaler),
		runtime.WithIncomingHeaderMatcher(incomingHeader),
		runtime.WithOutgoingHeaderMatcher(outgoingHeader),
	)
	for _, register := range []func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error{
		outflowv1.RegisterSubscriptionServiceHandler,
		outflowv1.RegisterEventServiceHandler,
	} {
		if err := register(ctx, gw, conn); err != nil {
			_ = conn.Close()
			return nil, nil, fmt.Errorf("registering gateway handlers: %w", err)
		}
	}

	mux := http.NewServeMux()
	mux.Handle("/v1/", rs.methodNotAllowed(s.requireKey(rs, limitBody(gw, int64(s.cfg.MaxRequestBytes))), jsonMarshaler))
	// StreamEvents' NDJSON carries the webhook's JSON, not the gateway's.
	mux.HandleFunc("GET /v1/subscriptions/{subscription_id}/events:stream", s.ndjsonStream)
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openapi.JSON)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	ui, err := console.New()
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	mux.Handle(console.Prefix, ui) // the web console; it calls /v1/ like any client
	return mux, func() { _ = conn.Close() }, nil
}

// readyz answers 200 while the database answers and the Ready hook (the
// dispatcher's consumer has joined) agrees; load balancers stop routing to a
// replica that is not.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		http.Error(w, "database unreachable", http.StatusServiceUnavailable)
		return
	}
	if s.ready != nil {
		if err := s.ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	_, _ = w.Write([]byte("ok\n"))
}

// requireKey answers 401 to a REST call without a valid API key before the
// gateway decodes its body: the gateway would otherwise answer a bad body
// 400 first, showing the API's validation to a caller without a key. The
// gRPC interceptor still authenticates the call itself (the key may be
// revoked in between), so this costs REST calls one more indexed lookup.
// Paths the API does not serve stay 404. It then refuses a query parameter
// outside its enum (see routes.badEnum), which the gateway would take.
func (s *Server) requireKey(rs routes, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(rs.allowed(r.URL.Path)) == 0 {
			next.ServeHTTP(w, r) // no such route: the gateway's 404
			return
		}
		md := metadata.Pairs(requestIDHeader, r.Header.Get("X-Request-Id"))
		if auth := r.Header.Values("Authorization"); len(auth) > 0 {
			md.Set("authorization", auth[0])
		}
		ctx := metadata.NewIncomingContext(r.Context(), md)
		ctx = context.WithValue(ctx, requestIDKey{}, incomingRequestID(ctx))
		if _, err := s.authenticate(ctx); err != nil {
			w.Header().Set("X-Request-Id", requestIDFrom(ctx))
			code := http.StatusUnauthorized
			if status.Code(err) != codes.Unauthenticated {
				code = runtime.HTTPStatusFromCode(status.Code(err))
			} else {
				w.Header().Set("WWW-Authenticate", "Bearer")
			}
			writeStatus(w, jsonMarshaler, code, err)
			return
		}
		if name, names := rs.badEnum(r); name != "" {
			writeStatus(w, jsonMarshaler, http.StatusBadRequest, invalidField(name, "must be one of %s", strings.Join(names, ", ")))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// limitBody answers 413 to bodies declared larger than limit and cuts
// undeclared (chunked) ones at limit, which the gateway reports as a 400.
func limitBody(next http.Handler, limit int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			_, _ = fmt.Fprintf(w, `{"code":3,"message":"request body is %d bytes, more than the limit of %d","details":[]}`+"\n", r.ContentLength, limit)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		next.ServeHTTP(w, r)
	})
}

// incomingHeader forwards the request id besides the gateway's defaults
// (Authorization among them).
func incomingHeader(key string) (string, bool) {
	if strings.EqualFold(key, requestIDHeader) {
		return requestIDHeader, true
	}
	return runtime.DefaultHeaderMatcher(key)
}

// outgoingHeader returns the request id as X-Request-Id and a refusal's
// wait as Retry-After; other response metadata keeps the gateway's
// Grpc-Metadata- prefix.
func outgoingHeader(key string) (string, bool) {
	switch key {
	case requestIDHeader:
		return "X-Request-Id", true
	case retryAfterHeader:
		return "Retry-After", true
	}
	return runtime.MetadataHeaderPrefix + key, true
}

// loopbackAddr turns a wildcard listen address (":9090", "[::]:9090") into
// one the gateway can dial.
func loopbackAddr(addr string) string {
	host, port, found := strings.Cut(addr, "]:")
	if found {
		host += "]"
	} else if i := strings.LastIndex(addr, ":"); i >= 0 {
		host, port = addr[:i], addr[i+1:]
	}
	switch host {
	case "", "0.0.0.0", "[::]":
		return "127.0.0.1:" + port
	}
	return addr
}
