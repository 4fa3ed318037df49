package featureserver

import (
	"reflect"
	"testing"
)

// fastRequestSeeds are bodies in and just outside the fast path's shape.
var fastRequestSeeds = []string{
	batchRequestBody(1, 2, 3, 4, 5),
	batchRequestBody(1),
	`{"params":{"workspace_name":"prod","feature_service_name":"promo_fs","join_key_map":{"user_id":"u1"},"metadata_options":{"include_names":true},"request_options":{"read_from_cache":false,"write_to_cache":true,"ignore_extra_request_context_fields":true}}}`,
	` { "params" : { "feature_service_name" : "promo_fs" , "workspace_name" : "prod" , "request_data" : [ { "join_key_map" : { "user_id" : "u1" , "b" : "c" } } ] } } `,
	`{"params":{"workspace_name":"prod","feature_service_name":"promo_fs","request_data":[{"join_key_map":{"user_id":"u1"}}],"request_data":[{"join_key_map":{"user_id":"u2"}}]}}`,
	`{"params":{"workspace_name":"prod","feature_service_name":"promo_fs","request_data":[{"join_key_map":{"user_id":"u1","user_id":"u2"}}]}}`,
	`{"params":{"workspaceName":"prod","feature_service_name":"promo_fs","request_data":[{"join_key_map":{"user_id":"u1"}}]}}`,
	`{"params":{"workspace_name":"prod","feature_service_name":"promo_fs","request_data":[{"join_key_map":{"user_id":7}}]}}`,
	`{"params":{"workspace_name":"prod","feature_service_name":"promo_fs","request_data":[{"join_key_map":{"user_id":"u\u0031"}}]}}`,
	`{"params":{"workspace_name":"prod","feature_service_name":"promo_fs","request_data":[]}}`,
	`{"params":{"workspace_name":"prod","feature_service_name":"promo_fs","request_data":[{"join_key_map":{}}]}}`,
	`{"params":{"workspace_name":"prod","feature_service_name":"promo_fs","metadata_options":null,"request_data":[{"join_key_map":{"user_id":"u1"}}]}}`,
	`{"params":{"workspace_name":"prod","feature_service_name":"promo_fs","request_data":[{"join_key_map":{"user_id":"u1"}}]}} {}`,
}

// FuzzParseRequestFastMatches checks the fast path of parseFeaturesRequest against the general
// parser: whatever body the fast path accepts, the general parser accepts with an equal
// request. The fast path may decline any body; it must never accept one the general parser
// rejects (the server would become kinder) nor read it differently.
func FuzzParseRequestFastMatches(f *testing.F) {
	for _, s := range fastRequestSeeds {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, body []byte, batch bool) {
		fast, ok := parseRequestFast(body, batch)
		if !ok {
			return
		}
		want, aerr := parseFeaturesRequestJSON(body, batch)
		if aerr != nil {
			t.Fatalf("fast path accepted a body the general parser rejects: %d %s", aerr.status, aerr.msg)
		}
		if !reflect.DeepEqual(fast, want) {
			t.Fatalf("fast path read %+v, general parser %+v", fast, want)
		}
	})
}

// TestParseRequestFastTakesClientShape checks that the bodies tecton.Client sends take the fast
// path (else it would be dead code) and that others are left to the general parser.
func TestParseRequestFastTakesClientShape(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		batch bool
		fast  bool
	}{
		{"batch of 5", fastRequestSeeds[0], true, true},
		{"batch of 1", fastRequestSeeds[1], true, true},
		{"single with options", fastRequestSeeds[2], false, true},
		{"spaced", fastRequestSeeds[3], true, true},
		{"single body on the batch path", fastRequestSeeds[2], true, false},
		{"duplicate field", fastRequestSeeds[4], true, false},
		{"duplicate join key", fastRequestSeeds[5], true, false},
		{"camelCase", fastRequestSeeds[6], true, false},
		{"integer join key", fastRequestSeeds[7], true, false},
		{"escape", fastRequestSeeds[8], true, false},
		{"no rows", fastRequestSeeds[9], true, false},
		{"empty join_key_map", fastRequestSeeds[10], true, false},
		{"null member", fastRequestSeeds[11], true, false},
		{"trailing data", fastRequestSeeds[12], true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fast, ok := parseRequestFast([]byte(tt.body), tt.batch)
			if ok != tt.fast {
				t.Fatalf("fast path taken = %v, want %v", ok, tt.fast)
			}
			if !ok {
				return
			}
			want, aerr := parseFeaturesRequestJSON([]byte(tt.body), tt.batch)
			if aerr != nil {
				t.Fatalf("general parser: %s", aerr.msg)
			}
			if !reflect.DeepEqual(fast, want) {
				t.Fatalf("fast path read %+v, general parser %+v", fast, want)
			}
		})
	}
}

// TestUnknownJoinKeyReportedInOrder checks that of several unknown join keys (the empty name
// among them) the first in bytewise order is reported, whatever the map order.
func TestUnknownJoinKeyReportedInOrder(t *testing.T) {
	fields := []Field{{Name: "user_id", Type: String}}
	tests := []struct {
		keys map[string]string
		want string
		ok   bool
	}{
		{map[string]string{"user_id": "u1"}, "", false},
		{map[string]string{"user_id": "u1", "z": "1", "b": "2", "m": "3"}, "b", true},
		{map[string]string{"user_id": "u1", "": "1", "a": "2"}, "", true},
	}
	for _, tt := range tests {
		for range 20 { // map order varies between iterations
			got, ok := firstUnknown(tt.keys, fields)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("firstUnknown(%v) = %q, %v; want %q, %v", tt.keys, got, ok, tt.want, tt.ok)
			}
		}
	}
}
