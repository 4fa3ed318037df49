package feast

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
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/outflow-dev/outflow/internal/httpretry"
	"github.com/outflow-dev/outflow/tecton"
)

// getOnlineFeaturesPath is the feature server's read endpoint, relative to Config.BaseURL.
const getOnlineFeaturesPath = "/get-online-features"

// userAgent identifies Outflow in the feature server's access log.
const userAgent = "outflow-feast-client"

// Client calls Feast's feature server. It is safe for concurrent use and holds no per-call
// state. It satisfies enrich.FeatureStore.
type Client struct {
	baseURL          string
	token            string
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
		token:      cfg.Token,
		httpClient: cfg.HTTPClient,
		retrying: httpretry.New(httpretry.Config{
			HTTPClient: cfg.HTTPClient, RetryMax: httpretry.RetryMaxFor(cfg.TransportRetries), Logger: cfg.Logger, Component: "feast",
		}),
		timeout:          cfg.Timeout,
		maxResponseBytes: cfg.MaxResponseBytes,
		logger:           cfg.Logger,
	}, nil
}

// String describes the Client without its token, so that %v and %+v are safe.
func (c *Client) String() string {
	if c == nil {
		return "feast.Client(nil)"
	}
	return fmt.Sprintf("feast.Client{BaseURL:%q Token:%s Timeout:%s MaxResponseBytes:%d}",
		httpretry.RedactURL(c.baseURL), httpretry.RedactSecret(c.token), c.timeout, c.maxResponseBytes)
}

// GoString returns the same redacted form as String, so that %#v is safe too.
func (c *Client) GoString() string { return c.String() }

// CloseIdleConnections closes the connections the Client keeps open to the feature server.
func (c *Client) CloseIdleConnections() { c.httpClient.CloseIdleConnections() }

// wireRequest is the body of a get-online-features request.
type wireRequest struct {
	FeatureService   string           `json:"feature_service"`
	Entities         map[string][]any `json:"entities"`
	FullFeatureNames bool             `json:"full_feature_names"`
}

// GetFeatures fetches one feature vector of req.FeatureService for req.JoinKeys.
// req.RequestContext values, if any, are sent as extra entity columns (Feast's request data);
// req.Workspace and req.BypassCache are not used (see the package documentation).
//
// Errors: ErrInvalidRequest (wrapped) before anything is sent; *APIError for a non-2xx answer;
// *TransportError when no complete answer arrived; ErrResponseTooLarge (wrapped); *ParseError
// for a 2xx body that is not a get-online-features answer. IsRetriable tells which are worth
// retrying.
func (c *Client) GetFeatures(ctx context.Context, req tecton.Request) (*tecton.Vector, error) {
	vs, err := c.GetFeaturesBatch(ctx, []tecton.Request{req})
	if err != nil {
		return nil, err
	}
	return vs[0], nil
}

// GetFeaturesBatch fetches one feature vector per request, in request order. All requests must
// name the same feature service. Requests with the same join key names share one call (one
// entity row each); a batch whose requests use different join key names makes one call per
// set of names. Errors are as for GetFeatures; the first failed call fails the batch.
func (c *Client) GetFeaturesBatch(ctx context.Context, reqs []tecton.Request) ([]*tecton.Vector, error) {
	if len(reqs) == 0 {
		return nil, fmt.Errorf("%w: empty batch", ErrInvalidRequest)
	}
	service := reqs[0].FeatureService
	groups := map[string][]int{} // join key names → request indexes
	var order []string
	for i := range reqs {
		r := &reqs[i]
		if err := validate(r); err != nil {
			return nil, fmt.Errorf("%w: request %d: %w", ErrInvalidRequest, i, err)
		}
		if r.FeatureService != service {
			return nil, fmt.Errorf("%w: request %d is for feature service %s but request 0 is for %s; a batch has one feature service",
				ErrInvalidRequest, i, r.FeatureService, service)
		}
		sig := columnsOf(r)
		if _, ok := groups[sig]; !ok {
			order = append(order, sig)
		}
		groups[sig] = append(groups[sig], i)
	}
	out := make([]*tecton.Vector, len(reqs))
	for _, sig := range order {
		idx := groups[sig]
		vs, err := c.call(ctx, service, reqs, idx)
		if err != nil {
			return nil, fmt.Errorf("get-online-features %s: %w", service, err)
		}
		for j, i := range idx {
			out[i] = vs[j]
		}
	}
	return out, nil
}

// validate checks what the feature server would reject anyway, without quoting values.
func validate(r *tecton.Request) error {
	if r.FeatureService == "" {
		return errors.New("feature service is required")
	}
	if len(r.JoinKeys) == 0 {
		return errors.New("at least one join key is required")
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
		if _, dup := r.JoinKeys[name]; dup {
			return fmt.Errorf("%q is both a join key and a request context key", name)
		}
	}
	return nil
}

// columnsOf returns the sorted entity column names of r as one string.
func columnsOf(r *tecton.Request) string {
	names := make([]string, 0, len(r.JoinKeys)+len(r.RequestContext))
	for k := range r.JoinKeys {
		names = append(names, "k:"+k)
	}
	for k := range r.RequestContext {
		names = append(names, "r:"+k)
	}
	slices.Sort(names)
	return strings.Join(names, "\x00")
}

// call makes one get-online-features call for the requests reqs[idx...], which share their
// entity column names, and returns their vectors in the order of idx.
func (c *Client) call(ctx context.Context, service string, reqs []tecton.Request, idx []int) ([]*tecton.Vector, error) {
	first := &reqs[idx[0]]
	entities := make(map[string][]any, len(first.JoinKeys)+len(first.RequestContext))
	joinKeys := make([]string, 0, len(first.JoinKeys))
	for k := range first.JoinKeys {
		joinKeys = append(joinKeys, k)
		entities[k] = make([]any, 0, len(idx))
	}
	for k := range first.RequestContext {
		joinKeys = append(joinKeys, k) // echoed back like entity columns
		entities[k] = make([]any, 0, len(idx))
	}
	for _, i := range idx {
		for k, v := range reqs[i].JoinKeys {
			entities[k] = append(entities[k], v)
		}
		for k, v := range reqs[i].RequestContext {
			entities[k] = append(entities[k], v)
		}
	}
	body, err := json.Marshal(wireRequest{FeatureService: service, Entities: entities, FullFeatureNames: true})
	if err != nil {
		return nil, fmt.Errorf("%w: encoding request body: %w", ErrInvalidRequest, err)
	}
	data, err := c.post(ctx, body)
	if err != nil {
		return nil, err
	}
	return ParseResponse(data, len(idx), joinKeys)
}

// post sends one JSON POST and returns the body of a 2xx answer, bounded by maxResponseBytes.
func (c *Client) post(ctx context.Context, body []byte) ([]byte, error) {
	callCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	httpReq, err := retryablehttp.NewRequestWithContext(callCtx, http.MethodPost, c.baseURL+getOnlineFeaturesPath, body)
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	httpReq.Header.Set("Content-Type", "application/json")
	httpReq.Header.Set("Accept", "application/json")
	httpReq.Header.Set("User-Agent", userAgent)
	if c.token != "" {
		httpReq.Header.Set("Authorization", "Bearer "+c.token)
	}

	start := time.Now()
	resp, err := c.retrying.Do(httpReq)
	if err != nil {
		return nil, c.transportError(ctx, callCtx, err)
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		excerpt, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBodyBytes))
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBodyBytes))
		apiErr := newAPIError(resp.StatusCode, resp.Header, excerpt, time.Now())
		apiErr.Class = c.redactToken(apiErr.Class)
		apiErr.Message = c.redactToken(apiErr.Message)
		c.logCall(ctx, resp.StatusCode, start, len(excerpt))
		return nil, apiErr
	}
	if resp.ContentLength > c.maxResponseBytes {
		return nil, fmt.Errorf("%w: Content-Length %d exceeds MaxResponseBytes (%d)", ErrResponseTooLarge, resp.ContentLength, c.maxResponseBytes)
	}
	limit := c.maxResponseBytes
	if limit < math.MaxInt64 {
		limit++ // one byte past the limit tells "exactly at" from "over"
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, c.transportError(ctx, callCtx, fmt.Errorf("reading response body: %w", err))
	}
	if int64(len(data)) > c.maxResponseBytes {
		return nil, fmt.Errorf("%w: body exceeds MaxResponseBytes (%d)", ErrResponseTooLarge, c.maxResponseBytes)
	}
	c.logCall(ctx, resp.StatusCode, start, len(data))
	return data, nil
}

// transportError classifies a failed call. parent is the caller's context, callCtx the one
// bounded by Config.Timeout.
func (c *Client) transportError(parent, callCtx context.Context, err error) *TransportError {
	if perr := parent.Err(); perr != nil {
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

// redactToken removes the token from server-provided text, in case a server or proxy echoes
// the Authorization header back.
func (c *Client) redactToken(s string) string {
	if c.token == "" || !strings.Contains(s, c.token) {
		return s
	}
	return strings.ReplaceAll(s, c.token, httpretry.Redacted)
}

func (c *Client) logCall(ctx context.Context, status int, start time.Time, n int) {
	c.logger.LogAttrs(ctx, slog.LevelDebug, "feast call",
		slog.String("op", "get-online-features"),
		slog.Int("status", status),
		slog.Duration("duration", time.Since(start)),
		slog.Int("bytes", n),
	)
}
