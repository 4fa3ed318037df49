package main

import (
	"flag"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
)

// gcFlags set the Go garbage collector's policy for `outflow serve`.
//
// The gateway keeps little live memory (tens of MiB) and allocates fast:
// about 10 KB per webhook delivery, most of it net/http's request and
// response. At Go's default (GOGC=100) the heap doubles its live size
// before each collection, so under load the collector ran about ten times a
// second, each mark phase taking a quarter of the gateway's CPU and slowing
// the goroutines that allocate, and the latency of every event delivered
// meanwhile. A collection when the heap reaches five times its live size
// (GOGC=400) runs a fifth as often; the memory limit bounds what that costs
// in memory: near the limit the collector runs as often as it must to stay
// under it (the limit is soft: the runtime never spends more than half the
// CPU on collection to keep it, so a live heap larger than the limit slows
// the gateway down rather than crashing it; raise the limit then).
//
// docs/benchmarks.md ("fourth round") has what this policy measured against
// Go's default: less CPU per delivery and a shorter latency tail, for a
// peak RSS near the limit in a backlog.
//
// Go's own GOGC and GOMEMLIMIT variables keep working: when one is set and
// the matching flag (or its OUTFLOW_ variable) is not, the runtime's value
// is left alone.
type gcFlags struct {
	percent        int
	memoryLimitMiB int
}

func (g *gcFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&g.percent, "gc-percent", 400, "run the garbage collector when the heap has grown this many percent over its live size, as GOGC does (negative: only at --memory-limit-mib); GOGC applies when this flag is not given")
	fs.IntVar(&g.memoryLimitMiB, "memory-limit-mib", 128, "soft limit of the gateway's memory in MiB, as GOMEMLIMIT sets it: near it the garbage collector runs more often, up to half the CPU (0: none); GOMEMLIMIT applies when this flag is not given")
}

// gcPolicy is the collector's policy apply set: a field is nil where the
// Go runtime's own variable was left in charge.
type gcPolicy struct {
	percent        *int
	memoryLimitMiB *int
}

// policy says what apply will set, given the flags that were set (on the
// command line or by their OUTFLOW_ variables) and the environment.
func (g *gcFlags) policy(fs *flag.FlagSet, getenv func(string) string) (gcPolicy, error) {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var p gcPolicy
	if set["gc-percent"] || getenv("GOGC") == "" {
		p.percent = &g.percent
	}
	if set["memory-limit-mib"] || getenv("GOMEMLIMIT") == "" {
		if g.memoryLimitMiB < 0 {
			return gcPolicy{}, fmt.Errorf("--memory-limit-mib %d: must be 0 (none) or more", g.memoryLimitMiB)
		}
		if g.memoryLimitMiB > 1<<30 {
			return gcPolicy{}, fmt.Errorf("--memory-limit-mib %d: more than 1 PiB", g.memoryLimitMiB)
		}
		p.memoryLimitMiB = &g.memoryLimitMiB
	}
	if p.percent != nil && *p.percent < 0 && p.memoryLimitMiB != nil && *p.memoryLimitMiB == 0 {
		return gcPolicy{}, fmt.Errorf("--gc-percent %d with --memory-limit-mib 0: the garbage collector would never run", g.percent)
	}
	return p, nil
}

// apply sets the policy on the Go runtime (process-wide, hence here in the
// binary and not in a library) and logs what is in force.
func (p gcPolicy) apply(log *slog.Logger, getenv func(string) string) {
	var attrs []any
	if p.percent != nil {
		debug.SetGCPercent(*p.percent)
		attrs = append(attrs, slog.Int("gc_percent", *p.percent))
	} else {
		attrs = append(attrs, slog.String("GOGC", getenv("GOGC")))
	}
	if p.memoryLimitMiB != nil {
		limit := int64(math.MaxInt64) // the runtime's "no limit"
		if *p.memoryLimitMiB > 0 {
			limit = int64(*p.memoryLimitMiB) << 20
		}
		debug.SetMemoryLimit(limit)
		attrs = append(attrs, slog.Int("memory_limit_mib", *p.memoryLimitMiB))
	} else {
		attrs = append(attrs, slog.String("GOMEMLIMIT", getenv("GOMEMLIMIT")))
	}
	log.Info("garbage collector policy", attrs...)
}
