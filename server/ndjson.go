package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
)

// streamEventsMethod is StreamEvents' gRPC name, under which NDJSON streams
// are authenticated and counted like gRPC ones.
const streamEventsMethod = outflowv1.EventService_StreamEvents_FullMethodName

// ndjsonStream serves StreamEvents over HTTP as newline-delimited JSON
// (SPEC §5). It does not go through grpc-gateway, which would turn each
// event's JSON into a protobuf message and back (int64 offsets as strings,
// zero values dropped) and wrap it as {"result": {"event": …}}: each line is
// instead the very envelope a webhook receiver gets, with the event's
// resume_token added, so one type parses both. An idle stream gets a
// heartbeat line, {"heartbeat_time": "…"}, which carries no id. Errors
// before the first line are HTTP statuses with the gateway's JSON error
// body; later ones end the stream with a last line {"error": {…}}.
//
// Query parameters, as for the gateway: resume_token, shard.index and
// shard.count.
func (s *Server) ndjsonStream(w http.ResponseWriter, r *http.Request) {
	md := metadata.MD{}
	if v := r.Header.Get("Authorization"); v != "" {
		md.Set("authorization", v)
	}
	if v := r.Header.Get("X-Request-Id"); v != "" {
		md.Set(requestIDHeader, v)
	}
	ctx := metadata.NewIncomingContext(r.Context(), md)
	rc := http.NewResponseController(w)
	started := false
	err := s.observe(ctx, streamEventsMethod, func(ctx context.Context) error {
		w.Header().Set("X-Request-Id", requestIDFrom(ctx))
		req, err := streamEventsRequest(r)
		if err != nil {
			return err
		}
		return s.serveStream(ctx, req, func(m streamMessage) (func() error, error) {
			line := ndjsonLine(m)
			return func() error {
				if !started {
					started = true
					w.Header().Set("Content-Type", "application/x-ndjson")
					w.WriteHeader(http.StatusOK)
				}
				if _, err := w.Write(line); err != nil {
					return err
				}
				return rc.Flush()
			}, nil
		}, func() {
			// Unblock a write stuck on a client that stopped reading.
			_ = rc.SetWriteDeadline(time.Now())
		})
	})
	if err == nil {
		return
	}
	st := status.Convert(err)
	body, merr := jsonMarshaler.Marshal(st.Proto())
	if merr != nil {
		body = []byte(`{"code":13,"message":"internal error"}`)
	}
	if started {
		// The status line is sent: the error is the last line. A write
		// deadline set to stop a slow client must not stop this one.
		_ = rc.SetWriteDeadline(time.Now().Add(slowClientGrace))
		_, _ = w.Write(append(append([]byte(`{"error":`), body...), '}', '\n'))
		return
	}
	if d, ok := retryDelay(st); ok {
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int((d+time.Second-1)/time.Second))))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(runtime.HTTPStatusFromCode(st.Code()))
	_, _ = w.Write(append(body, '\n'))
}

// streamEventsRequest reads StreamEvents' request from the path and query.
func streamEventsRequest(r *http.Request) (*outflowv1.StreamEventsRequest, error) {
	q := r.URL.Query()
	req := &outflowv1.StreamEventsRequest{SubscriptionId: r.PathValue("subscription_id"), ResumeToken: q.Get("resume_token")}
	var v violations
	number := func(name string) int32 {
		raw := q.Get(name)
		if raw == "" {
			return 0
		}
		n, err := strconv.ParseInt(raw, 10, 32)
		if err != nil {
			v.add(name, "must be an integer, got %q", raw)
		}
		return int32(n)
	}
	index, count := number("shard.index"), number("shard.count")
	if err := v.err(); err != nil {
		return nil, err
	}
	if q.Has("shard.index") || q.Has("shard.count") {
		req.Shard = &outflowv1.Shard{Index: index, Count: count}
	}
	return req, nil
}

// ndjsonLine is one line of an NDJSON stream: the event's envelope with its
// resume_token added as the last member, or a heartbeat.
func ndjsonLine(m streamMessage) []byte {
	if m.envelope == nil {
		ts, _ := json.Marshal(m.heartbeat.UTC().Format(time.RFC3339Nano))
		return append(append([]byte(`{"heartbeat_time":`), ts...), '}', '\n')
	}
	env := bytes.TrimSpace(m.envelope)
	token, _ := json.Marshal(m.token) // a string always encodes
	line := make([]byte, 0, len(env)+len(token)+20)
	line = append(line, env[:len(env)-1]...) // the envelope is a JSON object: drop its '}'
	if len(bytes.TrimSpace(env[1:len(env)-1])) > 0 {
		line = append(line, ',')
	}
	line = append(line, `"resume_token":`...)
	line = append(line, token...)
	return append(line, '}', '\n')
}
