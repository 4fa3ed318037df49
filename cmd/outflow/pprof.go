package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"time"
)

// pprofUsage is the usage of --pprof-addr, shared by serve and featureserver.
const pprofUsage = "loopback address (e.g. 127.0.0.1:6060) of a Go pprof listener (/debug/pprof/), for profiling under load; off when empty, and refused on a non-loopback address because profiles expose memory contents"

// startPprof serves Go's runtime profiles (net/http/pprof) on addr until ctx is done, for
// profiling a process under load (`go tool pprof http://ADDR/debug/pprof/profile?seconds=10`).
// An empty addr starts nothing. The address must be a loopback one: a heap profile or a
// goroutine dump shows memory contents (secrets included), so it is never exposed beyond the
// machine. The handlers live on their own mux, not http.DefaultServeMux. The returned wait
// function blocks until the listener has closed after ctx ended.
func startPprof(ctx context.Context, addr string, logger *slog.Logger) (wait func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof-addr %q: %w", addr, err)
	}
	ip, err := netip.ParseAddr(host)
	if host != "localhost" && (err != nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("--pprof-addr %q: must be a loopback address (127.0.0.1, [::1] or localhost)", addr)
	}
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof-addr: listening: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.WarnContext(ctx, "pprof listener stopped", slog.Any("error", err))
		}
	}()
	go func() {
		<-ctx.Done()
		// A CPU profile being taken is cut short: profiling is a debugging aid.
		_ = hs.Close()
	}()
	logger.InfoContext(ctx, "pprof listening", slog.String("addr", lis.Addr().String()))
	return func() { <-done }, nil
}
