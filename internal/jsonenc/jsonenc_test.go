package jsonenc

import (
	"bytes"
	"encoding/json"
	"testing"
)

// marshal is what AppendString must match: encoding/json, with or without HTML escaping.
func marshal(t testing.TB, s string, escapeHTML bool) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(escapeHTML)
	if err := enc.Encode(s); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

func TestAppendString(t *testing.T) {
	for _, s := range []string{"", "plain", `q"b\s`, "ctl\x00\x01\b\f\n\r\t\x1f", "<a&b>", "bad\xffutf8", "ls\u2028ps\u2029", "é漢🙂"} {
		for _, html := range []bool{false, true} {
			if got, want := AppendString(nil, s, html), marshal(t, s, html); !bytes.Equal(got, want) {
				t.Errorf("AppendString(%q, html=%v) = %s, want %s", s, html, got, want)
			}
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "x", `"\`, "<>&", "\xff", "\u2028"} {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, html bool) {
		if got, want := AppendString([]byte("pre"), s, html), append([]byte("pre"), marshal(t, s, html)...); !bytes.Equal(got, want) {
			t.Fatalf("AppendString(%q, html=%v) = %s, want %s", s, html, got, want)
		}
	})
}
