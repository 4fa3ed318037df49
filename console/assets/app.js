// The Outflow console: sign in with an API key, then manage subscriptions,
// their deliveries, replays, live tail and last hour, through the public
// REST API only (api.js). Routing is by location.hash, so the gateway
// serves one page.
import { render } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { html } from "./ui.js";
import { api, session, streamEvents } from "./api.js";
import { DeliveriesChart, LatencyChart, formatSeconds, seconds } from "./chart.js";

// ---------------------------------------------------------------- helpers

function useRoute() {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  const path = hash.replace(/^#/, "") || "/";
  return path.split("/").filter(Boolean).map(decodeURIComponent);
}

function go(path) {
  location.hash = "#" + path;
}

// fmtDuration shows a protobuf JSON duration ("100800s") in its largest
// whole unit.
function fmtDuration(d) {
  const s = seconds(d);
  if (!s) return "";
  for (const [unit, n] of [["d", 86400], ["h", 3600], ["min", 60]]) if (s >= n && s % n === 0) return `${s / n} ${unit}`;
  return formatSeconds(s);
}

function fmtTime(ts) {
  if (!ts) return "";
  const d = new Date(ts);
  return isNaN(d) ? String(ts) : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

// localInput formats a Date for <input type=datetime-local> (local time).
function localInput(d) {
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

// Heading is the page's h1, focused when the page changes so keyboard and
// screen-reader users start at the top of the new content.
function Heading({ children }) {
  const ref = useRef(null);
  useEffect(() => { if (ref.current) ref.current.focus(); }, []);
  return html`<h1 tabindex="-1" ref=${ref}>${children}</h1>`;
}

// ErrorBox shows a failed call. Field violations shown next to their fields
// (matched) are only counted here; the others are listed.
function ErrorBox({ error }) {
  if (!error) return null;
  const all = error.violations || [];
  const unmatched = all.filter((v) => !v.matched);
  const shown = all.length - unmatched.length;
  const title = all.length === 0 ? error.message
    : shown === all.length ? `The API refused ${shown === 1 ? "one field" : `${shown} fields`}: see the message${shown === 1 ? "" : "s"} next to ${shown === 1 ? "it" : "them"}.`
    : "The API refused this request:";
  return html`<div class="alert" role="alert">
    <strong>${title}</strong>
    ${unmatched.length ? html`<ul>${unmatched.map((v) => html`<li><code>${v.field}</code>: ${v.description}</li>`)}</ul>` : null}
  </div>`;
}

function useInterval(fn, ms, active = true) {
  const saved = useRef(fn);
  saved.current = fn;
  useEffect(() => {
    if (!active) return undefined;
    const t = setInterval(() => saved.current(), ms);
    return () => clearInterval(t);
  }, [ms, active]);
}

// ---------------------------------------------------------------- sign in

function SignIn({ onSignedIn }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await api.checkKey(key.trim());
      session.set(key.trim());
      onSignedIn();
    } catch (err) {
      setError(err.status === 401 ? new Error("That API key is not valid (or was revoked).") : err);
    } finally {
      setBusy(false);
    }
  };
  return html`<main id="main" class="signin">
    <${Heading}>Sign in to the Outflow console<//>
    <p class="muted">Use an API key of your tenant (<code>outflow apikey create --tenant …</code>; <code>outflow dev</code> prints one).
      It is kept in this tab only, and sent to this gateway's API.</p>
    <form class="sub" onSubmit=${submit}>
      <div class="field">
        <label for="apikey">API key</label>
        <input id="apikey" type="password" autocomplete="off" required value=${key}
          onInput=${(e) => setKey(e.currentTarget.value)} aria-describedby="apikey-hint" />
        <span class="hint" id="apikey-hint">Starts with ofk_.</span>
      </div>
      <${ErrorBox} error=${error} />
      <div class="actions"><button class="primary" type="submit" disabled=${busy}>Sign in</button></div>
    </form>
  </main>`;
}

// ---------------------------------------------------------------- list

function StateBadge({ state }) {
  return html`<span class=${`badge state-${state}`}>${state || "?"}</span>`;
}

function target(sub) {
  return sub.webhook ? html`webhook <code>${sub.webhook.url}</code>` : html`stream`;
}

function SubscriptionList() {
  const [subs, setSubs] = useState(null);
  const [next, setNext] = useState("");
  const [error, setError] = useState(null);
  const load = useCallback(async (token) => {
    try {
      const r = await api.listSubscriptions(token);
      setSubs((prev) => (token && prev ? prev : []).concat(r.subscriptions || []));
      setNext(r.next_page_token || "");
      setError(null);
    } catch (err) {
      setError(err);
    }
  }, []);
  useEffect(() => { load(""); }, [load]);
  return html`<main id="main">
    <${Heading}>Subscriptions<//>
    <div class="actions"><a class="button primary" href="#/new">New subscription</a></div>
    <${ErrorBox} error=${error} />
    ${subs === null ? html`<p class="muted">Loading…</p>` : subs.length === 0 ? html`<p>No subscriptions yet.</p>` : html`
    <table>
      <caption class="visually-hidden">Subscriptions of this tenant, oldest first</caption>
      <thead><tr><th scope="col">Name</th><th scope="col">State</th><th scope="col">Delivery</th><th scope="col">Feature views</th><th scope="col">Id</th></tr></thead>
      <tbody>${subs.map((s) => html`<tr>
        <td><a href=${`#/subscriptions/${encodeURIComponent(s.id)}`}>${s.name || s.id}</a></td>
        <td><${StateBadge} state=${s.state} /></td>
        <td>${target(s)}</td>
        <td>${(s.feature_view_names || []).join(", ")}</td>
        <td><code>${s.id}</code></td>
      </tr>`)}</tbody>
    </table>`}
    ${next ? html`<div class="actions"><button type="button" onClick=${() => load(next)}>Load more</button></div>` : null}
  </main>`;
}

// ---------------------------------------------------------------- form

// Field is a labelled input with its hint and the API's violations for it
// (fields: the violation paths it owns, e.g. "webhook.url").
function Field({ id, label, hint, violations, input: renderInput }) {
  const mine = violations.filter((v) => v.field === id || v.field.startsWith(id + ".") || v.field.startsWith(id + "["));
  for (const v of mine) v.matched = true;
  const described = [hint ? `${id}-hint` : "", mine.length ? `${id}-error` : ""].filter(Boolean).join(" ") || undefined;
  const input = renderInput({ id: `f-${id}`, "aria-describedby": described ? described.split(" ").map((d) => `f-${d}`).join(" ") : undefined, "aria-invalid": mine.length ? "true" : undefined });
  return html`<div class="field">
    <label for=${`f-${id}`}>${label}</label>
    ${input}
    ${hint ? html`<span class="hint" id=${`f-${id}-hint`}>${hint}</span>` : null}
    ${mine.length ? html`<span class="violation" id=${`f-${id}-error`}>${mine.map((v) => v.description).join("; ")}</span>` : null}
  </div>`;
}

const emptyForm = {
  name: "", feature_view_names: "", filter: "", workspace_name: "", feature_service_name: "",
  consistency: "", kind: "webhook", url: "", rate_limit: "", max_in_flight: "", max_attempts: "",
};

function formFromSub(s) {
  return {
    name: s.name || "", feature_view_names: (s.feature_view_names || []).join(", "), filter: s.filter || "",
    workspace_name: (s.enrichment && s.enrichment.workspace_name) || "",
    feature_service_name: (s.enrichment && s.enrichment.feature_service_name) || "",
    consistency: (s.enrichment && s.enrichment.consistency) || "",
    kind: s.stream ? "stream" : "webhook", url: (s.webhook && s.webhook.url) || "",
    rate_limit: s.webhook && s.webhook.rate_limit ? String(s.webhook.rate_limit) : "",
    max_in_flight: s.webhook && s.webhook.max_in_flight ? String(s.webhook.max_in_flight) : "",
    max_attempts: s.retry_policy && s.retry_policy.max_attempts ? String(s.retry_policy.max_attempts) : "",
  };
}

// subFromForm builds the request body. The API checks everything (the CEL
// filter compiles against the record type, the URL is allowed, …): the
// console does not guess, it shows the API's answer next to each field.
function subFromForm(f, editing) {
  const sub = {
    name: f.name.trim(),
    feature_view_names: f.feature_view_names.split(",").map((s) => s.trim()).filter(Boolean),
    filter: f.filter.trim(),
  };
  if (f.workspace_name.trim() || f.feature_service_name.trim() || f.consistency) {
    sub.enrichment = { workspace_name: f.workspace_name.trim(), feature_service_name: f.feature_service_name.trim() };
    if (f.consistency) sub.enrichment.consistency = f.consistency;
  } else if (editing) {
    sub.enrichment = null;
  }
  if (f.kind === "stream") {
    sub.stream = {};
  } else {
    // An emptied field is sent as 0 when editing (REST's inferred mask only
    // names fields present): no rate limit, the default lanes and attempts.
    sub.webhook = { url: f.url.trim() };
    if (f.rate_limit !== "" || editing) sub.webhook.rate_limit = Number(f.rate_limit || 0);
    if (f.max_in_flight !== "" || editing) sub.webhook.max_in_flight = Number(f.max_in_flight || 0);
    if (f.max_attempts !== "" || editing) sub.retry_policy = { max_attempts: Number(f.max_attempts || 0) };
  }
  return sub;
}

function SubscriptionForm({ id }) {
  const editing = Boolean(id);
  const [form, setForm] = useState(editing ? null : emptyForm);
  const [etag, setEtag] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const formRef = useRef(null);
  useEffect(() => {
    if (!editing) return;
    api.getSubscription(id).then((s) => { setForm(formFromSub(s)); setEtag(s.etag); }, setError);
  }, [id]);
  if (!form) return html`<main id="main"><${Heading}>Edit subscription<//><${ErrorBox} error=${error} /><p class="muted">Loading…</p></main>`;
  const set = (k) => (e) => setForm({ ...form, [k]: e.currentTarget.value });
  const violations = (error && error.violations) || [];
  for (const v of violations) v.matched = false;

  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    try {
      const body = subFromForm(form, editing);
      if (editing) {
        body.etag = etag;
        await api.updateSubscription(id, body);
        go(`/subscriptions/${encodeURIComponent(id)}`);
      } else {
        const created = await api.createSubscription(body);
        shownSecret = { id: created.id, secret: created.secret };
        go(`/subscriptions/${encodeURIComponent(created.id)}`);
      }
    } catch (err) {
      setError(err);
      // Take the keyboard to the first field the API refused, or the summary.
      setTimeout(() => {
        const bad = formRef.current && formRef.current.querySelector("[aria-invalid=true], [role=alert]");
        if (bad) { if (!bad.hasAttribute("tabindex") && bad.getAttribute("role") === "alert") bad.setAttribute("tabindex", "-1"); bad.focus(); }
      }, 0);
    } finally {
      setBusy(false);
    }
  };

  const F = (props) => html`<${Field} ...${props} violations=${violations} />`;
  return html`<main id="main">
    <${Heading}>${editing ? "Edit subscription" : "New subscription"}<//>
    <form class="sub" onSubmit=${submit} ref=${formRef} novalidate>
      ${F({ id: "name", label: "Name", hint: "A label, unique in your tenant.", input: (a) => html`<input type="text" ...${a} value=${form.name} onInput=${set("name")} />` })}
      ${F({ id: "feature_view_names", label: "Feature views", hint: "Comma-separated; a record matches when its feature_view_name is one of them.", input: (a) => html`<input type="text" ...${a} value=${form.feature_view_names} onInput=${set("feature_view_names")} />` })}
      ${F({ id: "filter", label: "Filter (CEL, optional)", hint: html`Over <code>record</code>, e.g. <code>record.entity_keys["user_id"].startsWith("u1")</code>. The API compiles and type-checks it.`, input: (a) => html`<textarea ...${a} spellcheck="false" value=${form.filter} onInput=${set("filter")}></textarea>` })}
      <fieldset>
        <legend>Enrichment (optional)</legend>
        <div class="row">
          ${F({ id: "enrichment.workspace_name", label: "Workspace", input: (a) => html`<input type="text" ...${a} value=${form.workspace_name} onInput=${set("workspace_name")} />` })}
          ${F({ id: "enrichment.feature_service_name", label: "Feature service", input: (a) => html`<input type="text" ...${a} value=${form.feature_service_name} onInput=${set("feature_service_name")} />` })}
          ${F({ id: "enrichment.consistency", label: "Consistency", input: (a) => html`<select ...${a} value=${form.consistency} onChange=${set("consistency")}>
            <option value="">default (STRICT)</option><option value="STRICT">STRICT</option><option value="BEST_EFFORT">BEST_EFFORT</option><option value="NONE">NONE</option></select>` })}
        </div>
      </fieldset>
      <fieldset>
        <legend>Delivery</legend>
        <div class="radios" role="radiogroup" aria-label="Delivery by">
          <label><input type="radio" name="kind" value="webhook" checked=${form.kind === "webhook"} onChange=${set("kind")} /> Webhook</label>
          <label><input type="radio" name="kind" value="stream" checked=${form.kind === "stream"} onChange=${set("kind")} /> Stream (gRPC / NDJSON)</label>
        </div>
        ${form.kind === "webhook" ? html`
          ${F({ id: "webhook.url", label: "Webhook URL", hint: "https:// unless the operator allows plain http.", input: (a) => html`<input type="url" ...${a} value=${form.url} onInput=${set("url")} />` })}
          <div class="row">
            ${F({ id: "webhook.rate_limit", label: "Rate limit (events/s, optional)", input: (a) => html`<input type="number" min="0" step="any" ...${a} value=${form.rate_limit} onInput=${set("rate_limit")} />` })}
            ${F({ id: "webhook.max_in_flight", label: "Max in flight (optional)", input: (a) => html`<input type="number" min="1" ...${a} value=${form.max_in_flight} onInput=${set("max_in_flight")} />` })}
            ${F({ id: "retry_policy.max_attempts", label: "Max attempts (optional)", hint: "Then the event is dead-lettered.", input: (a) => html`<input type="number" min="1" ...${a} value=${form.max_attempts} onInput=${set("max_attempts")} />` })}
          </div>` : null}
      </fieldset>
      <${ErrorBox} error=${error} />
      <div class="actions">
        <button class="primary" type="submit" disabled=${busy}>${editing ? "Save" : "Create subscription"}</button>
        <a class="button" href=${editing ? `#/subscriptions/${encodeURIComponent(id)}` : "#/"}>Cancel</a>
      </div>
    </form>
  </main>`;
}

// shownSecret carries a new subscription's secret from the form to its page,
// the only place it is shown (the API returns it once).
let shownSecret = null;

// ---------------------------------------------------------------- detail

function Secret({ secret, onDismiss }) {
  return html`<div class="secret" role="status">
    <p><strong>Signing secret</strong> — shown only now; store it with your receiver:</p>
    <p><code data-testid="secret">${secret}</code></p>
    <button type="button" onClick=${onDismiss}>I have stored it</button>
  </div>`;
}

function SubscriptionDetail({ id }) {
  const [sub, setSub] = useState(null);
  const [error, setError] = useState(null);
  const [notice, setNotice] = useState("");
  const [secret, setSecret] = useState(shownSecret && shownSecret.id === id ? shownSecret.secret : "");
  useEffect(() => { shownSecret = null; }, []);
  const load = useCallback(() => api.getSubscription(id).then((s) => { setSub(s); setError(null); }, setError), [id]);
  useEffect(() => { load(); }, [load]);

  const act = async (what, fn) => {
    setNotice("");
    setError(null);
    try {
      const msg = await fn();
      setNotice(msg || `${what}: done.`);
    } catch (err) {
      setError(err);
    }
  };
  if (!sub) return html`<main id="main"><${Heading}>Subscription<//><${ErrorBox} error=${error} />${error ? null : html`<p class="muted">Loading…</p>`}</main>`;
  const paused = sub.state === "PAUSED" || sub.state === "DISABLED";
  const setState = (state) => act(state === "ACTIVE" ? "Resume" : "Pause", async () => {
    const s = await api.updateSubscription(id, { state, etag: sub.etag });
    setSub(s);
    return state === "ACTIVE" ? "Resumed: events flow again." : "Paused: events are kept until you resume.";
  });
  const rotate = () => {
    if (!confirm("Rotate the signing secret? The old one keeps signing alongside the new one for the overlap window (24 h by default).")) return;
    act("Rotate secret", async () => {
      const s = await api.rotateSecret(id);
      setSecret(s.secret);
      setSub(s);
      return "New secret generated.";
    });
  };
  const test = () => act("Test event", async () => {
    const r = await api.sendTestEvent(id);
    return r.error ? `Test event ${r.event && r.event.id}: failed: ${r.error}` : `Test event ${r.event && r.event.id}: the receiver answered ${r.status_code}.`;
  });
  const remove = () => {
    if (!confirm(`Delete subscription "${sub.name}"? Its queued deliveries and dead letters go with it.`)) return;
    act("Delete", async () => { await api.deleteSubscription(id); go("/"); return "Deleted."; });
  };
  return html`<main id="main">
    <p><a href="#/">← Subscriptions</a></p>
    <${Heading}>${sub.name} <${StateBadge} state=${sub.state} /><//>
    ${secret ? html`<${Secret} secret=${secret} onDismiss=${() => setSecret("")} />` : null}
    <div class="actions" role="group" aria-label="Subscription actions">
      <a class="button" href=${`#/subscriptions/${encodeURIComponent(id)}/edit`}>Edit</a>
      ${paused ? html`<button type="button" onClick=${() => setState("ACTIVE")}>Resume</button>` : html`<button type="button" onClick=${() => setState("PAUSED")}>Pause</button>`}
      ${sub.webhook ? html`<button type="button" onClick=${test}>Send test event</button>` : null}
      ${sub.webhook ? html`<button type="button" onClick=${rotate}>Rotate secret</button>` : null}
      <button type="button" class="danger" onClick=${remove}>Delete</button>
    </div>
    <div role="status" aria-live="polite" class=${notice ? "note" : ""}>${notice}</div>
    <${ErrorBox} error=${error} />
    <dl class="summary">
      <dt>Id</dt><dd><code>${sub.id}</code></dd>
      <dt>Delivery</dt><dd>${target(sub)}${sub.webhook ? html` · ${sub.webhook.rate_limit ? `at most ${sub.webhook.rate_limit}/s` : "no rate limit"}, ${sub.webhook.max_in_flight} in flight, timeout ${fmtDuration(sub.webhook.timeout)}` : null}</dd>
      <dt>Feature views</dt><dd>${(sub.feature_view_names || []).join(", ")}</dd>
      ${sub.filter ? html`<dt>Filter</dt><dd><code>${sub.filter}</code></dd>` : null}
      ${sub.enrichment ? html`<dt>Enrichment</dt><dd>${sub.enrichment.workspace_name} / ${sub.enrichment.feature_service_name} (${sub.enrichment.consistency})</dd>` : null}
      ${sub.state_reason ? html`<dt>State reason</dt><dd>${sub.state_reason}</dd>` : null}
      ${sub.retry_policy ? html`<dt>Retry policy</dt><dd>${sub.retry_policy.max_attempts} attempt${sub.retry_policy.max_attempts === 1 ? "" : "s"} within ${fmtDuration(sub.retry_policy.max_age)}</dd>` : null}
      <dt>Created</dt><dd>${fmtTime(sub.create_time)}</dd>
    </dl>
    ${sub.webhook ? html`<${Activity} id=${id} />` : null}
    ${sub.stream ? html`<${LiveTail} id=${id} />` : null}
    ${sub.webhook ? html`<${Deliveries} id=${id} />` : null}
    <${Replays} id=${id} stream=${Boolean(sub.stream)} />
  </main>`;
}

// ---------------------------------------------------------------- activity

function Activity({ id }) {
  const [stats, setStats] = useState(null);
  const [error, setError] = useState(null);
  const load = () => api.stats(id).then((s) => { setStats(s); setError(null); }, setError);
  useEffect(() => { load(); }, [id]);
  useInterval(load, 5000);
  const minutes = (stats && stats.minutes) || [];
  const totals = { delivered: 0, failed: 0, dead: 0 };
  for (const m of minutes) {
    totals.delivered += Number(m.delivered || 0);
    totals.failed += Number(m.failed || 0);
    totals.dead += Number(m.dead || 0);
  }
  const recent = minutes.slice(-5).filter((m) => m.latency && Number(m.latency.count));
  const p95 = recent.length ? Math.max(...recent.map((m) => seconds(m.latency.p95))) : 0;
  return html`<section class="card" aria-labelledby="activity-h">
    <h2 id="activity-h">Last hour</h2>
    <${ErrorBox} error=${error} />
    <div class="totals">
      <div><span class="n" data-testid="delivered-total">${totals.delivered}</span><span class="muted">delivered</span></div>
      <div><span class="n" data-testid="failed-total">${totals.failed}</span><span class="muted">failed attempts</span></div>
      <div><span class="n">${totals.dead}</span><span class="muted">dead-lettered</span></div>
      <div><span class="n">${recent.length ? formatSeconds(p95) : "–"}</span><span class="muted">p95 latency, last 5 min</span></div>
    </div>
    ${minutes.length ? html`<div class="charts"><${DeliveriesChart} minutes=${minutes} totals=${totals} /><${LatencyChart} minutes=${minutes} /></div>` : null}
    <p class="muted">Counted by the gateway replica that answers, refreshed every 5 s.</p>
  </section>`;
}

// ---------------------------------------------------------------- deliveries

// maxRetryAll bounds one Retry all: a thousand calls, one after another.
const maxRetryAll = 1000;

function Deliveries({ id }) {
  const [status, setStatus] = useState("");
  const [list, setList] = useState(null);
  const [more, setMore] = useState(false);
  const [error, setError] = useState(null);
  const [notice, setNotice] = useState("");
  const [busy, setBusy] = useState(false);
  const load = useCallback(() => api.listDeliveries(id, status).then((r) => {
    setList(r.deliveries || []);
    setMore(Boolean(r.next_page_token));
    setError(null);
  }, setError), [id, status]);
  useEffect(() => { load(); }, [load]);
  useInterval(load, 5000, !busy);
  const retryable = (d) => d.status === "RETRYING" || d.status === "DEAD";
  // retry retries the given deliveries, or (all) every retrying or dead one
  // the current filter selects, page by page (at most maxRetryAll).
  const retry = async (ds, all) => {
    setBusy(true);
    setNotice("");
    let ok = 0;
    try {
      if (all) {
        ds = [];
        let token = "";
        do {
          const r = await api.listDeliveries(id, status, token);
          ds.push(...(r.deliveries || []).filter(retryable));
          token = r.next_page_token || "";
        } while (token && ds.length < maxRetryAll);
        ds = ds.slice(0, maxRetryAll);
      }
      for (const d of ds) {
        await api.retryDelivery(id, d.id);
        ok++;
        if (ds.length > 20 && ok % 20 === 0) setNotice(`Retrying: ${ok} of ${ds.length}…`);
      }
      setNotice(`Retrying ${ok} ${ok === 1 ? "delivery" : "deliveries"} now.`);
    } catch (err) {
      setError(err);
      if (ok) setNotice(`Retrying ${ok}; the next one failed.`);
    } finally {
      setBusy(false);
      load();
    }
  };
  return html`<section class="card" aria-labelledby="deliveries-h">
    <h2 id="deliveries-h">Deliveries</h2>
    <div class="actions">
      <label class="label" for="delivery-status">Show</label>
      <select id="delivery-status" class="auto" value=${status} onChange=${(e) => setStatus(e.currentTarget.value)}>
        <option value="">Retrying and dead letters</option>
        <option value="RETRYING">Retrying</option>
        <option value="DEAD">Dead letters</option>
        <option value="DELIVERED">Delivered after a retry</option>
      </select>
      <button type="button" onClick=${load}>Refresh</button>
      <button type="button" disabled=${busy || !(list || []).some(retryable)} onClick=${() => retry([], true)}>Retry all</button>
    </div>
    <div role="status" aria-live="polite">${notice}</div>
    <${ErrorBox} error=${error} />
    ${more ? html`<p class="muted">The first ${list.length} are shown; Retry all retries every one (up to ${maxRetryAll}).</p>` : null}
    ${list === null ? html`<p class="muted">Loading…</p>` : list.length === 0 ? html`<p class="muted">None.</p>` : html`
    <table>
      <caption class="visually-hidden">Deliveries</caption>
      <thead><tr><th scope="col">Event</th><th scope="col">Status</th><th scope="col">Attempts</th><th scope="col">Last error</th><th scope="col">Next attempt / updated</th><th scope="col"><span class="visually-hidden">Action</span></th></tr></thead>
      <tbody>${list.map((d) => html`<tr data-delivery=${d.id}>
        <td><code>${(d.event && d.event.id) || d.id}</code></td>
        <td><span class=${`badge status-${d.status}`}>${d.status}</span></td>
        <td>${d.attempts}</td>
        <td class="err-text">${d.last_status_code ? `HTTP ${d.last_status_code}: ` : ""}${d.last_error}</td>
        <td>${fmtTime(d.status === "RETRYING" ? d.next_attempt_time : d.update_time)}</td>
        <td>${retryable(d) ? html`<button type="button" disabled=${busy} aria-label=${`Retry ${(d.event && d.event.id) || d.id}`} onClick=${() => retry([d])}>Retry</button>` : null}</td>
      </tr>`)}</tbody>
    </table>`}
  </section>`;
}

// ---------------------------------------------------------------- replays

function Replays({ id, stream }) {
  // The last hour, to the next whole minute (the inputs have minutes only),
  // so the range includes what just arrived.
  const next = new Date(Math.ceil((Date.now() + 1) / 60e3) * 60e3);
  const [from, setFrom] = useState(localInput(new Date(next.getTime() - 3600e3)));
  const [to, setTo] = useState(localInput(next));
  const [replays, setReplays] = useState([]);
  const [error, setError] = useState(null);
  const load = useCallback(() => api.listReplays(id).then((r) => { setReplays(r.replays || []); }, setError), [id]);
  useEffect(() => { load(); }, [load]);
  const running = replays.some((r) => r.state === "RUNNING");
  useInterval(load, 1000, running);
  const start = async (e) => {
    e.preventDefault();
    setError(null);
    try {
      await api.replay(id, new Date(from).toISOString(), new Date(to).toISOString());
      load();
    } catch (err) {
      setError(err);
    }
  };
  const violations = (error && error.violations) || [];
  return html`<section class="card" aria-labelledby="replays-h">
    <h2 id="replays-h">Replays</h2>
    <p class="muted">Re-deliver this subscription's events of a time range, with their original ids.
      ${stream ? " For a stream subscription the answer is a resume token: StreamEvents with it delivers the range, then continues live." : ""}</p>
    <form class="actions" onSubmit=${start}>
      <label class="label" for="replay-from">From</label>
      <input id="replay-from" type="datetime-local" value=${from} onInput=${(e) => setFrom(e.currentTarget.value)} class="auto" />
      <label class="label" for="replay-to">To</label>
      <input id="replay-to" type="datetime-local" value=${to} onInput=${(e) => setTo(e.currentTarget.value)} class="auto" />
      <button type="submit">Start replay</button>
    </form>
    ${violations.length ? html`<ul class="violation">${violations.map((v) => html`<li>${v.field}: ${v.description}</li>`)}</ul>` : null}
    <${ErrorBox} error=${error && !violations.length ? error : null} />
    ${replays.length ? html`<table>
      <caption class="visually-hidden">Recent replays, newest first</caption>
      <thead><tr><th scope="col">Range</th><th scope="col">State</th><th scope="col">Progress</th><th scope="col">Delivered</th></tr></thead>
      <tbody>${replays.map((r) => {
        const read = Number(r.records_read || 0), total = Number(r.records_total || 0);
        return html`<tr data-replay=${r.id}>
          <td>${fmtTime(r.start_time)} → ${fmtTime(r.end_time)}</td>
          <td><span class=${`badge replay-${r.state}`}>${r.state}</span>${r.error ? html` <span class="err-text">${r.error}</span>` : null}</td>
          <td>${r.resume_token ? html`resume token <code>${r.resume_token.slice(0, 16)}…</code>` : html`<progress max=${total || 1} value=${total ? read : r.state === "SUCCEEDED" ? 1 : 0} aria-label=${`Replay ${r.id} progress`}></progress> ${read} / ${total} records`}</td>
          <td>${r.events_delivered || 0}</td>
        </tr>`;
      })}</tbody></table>` : null}
  </section>`;
}

// ---------------------------------------------------------------- live tail

function LiveTail({ id }) {
  const [on, setOn] = useState(false);
  const [events, setEvents] = useState([]);
  const [count, setCount] = useState(0);
  const [state, setState] = useState("");
  const [error, setError] = useState(null);
  useEffect(() => {
    if (!on) return undefined;
    const ctl = new AbortController();
    setError(null);
    setState("connecting…");
    streamEvents(id, {
      signal: ctl.signal,
      onOpen: () => setState("following the live tail"),
      onEvent: (ev) => {
        setCount((n) => n + 1);
        setEvents((list) => [ev, ...list].slice(0, 50));
      },
    }).then(() => { setState("the stream ended"); setOn(false); }, (err) => {
      if (ctl.signal.aborted) return;
      setError(err);
      setState("");
      setOn(false);
    });
    return () => ctl.abort();
  }, [on, id]);
  return html`<section class="card" aria-labelledby="tail-h">
    <h2 id="tail-h">Live tail</h2>
    <div class="actions">
      <button type="button" aria-pressed=${on ? "true" : "false"} onClick=${() => setOn(!on)}>${on ? "Stop" : "Start live tail"}</button>
      <span role="status" aria-live="polite"><span data-testid="tail-count">${count}</span> events${state ? ` — ${state}` : ""}</span>
    </div>
    <${ErrorBox} error=${error} />
    <ol class="tail" aria-label="Newest events first" tabindex="0">
      ${events.map((ev) => html`<li>
        <code>${ev.id}</code> · ${fmtTime(ev.created_at)} · ${ev.record && ev.record.feature_view_name}
        · ${JSON.stringify((ev.record && ev.record.entity_keys) || {})}
        ${ev.feature_vector ? html` · vector ${ev.feature_vector.consistent === false ? "not consistent" : "consistent"}` : null}
      </li>`)}
    </ol>
  </section>`;
}

// ---------------------------------------------------------------- app

function App() {
  const [signedIn, setSignedIn] = useState(Boolean(session.get()));
  const route = useRoute();
  useEffect(() => {
    const out = () => { session.clear(); setSignedIn(false); };
    window.addEventListener("outflow:unauthenticated", out);
    return () => window.removeEventListener("outflow:unauthenticated", out);
  }, []);
  const signOut = () => { session.clear(); setSignedIn(false); go("/"); };
  let page;
  if (!signedIn) {
    page = html`<${SignIn} onSignedIn=${() => setSignedIn(true)} />`;
  } else if (route[0] === "new") {
    page = html`<${SubscriptionForm} key="new" />`;
  } else if (route[0] === "subscriptions" && route[1] && route[2] === "edit") {
    page = html`<${SubscriptionForm} key=${"edit" + route[1]} id=${route[1]} />`;
  } else if (route[0] === "subscriptions" && route[1]) {
    page = html`<${SubscriptionDetail} key=${route[1]} id=${route[1]} />`;
  } else {
    page = html`<${SubscriptionList} key="list" />`;
  }
  return html`
    <a class="skip" href="#main" onClick=${(e) => { e.preventDefault(); const m = document.getElementById("main"); if (m) { m.setAttribute("tabindex", "-1"); m.focus(); } }}>Skip to content</a>
    <header class="top">
      <a class="brand" href="#/">Outflow console</a>
      <nav aria-label="Main">${signedIn ? html`<a href="#/">Subscriptions</a><a href="#/new">New subscription</a>` : null}</nav>
      ${signedIn ? html`<button type="button" onClick=${signOut}>Sign out</button>` : null}
    </header>
    ${page}`;
}

render(html`<${App} />`, document.getElementById("app"));
