package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
)

func TestReplayRange(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	ts := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(now.Add(d)) }
	tests := []struct {
		name       string
		start, end *timestamppb.Timestamp
		wantStart  time.Time
		wantEnd    time.Time
		wantErr    string // a substring of the error; "" for none
	}{
		{"an hour", ts(-2 * time.Hour), ts(-time.Hour), now.Add(-2 * time.Hour), now.Add(-time.Hour), ""},
		{"no end means now", ts(-time.Hour), nil, now.Add(-time.Hour), now, ""},
		{"an end in the future is now", ts(-time.Hour), ts(time.Hour), now.Add(-time.Hour), now, ""},
		{"no start", nil, ts(-time.Hour), time.Time{}, time.Time{}, "start_time: required"},
		{"start in the future", ts(time.Minute), nil, time.Time{}, time.Time{}, "start_time: is in the future"},
		{"end before start", ts(-time.Hour), ts(-2 * time.Hour), time.Time{}, time.Time{}, "end_time: must be after start_time"},
		{"empty range", ts(-time.Hour), ts(-time.Hour), time.Time{}, time.Time{}, "end_time: must be after start_time"},
		{"too long", ts(-32 * 24 * time.Hour), nil, time.Time{}, time.Time{}, "longer than"},
		{"invalid start", &timestamppb.Timestamp{Seconds: -1 << 62}, nil, time.Time{}, time.Time{}, "start_time: not a valid timestamp"},
		{"invalid end", ts(-time.Hour), &timestamppb.Timestamp{Nanos: -5}, time.Time{}, time.Time{}, "end_time: not a valid timestamp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start, end, err := replayRange(&outflowv1.ReplaySubscriptionRequest{Id: "sub_x", StartTime: tt.start, EndTime: tt.end}, now)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !start.Equal(tt.wantStart) || !end.Equal(tt.wantEnd) {
				t.Fatalf("= %s, %s, %v; want %s, %s", start, end, err, tt.wantStart, tt.wantEnd)
			}
		})
	}
}

// TestStreamStatus: each stream failure tells the client what to do.
func TestStreamStatus(t *testing.T) {
	s := &Server{logger: slog.New(slog.DiscardHandler)}
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("%w: bad mac", ErrInvalidResumeToken), codes.InvalidArgument},
		{fmt.Errorf("%w: offset 3 < 10", ErrResumeTokenTooOld), codes.OutOfRange},
		{ErrSlowClient, codes.ResourceExhausted},
		{fmt.Errorf("%w: unknown topic", ErrSourceUnavailable), codes.Unavailable},
		{fmt.Errorf("%w: feature service not found", ErrEnrichmentFailed), codes.FailedPrecondition},
		{errors.New("something else"), codes.Internal},
	} {
		if got := status.Code(s.streamStatus(context.Background(), tc.err, "sub_x")); got != tc.want {
			t.Errorf("%v: %v, want %v", tc.err, got, tc.want)
		}
	}
}
