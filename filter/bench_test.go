package filter

import "testing"

func BenchmarkMatch(b *testing.B) {
	env, _ := NewEnv()
	f, _ := env.Compile(`record.entity_keys["user_id"].startsWith("vip_")`)
	rec := testRecord()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Match(rec); err != nil {
			b.Fatal(err)
		}
	}
}
