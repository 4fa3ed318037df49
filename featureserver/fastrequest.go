package featureserver

// The fast path of parseFeaturesRequest.
//
// Reading a request with readObject (encoding/json into a map per object level, every key
// matched against every field in both spellings, a second Unmarshal per value) was half of
// the reference feature server's CPU per get-features-batch call, and the feature server
// shares the machine with the gateway in issue 10's STRICT benchmark. parseRequestFast reads
// the body Outflow's own tecton.Client sends — snake_case field names, string join keys, true
// and false options, nothing else — in one pass, and returns ok false on anything else: other
// spellings, other fields, request_context_map, nulls, escapes, integer join keys, duplicate
// keys, empty names, a row count outside 1 to MaxBatchSize. parseFeaturesRequest then parses
// the body as before, so every error message, every accepted spelling and every check is
// unchanged: the server is exactly as strict as before, only cheaper for the common body.
// FuzzParseRequestFastMatches checks that whatever the fast path accepts, the full parser
// accepts with an equal result.

// reqScanner reads JSON tokens from b at i.
type reqScanner struct {
	b []byte
	i int
}

func (s *reqScanner) next() (byte, bool) {
	for s.i < len(s.b) {
		switch c := s.b[s.i]; c {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return c, true
		}
	}
	return 0, false
}

func (s *reqScanner) consume(c byte) bool {
	if n, ok := s.next(); ok && n == c {
		s.i++
		return true
	}
	return false
}

// str reads a non-empty string of printable ASCII without escapes.
func (s *reqScanner) str() (string, bool) {
	if !s.consume('"') {
		return "", false
	}
	start := s.i
	for j := start; j < len(s.b); j++ {
		c := s.b[j]
		if c == '"' {
			s.i = j + 1
			if j == start {
				return "", false
			}
			return string(s.b[start:j]), true
		}
		if c < 0x20 || c == '\\' || c >= 0x80 {
			return "", false
		}
	}
	return "", false
}

// key reads an object key and its colon; keys are compared without allocating.
func (s *reqScanner) key() ([]byte, bool) {
	if !s.consume('"') {
		return nil, false
	}
	start := s.i
	for j := start; j < len(s.b); j++ {
		c := s.b[j]
		if c == '"' {
			s.i = j + 1
			return s.b[start:j], s.consume(':')
		}
		if c < 0x20 || c == '\\' || c >= 0x80 {
			return nil, false
		}
	}
	return nil, false
}

func (s *reqScanner) boolean() (bool, bool) {
	if _, ok := s.next(); !ok {
		return false, false
	}
	rest := s.b[s.i:]
	switch {
	case len(rest) >= 4 && string(rest[:4]) == "true":
		s.i += 4
		return true, true
	case len(rest) >= 5 && string(rest[:5]) == "false":
		s.i += 5
		return false, true
	}
	return false, false
}

// object reads the members of an object, calling member for each key; keys must be distinct
// (seen tracks them by the index member returns, at most 16 distinct).
func (s *reqScanner) object(member func(key []byte) (index int, ok bool)) bool {
	if !s.consume('{') {
		return false
	}
	if s.consume('}') {
		return true
	}
	var seen uint16
	for {
		k, ok := s.key()
		if !ok {
			return false
		}
		idx, ok := member(k)
		if !ok || idx < 0 || idx >= 16 || seen&(1<<idx) != 0 {
			return false
		}
		seen |= 1 << idx
		if s.consume(',') {
			continue
		}
		return s.consume('}')
	}
}

// parseRequestFast is the fast path of parseFeaturesRequest (see above).
func parseRequestFast(body []byte, batch bool) (*featuresRequest, bool) {
	s := &reqScanner{b: body}
	req := &featuresRequest{readFromCache: true, writeToCache: true}
	var hasRows bool
	ok := s.object(func(k []byte) (int, bool) {
		if string(k) != "params" {
			return 0, false
		}
		return 0, s.object(func(k []byte) (int, bool) {
			switch string(k) {
			case "workspace_name":
				var ok bool
				req.workspace, ok = s.str()
				return 0, ok
			case "feature_service_name":
				var ok bool
				req.service, ok = s.str()
				return 1, ok
			case "metadata_options":
				return 2, s.object(func(k []byte) (int, bool) {
					var dst *bool
					idx := 0
					switch string(k) {
					case "include_names":
						dst, idx = &req.meta.names, 0
					case "include_effective_times":
						dst, idx = &req.meta.effectiveTimes, 1
					case "include_data_types":
						dst, idx = &req.meta.dataTypes, 2
					case "include_slo_info":
						dst, idx = &req.meta.sloInfo, 3
					case "include_serving_status":
						dst, idx = &req.meta.servingStatus, 4
					default:
						return 0, false
					}
					v, ok := s.boolean()
					*dst = v
					return idx, ok
				})
			case "request_options":
				return 3, s.object(func(k []byte) (int, bool) {
					var dst *bool
					idx := 0
					switch string(k) {
					case "read_from_cache":
						dst, idx = &req.readFromCache, 0
					case "write_to_cache":
						dst, idx = &req.writeToCache, 1
					case "ignore_extra_request_context_fields":
						dst, idx = &req.ignoreExtraContext, 2
					default:
						return 0, false
					}
					v, ok := s.boolean()
					*dst = v
					return idx, ok
				})
			case "join_key_map":
				if batch {
					return 0, false
				}
				hasRows = true
				row, ok := s.row()
				req.rows = []requestRow{row}
				return 4, ok
			case "request_data":
				if !batch {
					return 0, false
				}
				hasRows = true
				if !s.consume('[') {
					return 0, false
				}
				for {
					if len(req.rows) == MaxBatchSize {
						return 0, false
					}
					var row requestRow
					if !s.object(func(k []byte) (int, bool) {
						if string(k) != "join_key_map" {
							return 0, false
						}
						var ok bool
						row, ok = s.row()
						return 0, ok
					}) || row.joinKeys == nil {
						return 0, false
					}
					req.rows = append(req.rows, row)
					if s.consume(',') {
						continue
					}
					return 5, s.consume(']')
				}
			}
			return 0, false
		})
	})
	if _, more := s.next(); !ok || more || !hasRows || req.workspace == "" || req.service == "" {
		return nil, false
	}
	return req, true
}

// row reads a non-empty join_key_map of string values.
func (s *reqScanner) row() (requestRow, bool) {
	keys := make(map[string]string, 1)
	if !s.consume('{') || s.consume('}') {
		return requestRow{}, false
	}
	for {
		name, ok := s.str()
		if !ok || !s.consume(':') {
			return requestRow{}, false
		}
		if _, dup := keys[name]; dup {
			return requestRow{}, false
		}
		if keys[name], ok = s.str(); !ok {
			return requestRow{}, false
		}
		if s.consume(',') {
			continue
		}
		return requestRow{joinKeys: keys}, s.consume('}')
	}
}
