package main

import (
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// report writes <out>/<stamp>.json, .md and -latency.png, and the markdown
// into docs (between markers, replacing the previous run).
func (b *bench) report(out, docs string, took time.Duration) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	stamp := time.Now().UTC().Format("20060102T150405Z")
	js, err := json.MarshalIndent(map[string]any{
		"time": time.Now().UTC(), "duration_seconds": took.Seconds(), "cpus": runtime.NumCPU(),
		"command": "make bench", "scenarios": b.results,
	}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, stamp+".json"), js, 0o644); err != nil {
		return err
	}
	md := b.markdown(stamp, took)
	if err := os.WriteFile(filepath.Join(out, stamp+".md"), []byte(md), 0o644); err != nil {
		return err
	}
	if err := b.plot(filepath.Join(out, stamp+"-latency.png")); err != nil {
		return err
	}
	fmt.Print(md)
	if docs == "" {
		return nil
	}
	return updateDocs(docs, md, stamp)
}

func (b *bench) markdown(stamp string, took time.Duration) string {
	var s strings.Builder
	fmt.Fprintf(&s, "Run %s on %d CPUs, %s in all. Ratios are against `raw-post` of the same run.\n\n", stamp, runtime.NumCPU(), took.Round(time.Second))
	s.WriteString("| scenario | delivered | deliveries/s | × raw-post | p50 ms | p99 ms | p99.9 ms | CPU s / 10k | peak RSS MiB | PG writes / delivery | PG commits / delivery | parked | duplicates | lost | resume s | notes |\n")
	s.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range b.results {
		resume := ""
		if r.ResumeSeconds > 0 {
			resume = fmt.Sprintf("%.1f", r.ResumeSeconds)
		}
		fmt.Fprintf(&s, "| %s | %d/%d | %.0f | %.2f | %.1f | %.1f | %.1f | %.2f | %.0f | %.3f | %.3f | %.0f | %d | %d | %s | %s |\n",
			r.Name, r.Delivered, r.Expected, r.PerSecond, r.RatioToFloor, r.P50, r.P99, r.P999, r.CPUPer10k, r.PeakRSSMiB,
			r.PGWritesPerDelivery, r.PGCommitsPerDelivery, max(r.Parked, 0), r.Duplicates, r.Lost, resume, strings.ReplaceAll(r.Notes, "|", "/"))
	}
	return s.String()
}

// plot draws the latency distribution (0-200 ms, 1 ms buckets) of
// steady-latency, as a histogram with its cumulative share as a line.
func (b *bench) plot(path string) error {
	var hist []int
	for _, r := range b.results {
		if r.Name == "steady-latency" {
			hist = r.Histogram
		}
	}
	const w, h, buckets = 800, 300, 200
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for x := range w {
		for y := range h {
			img.Set(x, y, color.White)
		}
	}
	total, peak := 0, 1
	for i, n := range hist {
		total += n
		if i < buckets {
			peak = max(peak, n)
		}
	}
	bar := color.RGBA{60, 110, 200, 255}
	line := color.RGBA{220, 60, 40, 255}
	cum := 0
	for i := 0; i < buckets && i < len(hist); i++ {
		x0, x1 := i*w/buckets, (i+1)*w/buckets
		top := h - 1 - hist[i]*(h-10)/peak
		for x := x0; x < x1; x++ {
			for y := top; y < h; y++ {
				img.Set(x, y, bar)
			}
		}
		cum += hist[i]
		if total > 0 {
			y := h - 1 - cum*(h-10)/total
			for x := x0; x < x1; x++ {
				img.Set(x, y, line)
				img.Set(x, y-1, line)
			}
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return png.Encode(f, img)
}

const docsBegin, docsEnd = "<!-- bench:begin -->", "<!-- bench:end -->"

// updateDocs replaces the results between the markers of docs (creating
// the file when missing).
func updateDocs(path, md, stamp string) error {
	body := docsBegin + "\n" + md + "\nLatency plot (steady-latency, 0–200 ms, bars per 1 ms, red: cumulative): `bench/results/" +
		stamp + "-latency.png`.\n" + docsEnd
	old, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(old), docsBegin) {
		return os.WriteFile(path, []byte("# Benchmarks\n\n"+body+"\n"), 0o644)
	}
	s := string(old)
	i, j := strings.Index(s, docsBegin), strings.Index(s, docsEnd)
	if j < i {
		return fmt.Errorf("%s: bench markers out of order", path)
	}
	return os.WriteFile(path, []byte(s[:i]+body+s[j+len(docsEnd):]), 0o644)
}
