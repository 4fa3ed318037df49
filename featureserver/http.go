package featureserver

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Paths of the endpoints Handler serves, as in Tecton's HTTP API. All but HealthPath take POST.
const (
	// GetFeaturesPath returns one feature vector for one set of join keys.
	GetFeaturesPath = "/api/v1/feature-service/get-features"
	// GetFeaturesBatchPath returns one feature vector per request_data row, at most
	// MaxBatchSize rows.
	GetFeaturesBatchPath = "/api/v1/feature-service/get-features-batch"
	// MetadataPath describes a feature service: its join keys, request context keys and
	// features with their types.
	MetadataPath = "/api/v1/feature-service/metadata"
	// HealthPath answers GET with 200 and no authentication, for readiness checks; it is
	// not part of Tecton's API.
	HealthPath = "/healthz"
)

// Serving statuses, as Tecton reports them with include_serving_status.
const (
	statusPresent           = "PRESENT"
	statusMissingData       = "MISSING_DATA"
	statusCachedPresent     = "CACHED_PRESENT"
	statusCachedMissingData = "CACHED_MISSING_DATA"
)

// apiError is an error answer: its HTTP status and a message safe to show the client.
type apiError struct {
	status int
	msg    string
	// retryAfter, when positive, is sent as a Retry-After header.
	retryAfter time.Duration
}

func badRequest(format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// grpcCode is the gRPC status code behind an HTTP status, which Tecton reports as "code".
func grpcCode(status int) int {
	switch status {
	case http.StatusBadRequest:
		return 3 // INVALID_ARGUMENT
	case http.StatusUnauthorized:
		return 16 // UNAUTHENTICATED
	case http.StatusForbidden:
		return 7 // PERMISSION_DENIED
	case http.StatusNotFound:
		return 5 // NOT_FOUND
	case http.StatusMethodNotAllowed, http.StatusNotImplemented:
		return 12 // UNIMPLEMENTED
	case http.StatusConflict:
		return 10 // ABORTED
	case http.StatusTooManyRequests:
		return 8 // RESOURCE_EXHAUSTED
	case http.StatusInternalServerError:
		return 13 // INTERNAL
	case http.StatusServiceUnavailable, http.StatusBadGateway:
		return 14 // UNAVAILABLE
	case http.StatusGatewayTimeout:
		return 4 // DEADLINE_EXCEEDED
	default:
		return 2 // UNKNOWN
	}
}

// errorBody is Tecton's error answer. "error" and "message" carry the same text, as Tecton's
// do; clients read either.
type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
	Code    int    `json:"code"`
}

// Response shapes. Names are lowerCamelCase, as Tecton's servers emit them.
type (
	featuresResponse struct {
		Result   resultRow         `json:"result"`
		Metadata *responseMetadata `json:"metadata,omitempty"`
	}
	batchResponse struct {
		Result   []resultRow    `json:"result"`
		Metadata *batchMetadata `json:"metadata,omitempty"`
	}
	resultRow struct {
		Features []any `json:"features"`
	}
	responseMetadata struct {
		Features []featureMetadata `json:"features,omitempty"`
		SLOInfo  *sloInfo          `json:"sloInfo,omitempty"`
	}
	batchMetadata struct {
		Features     []featureMetadata `json:"features,omitempty"`
		SLOInfo      []sloInfo         `json:"sloInfo,omitempty"`
		BatchSLOInfo *sloInfo          `json:"batchSloInfo,omitempty"`
	}
	// featureMetadata is one entry of metadata.features. In a batch answer EffectiveTime and
	// Status are lists with one entry per row.
	featureMetadata struct {
		Name          string    `json:"name,omitempty"`
		EffectiveTime any       `json:"effectiveTime,omitempty"`
		DataType      *dataType `json:"dataType,omitempty"`
		Status        any       `json:"status,omitempty"`
	}
	dataType struct {
		Type string `json:"type"`
	}
	sloInfo struct {
		SLOEligible          bool    `json:"sloEligible"`
		SLOServerTimeSeconds float64 `json:"sloServerTimeSeconds"`
		ServerTimeSeconds    float64 `json:"serverTimeSeconds"`
		StoreMaxLatency      float64 `json:"storeMaxLatency"`
	}
	serviceMetadataResponse struct {
		FeatureServiceType      string        `json:"featureServiceType"`
		InputJoinKeys           []nameAndType `json:"inputJoinKeys"`
		InputRequestContextKeys []nameAndType `json:"inputRequestContextKeys"`
		FeatureValues           []nameAndType `json:"featureValues"`
	}
	// nameAndType carries the type twice: dataType as current servers send it, and the older
	// flat "type" that Tecton's Java client samples still show.
	nameAndType struct {
		Name     string   `json:"name"`
		DataType dataType `json:"dataType"`
		Type     string   `json:"type"`
	}
)

// requestLog collects what the debug line of a request reports.
type requestLog struct {
	workspace, service string
	rows               int
}

// Handler returns the HTTP handler of Tecton's feature server API: get-features,
// get-features-batch and metadata under /api/v1/feature-service/, plus HealthPath. Every
// answer is JSON; errors are {"error", "message", "code"}. It logs one debug line per request.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(s.serveHTTP)
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var info requestLog
	body, aerr := s.route(w, r, start, &info)
	status := http.StatusOK
	if aerr != nil {
		status = aerr.status
		if aerr.retryAfter > 0 {
			secs := max(1, int64((aerr.retryAfter+time.Second-1)/time.Second))
			w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		}
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", "Tecton-key")
		}
		if status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", allowedMethod(r.URL.Path))
		}
		body = errorBody{Error: aerr.msg, Message: aerr.msg, Code: grpcCode(status)}
	}
	data, err := marshal(body)
	if err != nil {
		// Only a non-finite float could cause this, and convert rejects those.
		s.logger.ErrorContext(r.Context(), "encoding response", slog.Any("error", err))
		status = http.StatusInternalServerError
		data, _ = json.Marshal(errorBody{Error: "internal error", Message: "internal error", Code: grpcCode(status)})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(data)

	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Int("status", status),
		slog.Duration("duration", time.Since(start)),
	}
	if info.service != "" {
		attrs = append(attrs, slog.String("workspace", info.workspace), slog.String("feature_service", info.service), slog.Int("rows", info.rows))
	}
	if aerr != nil {
		attrs = append(attrs, slog.String("error", aerr.msg))
	}
	s.logger.LogAttrs(r.Context(), slog.LevelDebug, "feature server request", attrs...)
}

// marshal encodes v as compact JSON without escaping <, > and &, which would only make error
// messages such as "Tecton-key <key>" harder to read.
func marshal(v any) ([]byte, error) {
	if raw, ok := v.(rawJSON); ok {
		return raw, nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func allowedMethod(path string) string {
	if path == HealthPath {
		return http.MethodGet
	}
	return http.MethodPost
}

// route authenticates, reads the body, injects faults and dispatches to the endpoint.
func (s *Server) route(w http.ResponseWriter, r *http.Request, start time.Time, info *requestLog) (any, *apiError) {
	var endpoint func(body []byte, start time.Time, info *requestLog) (any, *apiError)
	switch r.URL.Path {
	case GetFeaturesPath:
		endpoint = func(body []byte, start time.Time, info *requestLog) (any, *apiError) {
			return s.getFeatures(body, false, start, info)
		}
	case GetFeaturesBatchPath:
		endpoint = func(body []byte, start time.Time, info *requestLog) (any, *apiError) {
			return s.getFeatures(body, true, start, info)
		}
	case MetadataPath:
		endpoint = s.metadata
	case HealthPath:
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return nil, &apiError{status: http.StatusMethodNotAllowed, msg: "use GET"}
		}
		return map[string]string{"status": "ok"}, nil
	default:
		return nil, &apiError{status: http.StatusNotFound, msg: "no such endpoint: " + quote(r.URL.Path)}
	}
	if r.Method != http.MethodPost {
		return nil, &apiError{status: http.StatusMethodNotAllowed, msg: "use POST"}
	}
	if aerr := s.authenticate(r); aerr != nil {
		return nil, aerr
	}
	// Read the body before any injected latency: net/http notices a client that hangs up
	// only once the body is consumed, and the wait must end when the client gives up.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
			return nil, badRequest("request body exceeds %d bytes", s.cfg.MaxBodyBytes)
		}
		return nil, badRequest("reading request body: %s", err.Error())
	}
	if aerr := s.injectFault(r); aerr != nil {
		return nil, aerr
	}
	return endpoint(body, start, info)
}

// authenticate checks "Authorization: Tecton-key <key>" when an API key is configured.
func (s *Server) authenticate(r *http.Request) *apiError {
	if s.cfg.APIKey == "" {
		return nil
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return &apiError{status: http.StatusUnauthorized, msg: "missing Authorization header; want \"Tecton-key <key>\""}
	}
	scheme, key, ok := strings.Cut(strings.TrimSpace(h), " ")
	key = strings.TrimSpace(key)
	if !ok || !strings.EqualFold(scheme, "Tecton-key") || key == "" {
		return &apiError{status: http.StatusUnauthorized, msg: "malformed Authorization header; want \"Tecton-key <key>\""}
	}
	if subtle.ConstantTimeCompare([]byte(key), []byte(s.cfg.APIKey)) != 1 {
		return &apiError{status: http.StatusForbidden, msg: "the API key is not authorized"}
	}
	return nil
}

// injectFault applies Faults to one request: waits out the latency, then fails it if due.
func (s *Server) injectFault(r *http.Request) *apiError {
	f := s.nextFault()
	if f.latency > 0 {
		t := time.NewTimer(f.latency)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return &apiError{status: http.StatusServiceUnavailable, msg: "request cancelled during injected latency"}
		}
	}
	if !f.fail {
		return nil
	}
	aerr := &apiError{status: f.status, msg: "injected fault: " + strings.ToLower(http.StatusText(f.status))}
	if f.status == http.StatusTooManyRequests || f.status == http.StatusServiceUnavailable {
		aerr.retryAfter = f.retryAfter
	}
	return aerr
}

// lookupService finds a feature service; unknown names are a 404, as in Tecton.
func (s *Server) lookupService(workspace, service string) (*serviceDef, *apiError) {
	services, ok := s.catalog.workspaces[workspace]
	if !ok {
		return nil, &apiError{status: http.StatusNotFound, msg: "workspace " + quote(workspace) + " not found"}
	}
	svc, ok := services[service]
	if !ok {
		return nil, &apiError{status: http.StatusNotFound, msg: "feature service " + quote(service) + " not found in workspace " + quote(workspace)}
	}
	return svc, nil
}

// cell is one feature value of one row, with its metadata.
type cell struct {
	// value is the typed value (int64, float64, string, bool) or nil; the encoders write an
	// int64 as a decimal string, as Tecton does (wireValue), without converting it first.
	value        any
	effective    time.Time
	hasEffective bool
	status       string
}

func (s *Server) getFeatures(body []byte, batch bool, start time.Time, info *requestLog) (any, *apiError) {
	req, aerr := parseFeaturesRequest(body, batch)
	if aerr != nil {
		return nil, aerr
	}
	svc, aerr := s.lookupService(req.workspace, req.service)
	if aerr != nil {
		return nil, aerr
	}
	info.workspace, info.service, info.rows = req.workspace, req.service, len(req.rows)
	now := s.cfg.Now()
	rows := make([][]cell, len(req.rows))
	for i, row := range req.rows {
		cells, aerr := s.resolve(svc, req, row, now)
		if aerr != nil {
			if batch {
				aerr.msg = fmt.Sprintf("params.request_data[%d]: %s", i, aerr.msg)
			}
			return nil, aerr
		}
		rows[i] = cells
	}
	serverTime := time.Since(start).Seconds()
	slo := sloInfo{SLOEligible: true, SLOServerTimeSeconds: serverTime, ServerTimeSeconds: serverTime}
	if data, ok := appendFeaturesResponse(make([]byte, 0, 512*len(rows)), svc, req.meta, rows, batch, slo); ok {
		return rawJSON(data), nil
	}
	return buildFeaturesResponse(svc, req.meta, rows, batch, slo), nil
}

// buildFeaturesResponse returns the answer as values for encoding/json: the reference
// appendFeaturesResponse is held to, and the path of an answer it cannot write.
func buildFeaturesResponse(svc *serviceDef, opts metadataOptions, rows [][]cell, batch bool, slo sloInfo) any {
	if !batch {
		resp := featuresResponse{Result: resultRow{Features: values(rows[0])}}
		md := &responseMetadata{Features: featureMetadataList(svc, opts, rows, false)}
		if opts.sloInfo {
			md.SLOInfo = &slo
		}
		if md.Features != nil || md.SLOInfo != nil {
			resp.Metadata = md
		}
		return resp
	}
	resp := batchResponse{Result: make([]resultRow, len(rows))}
	for i := range rows {
		resp.Result[i] = resultRow{Features: values(rows[i])}
	}
	md := &batchMetadata{Features: featureMetadataList(svc, opts, rows, true)}
	if opts.sloInfo {
		md.SLOInfo = slices.Repeat([]sloInfo{slo}, len(rows))
		md.BatchSLOInfo = &slo
	}
	if md.Features != nil || md.SLOInfo != nil {
		resp.Metadata = md
	}
	return resp
}

// resolve checks one row's join keys and request context against the feature service and
// reads its values.
func (s *Server) resolve(svc *serviceDef, req *featuresRequest, row requestRow, now time.Time) ([]cell, *apiError) {
	joinKeys := make(map[string]string, len(svc.joinKeys))
	// Unknown keys are looked for in map order, which is cheap, and reported in name order,
	// so that the error names the same key every time.
	if unknown, ok := firstUnknown(row.joinKeys, svc.joinKeys); ok {
		return nil, badRequest("unknown join key %s; feature service %s takes %s", quote(unknown), quote(svc.name), fieldNames(svc.joinKeys))
	}
	for _, jk := range svc.joinKeys {
		raw, ok := row.joinKeys[jk.Name]
		if !ok {
			return nil, badRequest("missing join key %s", quote(jk.Name))
		}
		v, err := normalizeJoinKey(jk.Type, raw)
		if err != nil {
			return nil, badRequest("join key %s must be an int64", quote(jk.Name))
		}
		joinKeys[jk.Name] = v
	}
	if !req.ignoreExtraContext {
		if unknown, ok := firstUnknown(row.requestContext, svc.requestContext); ok {
			return nil, badRequest("unknown request context key %s", quote(unknown))
		}
	}
	var contextValues map[string]any
	if len(svc.requestContext) > 0 {
		contextValues = make(map[string]any, len(svc.requestContext))
	}
	for _, f := range svc.requestContext {
		raw, ok := row.requestContext[f.Name]
		if !ok {
			return nil, badRequest("missing request context key %s", quote(f.Name))
		}
		v, ok := contextValue(f.Type, raw)
		if !ok {
			return nil, badRequest("request context key %s must be a %s", quote(f.Name), f.Type)
		}
		contextValues[f.Name] = v
	}

	type viewRead struct {
		view   *viewDef
		snap   snapshot
		cached bool
	}
	// A service reads a few views: a slice searched linearly costs less than a map.
	var small [4]viewRead
	reads := small[:0]
	for _, v := range svc.views {
		keys := make([]string, len(v.JoinKeys))
		for i, jk := range v.JoinKeys {
			keys[i] = joinKeys[jk.Name]
		}
		snap, cached := s.store.readCached(rowKey(v.Name, keys), now, s.cfg.CacheTTL, req.readFromCache, req.writeToCache)
		if !snap.present && v.Synthetic {
			snap = synthetic(v, keys, now)
		}
		reads = append(reads, viewRead{view: v, snap: snap, cached: cached})
	}

	cells := make([]cell, len(svc.features))
	for i, f := range svc.features {
		if f.view.OnDemand {
			cells[i] = cell{value: contextValues[f.field().Name], status: statusPresent}
			continue
		}
		var rd viewRead
		for _, r := range reads {
			if r.view == f.view {
				rd = r
				break
			}
		}
		// A key the store has never materialised answers null with MISSING_DATA and no
		// effective time at all, as Tecton does: the hard case for the consistency rule.
		// Only a view with a FeatureStartTime reports that time instead.
		var c cell
		switch {
		case rd.snap.present:
			c.value = rd.snap.values[f.index]
			c.effective, c.hasEffective = f.view.effectiveTime(rd.snap.featureTime), true
		case !f.view.FeatureStartTime.IsZero():
			c.effective, c.hasEffective = f.view.FeatureStartTime, true
		}
		switch {
		case c.value != nil && rd.cached:
			c.status = statusCachedPresent
		case c.value != nil:
			c.status = statusPresent
		case rd.cached:
			c.status = statusCachedMissingData
		default:
			c.status = statusMissingData
		}
		cells[i] = c
	}
	return cells, nil
}

// firstUnknown returns the first name of m, in bytewise order, that is not one of fields, and
// whether there is one.
func firstUnknown[V any](m map[string]V, fields []Field) (string, bool) {
	known := func(name string) bool {
		return slices.ContainsFunc(fields, func(f Field) bool { return f.Name == name })
	}
	for name := range m {
		if !known(name) {
			for _, name := range slices.Sorted(maps.Keys(m)) {
				if !known(name) {
					return name, true
				}
			}
		}
	}
	return "", false
}

func fieldNames(fields []Field) string {
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = strconv.Quote(f.Name)
	}
	return "[" + strings.Join(names, ", ") + "]"
}

func values(cells []cell) []any {
	out := make([]any, len(cells))
	for i, c := range cells {
		out[i] = wireValue(c.value)
	}
	return out
}

// formatTime is the one spelling of effective times: RFC 3339 in UTC with as many fractional
// digits as the nanoseconds need, so it round-trips exactly.
func formatTime(t time.Time) string {
	return t.UTC().Format(time.RFC3339Nano)
}

// featureMetadataList builds metadata.features with the fields the options ask for, or nil
// when they ask for none. In a batch, effective times and statuses are per-row lists.
func featureMetadataList(svc *serviceDef, opts metadataOptions, rows [][]cell, batch bool) []featureMetadata {
	if !opts.names && !opts.effectiveTimes && !opts.dataTypes && !opts.servingStatus {
		return nil
	}
	out := make([]featureMetadata, len(svc.features))
	for i, f := range svc.features {
		m := &out[i]
		if opts.names {
			m.Name = f.name
		}
		if opts.dataTypes {
			m.DataType = &dataType{Type: f.field().Type.wireName()}
		}
		if opts.effectiveTimes && !f.view.OnDemand {
			// A cell without an effective time has no effectiveTime key at all; in a batch
			// its row's entry is null, and the key is left out when no row has one.
			if batch {
				times := make([]*string, len(rows))
				some := false
				for r := range rows {
					if c := rows[r][i]; c.hasEffective {
						s := formatTime(c.effective)
						times[r], some = &s, true
					}
				}
				if some {
					m.EffectiveTime = times
				}
			} else if c := rows[0][i]; c.hasEffective {
				m.EffectiveTime = formatTime(c.effective)
			}
		}
		if opts.servingStatus {
			if batch {
				statuses := make([]string, len(rows))
				for r := range rows {
					statuses[r] = rows[r][i].status
				}
				m.Status = statuses
			} else {
				m.Status = rows[0][i].status
			}
		}
	}
	return out
}

func (s *Server) metadata(body []byte, _ time.Time, info *requestLog) (any, *apiError) {
	workspace, service, aerr := parseMetadataRequest(body)
	if aerr != nil {
		return nil, aerr
	}
	svc, aerr := s.lookupService(workspace, service)
	if aerr != nil {
		return nil, aerr
	}
	info.workspace, info.service = workspace, service
	resp := serviceMetadataResponse{
		FeatureServiceType:      "DEFAULT",
		InputJoinKeys:           nameAndTypes(svc.joinKeys),
		InputRequestContextKeys: nameAndTypes(svc.requestContext),
		FeatureValues:           make([]nameAndType, len(svc.features)),
	}
	for i, f := range svc.features {
		t := f.field().Type.wireName()
		resp.FeatureValues[i] = nameAndType{Name: f.name, DataType: dataType{Type: t}, Type: t}
	}
	return resp, nil
}

func nameAndTypes(fields []Field) []nameAndType {
	out := make([]nameAndType, len(fields))
	for i, f := range fields {
		t := f.Type.wireName()
		out[i] = nameAndType{Name: f.Name, DataType: dataType{Type: t}, Type: t}
	}
	return out
}
