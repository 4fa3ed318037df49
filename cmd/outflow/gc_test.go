package main

import (
	"bytes"

	"io"
	"log/slog"
	"math"
	"runtime/debug"
	"strings"
	"testing"
)

// TestGCPolicy checks which of the flags and Go's own GOGC / GOMEMLIMIT
// decide the collector's policy: a flag given (or its OUTFLOW_ variable)
// wins, Go's variable wins over a flag's default, and the default applies
// when neither is set.
func TestGCPolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		args        []string
		env         map[string]string
		wantPercent int // -1000: left to GOGC
		wantLimit   int // -1: left to GOMEMLIMIT
		wantErr     string
	}{
		{name: "defaults", wantPercent: 400, wantLimit: 128},
		{name: "flags", args: []string{"--gc-percent", "150", "--memory-limit-mib", "512"}, wantPercent: 150, wantLimit: 512},
		{name: "OUTFLOW_ variables", env: map[string]string{"OUTFLOW_GC_PERCENT": "200", "OUTFLOW_MEMORY_LIMIT_MIB": "0"}, wantPercent: 200, wantLimit: 0},
		{name: "GOGC and GOMEMLIMIT", env: map[string]string{"GOGC": "100", "GOMEMLIMIT": "1GiB"}, wantPercent: -1000, wantLimit: -1},
		{name: "GOGC only", env: map[string]string{"GOGC": "off"}, wantPercent: -1000, wantLimit: 128},
		{name: "a flag wins over GOGC", args: []string{"--gc-percent", "300"}, env: map[string]string{"GOGC": "100", "GOMEMLIMIT": "1GiB"}, wantPercent: 300, wantLimit: -1},
		{name: "collection only at the limit", args: []string{"--gc-percent", "-1"}, wantPercent: -1, wantLimit: 128},
		{name: "never collecting", args: []string{"--gc-percent", "-1", "--memory-limit-mib", "0"}, wantErr: "would never run"},
		{name: "negative limit", args: []string{"--memory-limit-mib", "-5"}, wantErr: "must be 0 (none) or more"},
		{name: "absurd limit", args: []string{"--memory-limit-mib", "2000000000"}, wantErr: "more than 1 PiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := &environment{stdout: io.Discard, stderr: io.Discard, getenv: func(k string) string { return tt.env[k] }}
			fs := newFlagSet(env, "serve")
			var g gcFlags
			g.register(fs)
			if err := parseFlags(env, fs, tt.args); err != nil {
				t.Fatal(err)
			}
			p, err := g.policy(fs, env.getenv)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("policy error = %v, want one saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tt.wantPercent == -1000 && p.percent != nil:
				t.Errorf("gc percent = %d, want GOGC left in charge", *p.percent)
			case tt.wantPercent != -1000 && (p.percent == nil || *p.percent != tt.wantPercent):
				t.Errorf("gc percent = %v, want %d", p.percent, tt.wantPercent)
			}
			switch {
			case tt.wantLimit == -1 && p.memoryLimitMiB != nil:
				t.Errorf("memory limit = %d MiB, want GOMEMLIMIT left in charge", *p.memoryLimitMiB)
			case tt.wantLimit != -1 && (p.memoryLimitMiB == nil || *p.memoryLimitMiB != tt.wantLimit):
				t.Errorf("memory limit = %v, want %d MiB", p.memoryLimitMiB, tt.wantLimit)
			}
		})
	}
}

// TestGCPolicyApply sets a policy on this process's runtime, checks it
// took and was logged, and restores the runtime's settings. Not parallel:
// the settings are the process's.
func TestGCPolicyApply(t *testing.T) {
	percent, limit := 250, 300
	oldPercent := debug.SetGCPercent(100)
	oldLimit := debug.SetMemoryLimit(-1)
	t.Cleanup(func() {
		debug.SetGCPercent(oldPercent)
		debug.SetMemoryLimit(oldLimit)
	})
	var logs bytes.Buffer
	gcPolicy{percent: &percent, memoryLimitMiB: &limit}.apply(slog.New(slog.NewTextHandler(&logs, nil)), func(string) string { return "" })
	if got := debug.SetGCPercent(100); got != percent {
		t.Errorf("GC percent = %d, want %d", got, percent)
	}
	if got := debug.SetMemoryLimit(-1); got != int64(limit)<<20 {
		t.Errorf("memory limit = %d, want %d", got, int64(limit)<<20)
	}
	if !strings.Contains(logs.String(), "gc_percent=250 memory_limit_mib=300") {
		t.Errorf("log = %q, want the policy in force", logs.String())
	}

	none := 0
	logs.Reset()
	gcPolicy{memoryLimitMiB: &none}.apply(slog.New(slog.NewTextHandler(&logs, nil)), func(k string) string { return map[string]string{"GOGC": "175"}[k] })
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("memory limit = %d, want none (MaxInt64)", got)
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GC percent = %d, want it untouched (100)", got)
	}
	if !strings.Contains(logs.String(), "GOGC=175 memory_limit_mib=0") {
		t.Errorf("log = %q, want GOGC named as in charge", logs.String())
	}
}
