package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestStartPprofAddresses(t *testing.T) {
	tests := []struct {
		addr    string
		wantErr string
	}{
		{addr: ""},
		{addr: "127.0.0.1:0"},
		{addr: "localhost:0"},
		{addr: "0.0.0.0:0", wantErr: "loopback"},
		{addr: ":0", wantErr: "loopback"},
		{addr: "10.1.2.3:0", wantErr: "loopback"},
		{addr: "example.com:6060", wantErr: "loopback"},
		{addr: "127.0.0.1", wantErr: "missing port"},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			wait, err := startPprof(ctx, tt.addr, slog.New(slog.DiscardHandler))
			cancel()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("startPprof(%q) = %v, want an error containing %q", tt.addr, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("startPprof(%q): %v", tt.addr, err)
			}
			wait()
		})
	}
}

// TestPprofServesProfiles checks that the listener answers the pprof index and stops with its
// context.
func TestPprofServesProfiles(t *testing.T) {
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(t.Context())
	wait, err := startPprof(ctx, addr, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); wait() }()
	var resp *http.Response
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err = http.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // polling for the listener, with a deadline
	}
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine profile") {
		t.Fatalf("GET goroutine profile: %s %.200s", resp.Status, body)
	}
}
