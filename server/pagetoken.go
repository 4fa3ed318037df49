package server

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"time"

	"github.com/outflow-dev/outflow/store"
)

// pageTokens makes and reads page tokens: the position after the last row
// of a page plus the filter and tenant it belongs to, MACed with a key every
// replica shares (store.ServerKey), so a client can neither forge a position
// nor reuse a token with another filter.
type pageTokens struct {
	key []byte
}

type pageToken struct {
	Tenant string `json:"t"`
	Filter string `json:"f"`
	Time   int64  `json:"c"` // create_time, unix microseconds (PostgreSQL's precision)
	ID     string `json:"i"`
}

const pageTokenMACLen = 16

var (
	errBadPageToken     = errors.New("invalid page token; pass the next_page_token of the previous page unchanged")
	errPageTokenChanged = errors.New("the page token belongs to another query; keep the filter of the first page")
)

func (p pageTokens) encode(tenant, filter string, last store.Cursor) string {
	payload, _ := json.Marshal(pageToken{Tenant: tenant, Filter: filter, Time: last.CreateTime.UnixMicro(), ID: last.ID})
	return base64.RawURLEncoding.EncodeToString(append(payload, p.mac(payload)...))
}

func (p pageTokens) decode(token, tenant, filter string) (*store.Cursor, error) {
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(raw) <= pageTokenMACLen {
		return nil, errBadPageToken
	}
	payload, mac := raw[:len(raw)-pageTokenMACLen], raw[len(raw)-pageTokenMACLen:]
	if !hmac.Equal(mac, p.mac(payload)) {
		return nil, errBadPageToken
	}
	var t pageToken
	if err := json.Unmarshal(payload, &t); err != nil {
		return nil, errBadPageToken
	}
	if t.Tenant != tenant || t.Filter != filter {
		return nil, errPageTokenChanged
	}
	return &store.Cursor{CreateTime: time.UnixMicro(t.Time), ID: t.ID}, nil
}

func (p pageTokens) mac(payload []byte) []byte {
	h := hmac.New(sha256.New, p.key)
	h.Write([]byte("outflow page token v1\x00"))
	h.Write(payload)
	return h.Sum(nil)[:pageTokenMACLen]
}
