// The console's only way to the gateway: the public REST API under /v1/,
// with the API key as a bearer token. Nothing here knows more than the
// OpenAPI document (/openapi.json) says.

const KEY = "outflow.apiKey";

// The key lives in sessionStorage: it survives a reload but not the tab.
export const session = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (key) => sessionStorage.setItem(KEY, key),
  clear: () => sessionStorage.removeItem(KEY),
};

// ApiError is a failed call: the HTTP status, the gRPC-style message, and
// the google.rpc.BadRequest field violations, by field path without the
// leading "subscription." (e.g. "webhook.url").
export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.code;
    this.violations = [];
    for (const d of (body && body.details) || []) {
      for (const v of d.field_violations || d.fieldViolations || []) {
        this.violations.push({ field: String(v.field || "").replace(/^subscription\./, ""), description: v.description || "" });
      }
    }
  }
}

function headers(extra) {
  return { Authorization: `Bearer ${session.get()}`, ...extra };
}

// call sends one request and returns the decoded JSON answer; a non-2xx
// answer throws an ApiError. A 401 also signs out.
export async function call(method, path, body) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const resp = await fetch(path, init);
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : {}; } catch { data = { message: text.trim() }; }
  if (!resp.ok) {
    const err = new ApiError(resp.status, data);
    if (resp.status === 401) window.dispatchEvent(new CustomEvent("outflow:unauthenticated"));
    throw err;
  }
  return data;
}

const enc = encodeURIComponent;

export const api = {
  // checkKey resolves when key is a valid API key.
  checkKey: async (key) => {
    const resp = await fetch("/v1/subscriptions?page_size=1", { headers: { Authorization: `Bearer ${key}` } });
    if (!resp.ok) {
      let body = {};
      try { body = await resp.json(); } catch { /* not JSON */ }
      throw new ApiError(resp.status, body);
    }
  },
  listSubscriptions: (pageToken) =>
    call("GET", `/v1/subscriptions?page_size=50${pageToken ? "&page_token=" + enc(pageToken) : ""}`),
  getSubscription: (id) => call("GET", `/v1/subscriptions/${enc(id)}`),
  createSubscription: (sub) => call("POST", "/v1/subscriptions", sub),
  // updateSubscription patches the fields present in sub (REST infers the
  // update mask from the body); with etag, a concurrent change is a 409.
  updateSubscription: (id, sub) => call("PATCH", `/v1/subscriptions/${enc(id)}`, sub),
  deleteSubscription: (id) => call("DELETE", `/v1/subscriptions/${enc(id)}`),
  rotateSecret: (id) => call("POST", `/v1/subscriptions/${enc(id)}:rotateSecret`, {}),
  sendTestEvent: (id) => call("POST", `/v1/subscriptions/${enc(id)}:test`, {}),
  listDeliveries: (id, status, pageToken) =>
    call("GET", `/v1/subscriptions/${enc(id)}/deliveries?page_size=100${status ? "&status=" + enc(status) : ""}${pageToken ? "&page_token=" + enc(pageToken) : ""}`),
  retryDelivery: (id, deliveryId) => call("POST", `/v1/subscriptions/${enc(id)}/deliveries/${enc(deliveryId)}:retry`, {}),
  replay: (id, start, end) => call("POST", `/v1/subscriptions/${enc(id)}:replay`, { start_time: start, end_time: end }),
  getReplay: (id, replayId) => call("GET", `/v1/subscriptions/${enc(id)}/replays/${enc(replayId)}`),
  listReplays: (id) => call("GET", `/v1/subscriptions/${enc(id)}/replays?page_size=5`),
  stats: (id) => call("GET", `/v1/subscriptions/${enc(id)}/stats`),
};

// streamEvents follows a stream subscription over HTTP (newline-delimited
// JSON: each event line is the webhook's event JSON plus its resume_token;
// {"heartbeat_time": ...} lines say the stream is reading; a last
// {"error": {...}} line ends it) and calls onEvent for each event. It
// resolves when the stream ends and rejects on an error line or a failed
// request. Abort signal to stop.
export async function streamEvents(id, { signal, onEvent, onOpen }) {
  const resp = await fetch(`/v1/subscriptions/${enc(id)}/events:stream`, { headers: headers(), signal });
  if (!resp.ok) {
    let body = {};
    try { body = await resp.json(); } catch { /* not JSON */ }
    throw new ApiError(resp.status, body);
  }
  if (onOpen) onOpen();
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (!line) continue;
      const msg = JSON.parse(line);
      if (msg.error) throw new ApiError(500, msg.error);
      if (msg.id) onEvent(msg); // not a heartbeat
    }
  }
}
