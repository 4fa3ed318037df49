package featureserver

import (
	"bytes"
	"hash/fnv"
	"math"
	"testing"
	"time"
)

// responseCase builds the rows of an answer of the demo catalog's service from fuzzed inputs.
func responseCase(t testing.TB, service string, rows int, str, status string, f float64, b bool, ns int64, mask uint8) (*serviceDef, [][]cell) {
	t.Helper()
	srv, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	svc, aerr := srv.lookupService("prod", service)
	if aerr != nil {
		t.Fatal(aerr.msg)
	}
	out := make([][]cell, rows)
	for r := range out {
		cells := make([]cell, len(svc.features))
		for i := range cells {
			var v any
			switch (int(mask) + r + i) % 5 {
			case 0:
				v = str
			case 1:
				v = f
			case 2:
				v = b
			case 3:
				v = ns - int64(mask)
			}
			c := cell{value: v, status: status}
			if (int(mask)>>4+r+i)%3 != 0 {
				c.effective = time.Unix(0, ns+int64(r)).In(time.FixedZone("x", 3600))
				c.hasEffective = true
			}
			cells[i] = c
		}
		out[r] = cells
	}
	return svc, out
}

// FuzzAppendFeaturesResponse holds appendFeaturesResponse to the bytes encoding/json writes for
// the same answer (marshal of buildFeaturesResponse), for any values, statuses, effective
// times, metadata options, row counts and both endpoints.
func FuzzAppendFeaturesResponse(f *testing.F) {
	f.Add("u1", "PRESENT", 3.25, true, int64(1764847170123456789), uint8(0), uint8(0x1f), uint8(5), true, 0.0001)
	f.Add("a\"b\\c\n\x01\u2028\xff<&>", "", 1e21, false, int64(0), uint8(7), uint8(0), uint8(1), false, 1e-7)
	f.Add("", "MISSING_DATA", math.Copysign(0, -1), false, int64(-1), uint8(200), uint8(0x0a), uint8(3), true, 123456.0)
	f.Fuzz(func(t *testing.T, str, status string, fv float64, b bool, ns int64, mask, opts, rows uint8, batch bool, slo float64) {
		n := int(rows%MaxBatchSize) + 1
		if !batch {
			n = 1
		}
		service := "promo_fs"
		if mask&8 != 0 {
			service = "promo_realtime_fs"
		}
		svc, cells := responseCase(t, service, n, str, status, fv, b, ns, mask)
		meta := metadataOptions{names: opts&1 != 0, effectiveTimes: opts&2 != 0, dataTypes: opts&4 != 0,
			sloInfo: opts&8 != 0, servingStatus: opts&16 != 0}
		info := sloInfo{SLOEligible: true, SLOServerTimeSeconds: slo, ServerTimeSeconds: slo}
		want, werr := marshal(buildFeaturesResponse(svc, meta, cells, batch, info))
		got, ok := appendFeaturesResponse(nil, svc, meta, cells, batch, info)
		if !ok || werr != nil {
			if ok == (werr == nil) {
				return // both refuse (a non-finite float)
			}
			t.Fatalf("appendFeaturesResponse ok = %v, encoding/json error = %v", ok, werr)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("appendFeaturesResponse wrote\n%s\nencoding/json\n%s", got, want)
		}
	})
}

// BenchmarkAppendFeaturesResponse encodes a full batch answer of promo_fs with every metadata
// option Outflow's client asks for; BenchmarkMarshalFeaturesResponse the same with
// encoding/json, as the feature server did before.
func BenchmarkAppendFeaturesResponse(b *testing.B) {
	svc, cells := responseCase(b, "promo_fs", MaxBatchSize, "12", "PRESENT", 31.25, true, 1764847170123456789, 0x10)
	meta := metadataOptions{names: true, effectiveTimes: true, dataTypes: true, servingStatus: true}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := appendFeaturesResponse(make([]byte, 0, 512*MaxBatchSize), svc, meta, cells, true, sloInfo{}); !ok {
			b.Fatal("not encoded")
		}
	}
}

func BenchmarkMarshalFeaturesResponse(b *testing.B) {
	svc, cells := responseCase(b, "promo_fs", MaxBatchSize, "12", "PRESENT", 31.25, true, 1764847170123456789, 0x10)
	meta := metadataOptions{names: true, effectiveTimes: true, dataTypes: true, servingStatus: true}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := marshal(buildFeaturesResponse(svc, meta, cells, true, sloInfo{})); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzFNV64a holds the inline FNV-1a of synthetic to hash/fnv's.
func FuzzFNV64a(f *testing.F) {
	f.Add("user_stats", "lifetime_value", "u1")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		h := fnv.New64a()
		h.Write([]byte(a))
		h.Write([]byte{0})
		h.Write([]byte(b))
		h.Write([]byte{0})
		h.Write([]byte(c))
		got := fnv64a(fnv64a(fnv64a(fnv64a(fnv64a(fnvOffset64, a), "\x00"), b), "\x00"), c)
		if got != h.Sum64() {
			t.Fatalf("fnv64a = %x, hash/fnv = %x", got, h.Sum64())
		}
	})
}
