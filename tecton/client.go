package tecton

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/outflow-dev/outflow/internal/httpretry"
)

// Endpoint paths, relative to Config.BaseURL.
const (
	getFeaturesPath      = "/api/v1/feature-service/get-features"
	getFeaturesBatchPath = "/api/v1/feature-service/get-features-batch"
)

// MaxBatchSize is the most Requests GetFeaturesBatch accepts in one call. Tecton's own HTTP
// clients (tecton-http-client-java and -python) split batch lookups into get-features-batch
// micro-batches of 1 to 5 rows (default 1) and reject larger sizes; Outflow keeps to the same
// limit rather than rely on an undocumented server maximum. Callers with more keys split them
// into chunks of at most MaxBatchSize and may send the chunks concurrently.
const MaxBatchSize = 5

// userAgent identifies Outflow to the feature server, for Tecton's request logs.
const userAgent = "outflow-tecton-client"

// Request asks for one feature vector.
type Request struct {
	// Workspace is the Tecton workspace holding the feature service. Required.
	Workspace string
	// FeatureService is the name of the feature service to read. Required.
	FeatureService string
	// JoinKeys maps each join key of the feature service to its value; int64 join keys are
	// written as their decimal string. Required unless RequestContext is set.
	JoinKeys map[string]string
	// RequestContext holds request-time inputs of on-demand feature views, sent as
	// request_context_map: strings and int64 (as a decimal string) as strings, doubles as
	// numbers. Optional.
	RequestContext map[string]any
	// BypassCache asks the feature server to read the online store rather than its feature
	// serving cache (request_options.read_from_cache = false). Consistency retries set it, so a
	// cached stale value cannot keep a record from ever becoming consistent (SPEC §4).
	// request_options.write_to_cache is left at its default (true), so the fresh read also
	// refreshes the cache for other readers.
	BypassCache bool
}

// validate checks what the feature server would reject anyway, without quoting join key
// values (they identify users).
func (r *Request) validate() error {
	if r.Workspace == "" {
		return errors.New("workspace is required")
	}
	if r.FeatureService == "" {
		return errors.New("feature service is required")
	}
	if len(r.JoinKeys) == 0 && len(r.RequestContext) == 0 {
		return errors.New("at least one join key or request context value is required")
	}
	for name := range r.JoinKeys {
		if name == "" {
			return errors.New("a join key has an empty name")
		}
	}
	for name := range r.RequestContext {
		if name == "" {
			return errors.New("a request context key has an empty name")
		}
	}
	return nil
}

// Client calls Tecton's GetFeatures HTTP API. It is safe for concurrent use and holds no
// per-call state. Each method call is one logical call: its HTTP transport retries connection
// failures and 429/5xx answers a bounded number of times (Config.TransportRetries), quickly,
// and nothing else (see the package documentation).
type Client struct {
	baseURL          string
	apiKey           string
	httpClient       *http.Client
	retrying         *retryablehttp.Client
	timeout          time.Duration
	maxResponseBytes int64
	logger           *slog.Logger
}

// NewClient returns a Client for cfg, after applying its defaults. It fails with an error
// wrapping ErrInvalidConfig when cfg is invalid.
func NewClient(cfg Config) (*Client, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Client{
		baseURL:    strings.TrimRight(cfg.BaseURL, "/"),
		apiKey:     cfg.APIKey,
		httpClient: cfg.HTTPClient,
		retrying: httpretry.New(httpretry.Config{
			HTTPClient: cfg.HTTPClient, RetryMax: httpretry.RetryMaxFor(cfg.TransportRetries), Logger: cfg.Logger, Component: "tecton",
		}),
		timeout:          cfg.Timeout,
		maxResponseBytes: cfg.MaxResponseBytes,
		logger:           cfg.Logger,
	}, nil
}

// String describes the Client without its API key, so that %v and %+v are safe.
func (c *Client) String() string {
	if c == nil {
		return "tecton.Client(nil)"
	}
	return fmt.Sprintf("tecton.Client{BaseURL:%q APIKey:%s Timeout:%s MaxResponseBytes:%d}",
		httpretry.RedactURL(c.baseURL), httpretry.RedactSecret(c.apiKey), c.timeout, c.maxResponseBytes)
}

// GoString returns the same redacted form as String, so that %#v is safe too.
func (c *Client) GoString() string { return c.String() }

// Wire shapes of the request body. Tecton accepts snake_case or camelCase; snake_case is
// used throughout, as in Tecton's HTTP API reference.
type (
	wireRequest struct {
		Params wireParams `json:"params"`
	}
	wireParams struct {
		WorkspaceName      string              `json:"workspace_name"`
		FeatureServiceName string              `json:"feature_service_name"`
		JoinKeyMap         map[string]string   `json:"join_key_map,omitempty"`
		RequestContextMap  map[string]any      `json:"request_context_map,omitempty"`
		RequestData        []wireRequestData   `json:"request_data,omitempty"`
		MetadataOptions    wireMetadataOptions `json:"metadata_options"`
		RequestOptions     *wireRequestOptions `json:"request_options,omitempty"`
	}
	wireRequestData struct {
		JoinKeyMap        map[string]string `json:"join_key_map,omitempty"`
		RequestContextMap map[string]any    `json:"request_context_map,omitempty"`
	}
	// wireMetadataOptions asks for everything the consistency rule and the event envelope
	// need, and nothing else (no SLO info, descriptions or tags).
	wireMetadataOptions struct {
		IncludeNames          bool `json:"include_names"`
		IncludeEffectiveTimes bool `json:"include_effective_times"`
		IncludeDataTypes      bool `json:"include_data_types"`
		IncludeServingStatus  bool `json:"include_serving_status"`
	}
	wireRequestOptions struct {
		ReadFromCache bool `json:"read_from_cache"`
	}
)

var allMetadata = wireMetadataOptions{
	IncludeNames:          true,
	IncludeEffectiveTimes: true,
	IncludeDataTypes:      true,
	IncludeServingStatus:  true,
}

// encodeRequest returns the JSON body for p: appendRequestBody's bytes when it can write them,
// json.Marshal's (the same bytes) otherwise.
func encodeRequest(p *wireParams) ([]byte, error) {
	if body, ok := appendRequestBody(make([]byte, 0, 256+len(p.RequestData)*48), p); ok {
		return body, nil
	}
	return json.Marshal(wireRequest{Params: *p})
}

func requestOptions(bypassCache bool) *wireRequestOptions {
	if !bypassCache {
		return nil // the server's default: read from and write to the cache
	}
	return &wireRequestOptions{ReadFromCache: false}
}

// GetFeatures fetches one feature vector with POST {BaseURL}/api/v1/feature-service/get-features,
// asking for names, effective times, data types and serving statuses.
//
// Errors: ErrInvalidRequest (wrapped) before anything is sent; *APIError for a non-2xx answer;
// *TransportError when no complete answer arrived; ErrResponseTooLarge (wrapped); *ParseError
// for a 2xx body that is not a GetFeatures answer. IsRetriable tells which are worth retrying.
func (c *Client) GetFeatures(ctx context.Context, req Request) (*Vector, error) {
	if err := req.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	body, err := encodeRequest(&wireParams{
		WorkspaceName:      req.Workspace,
		FeatureServiceName: req.FeatureService,
		JoinKeyMap:         req.JoinKeys,
		RequestContextMap:  req.RequestContext,
		MetadataOptions:    allMetadata,
		RequestOptions:     requestOptions(req.BypassCache),
	})
	if err != nil {
		return nil, fmt.Errorf("%w: encoding request body: %w", ErrInvalidRequest, err)
	}
	data, err := c.post(ctx, "get-features", getFeaturesPath, body)
	if err != nil {
		return nil, fmt.Errorf("get-features %s/%s: %w", req.Workspace, req.FeatureService, err)
	}
	v, err := ParseResponse(data)
	if err != nil {
		return nil, fmt.Errorf("get-features %s/%s: %w", req.Workspace, req.FeatureService, err)
	}
	return v, nil
}

// GetFeaturesBatch fetches one feature vector per request in a single call to
// POST {BaseURL}/api/v1/feature-service/get-features-batch, and returns them in request order.
//
// All requests must name the same workspace and feature service (the endpoint takes them
// once), and there must be between 1 and MaxBatchSize of them; otherwise it fails with
// ErrInvalidRequest before sending. Request options apply to the whole call, so the batch
// bypasses the cache when any request sets BypassCache: a fresher read never breaks
// consistency, a cached one might. Errors are as for GetFeatures; an answer with a different
// number of rows than requests is a non-retriable *ParseError.
func (c *Client) GetFeaturesBatch(ctx context.Context, reqs []Request) ([]*Vector, error) {
	if len(reqs) == 0 {
		return nil, fmt.Errorf("%w: empty batch", ErrInvalidRequest)
	}
	if len(reqs) > MaxBatchSize {
		return nil, fmt.Errorf("%w: batch of %d requests exceeds MaxBatchSize (%d)", ErrInvalidRequest, len(reqs), MaxBatchSize)
	}
	first := &reqs[0]
	bypass := false
	rows := make([]wireRequestData, len(reqs))
	for i := range reqs {
		r := &reqs[i]
		if err := r.validate(); err != nil {
			return nil, fmt.Errorf("%w: request %d: %w", ErrInvalidRequest, i, err)
		}
		if r.Workspace != first.Workspace || r.FeatureService != first.FeatureService {
			return nil, fmt.Errorf("%w: request %d is for %s/%s but request 0 is for %s/%s; a batch has one feature service",
				ErrInvalidRequest, i, r.Workspace, r.FeatureService, first.Workspace, first.FeatureService)
		}
		bypass = bypass || r.BypassCache
		rows[i] = wireRequestData{JoinKeyMap: r.JoinKeys, RequestContextMap: r.RequestContext}
	}
	body, err := encodeRequest(&wireParams{
		WorkspaceName:      first.Workspace,
		FeatureServiceName: first.FeatureService,
		RequestData:        rows,
		MetadataOptions:    allMetadata,
		RequestOptions:     requestOptions(bypass),
	})
	if err != nil {
		return nil, fmt.Errorf("%w: encoding request body: %w", ErrInvalidRequest, err)
	}
	data, err := c.post(ctx, "get-features-batch", getFeaturesBatchPath, body)
	if err != nil {
		return nil, fmt.Errorf("get-features-batch %s/%s: %w", first.Workspace, first.FeatureService, err)
	}
	vectors, err := ParseBatchResponse(data)
	if err == nil && len(vectors) != len(reqs) {
		err = &ParseError{Err: fmt.Errorf("batch response has %d rows for %d requests", len(vectors), len(reqs))}
	}
	if err != nil {
		return nil, fmt.Errorf("get-features-batch %s/%s: %w", first.Workspace, first.FeatureService, err)
	}
	return vectors, nil
}

// post sends one JSON POST and returns the body of a 2xx answer, bounded by maxResponseBytes.
func (c *Client) post(ctx context.Context, op, path string, body []byte) ([]byte, error) {
	callCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	httpReq, err := retryablehttp.NewRequestWithContext(callCtx, http.MethodPost, c.baseURL+path, body)
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	httpReq.Header.Set("Authorization", "Tecton-key "+c.apiKey)
	httpReq.Header.Set("Content-Type", "application/json")
	httpReq.Header.Set("Accept", "application/json")
	httpReq.Header.Set("User-Agent", userAgent)

	start := time.Now()
	resp, err := c.retrying.Do(httpReq)
	if err != nil {
		return nil, c.transportError(ctx, callCtx, err)
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		excerpt, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBodyBytes))
		// Drain a little more so that the connection can be reused; a huge error body is
		// abandoned with the connection instead.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBodyBytes))
		apiErr := newAPIError(resp.StatusCode, resp.Header, excerpt, time.Now())
		apiErr.ErrorText = c.redactKey(apiErr.ErrorText)
		apiErr.Message = c.redactKey(apiErr.Message)
		c.logCall(ctx, op, resp.StatusCode, start, len(excerpt))
		return nil, apiErr
	}

	if resp.ContentLength > c.maxResponseBytes {
		return nil, fmt.Errorf("%w: Content-Length %d exceeds MaxResponseBytes (%d)", ErrResponseTooLarge, resp.ContentLength, c.maxResponseBytes)
	}
	limit := c.maxResponseBytes
	if limit < math.MaxInt64 {
		limit++ // read one byte past the limit to tell "exactly at" from "over"
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, c.transportError(ctx, callCtx, fmt.Errorf("reading response body: %w", err))
	}
	if int64(len(data)) > c.maxResponseBytes {
		return nil, fmt.Errorf("%w: body exceeds MaxResponseBytes (%d)", ErrResponseTooLarge, c.maxResponseBytes)
	}
	c.logCall(ctx, op, resp.StatusCode, start, len(data))
	return data, nil
}

// transportError classifies a failed call. parent is the caller's context, callCtx the one
// bounded by Config.Timeout.
func (c *Client) transportError(parent, callCtx context.Context, err error) *TransportError {
	if perr := parent.Err(); perr != nil {
		// The caller gave up (shutdown, or its own deadline): retrying serves nobody.
		if !errors.Is(err, perr) {
			err = fmt.Errorf("%w: %w", perr, err)
		}
		return &TransportError{Err: err, Timeout: errors.Is(perr, context.DeadlineExceeded), Retriable: false}
	}
	if callCtx.Err() != nil {
		if !errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w after %s: %w", context.DeadlineExceeded, c.timeout, err)
		}
		return &TransportError{Err: err, Timeout: true, Retriable: true}
	}
	var netErr net.Error
	timeout := errors.As(err, &netErr) && netErr.Timeout()
	return &TransportError{Err: err, Timeout: timeout, Retriable: true}
}

// redactKey removes the API key from server-provided text, in case a server or proxy echoes
// the Authorization header back in an error body.
func (c *Client) redactKey(s string) string {
	if c.apiKey == "" || !strings.Contains(s, c.apiKey) {
		return s
	}
	return strings.ReplaceAll(s, c.apiKey, httpretry.Redacted)
}

func (c *Client) logCall(ctx context.Context, op string, status int, start time.Time, n int) {
	c.logger.LogAttrs(ctx, slog.LevelDebug, "tecton call",
		slog.String("op", op),
		slog.Int("status", status),
		slog.Duration("duration", time.Since(start)),
		slog.Int("bytes", n),
	)
}
