// Two small SVG charts of a subscription's last hour (GetSubscriptionStats):
// deliveries and failures per minute as stacked bars, and end-to-end
// latency (p50, p95) as lines. Each chart is an image with a text
// alternative; the numbers are also in the totals above it.
import { html } from "./ui.js";

const W = 600, H = 170, L = 46, R = 8, T = 10, B = 24;

// seconds parses a protobuf JSON duration ("0.125s").
export function seconds(d) {
  return d ? parseFloat(String(d).replace(/s$/, "")) : 0;
}

export function formatSeconds(s) {
  if (!s) return "0 ms";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  return Number.isInteger(s) ? `${s} s` : `${s.toFixed(s < 10 ? 2 : 1)} s`;
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function timeAxis(minutes) {
  const n = minutes.length, step = (W - L - R) / n;
  const labels = [];
  for (let i = 0; i < n; i += 15) {
    const t = new Date(minutes[i].start_time);
    labels.push(html`<text x=${L + i * step} y=${H - 6}>${t.toTimeString().slice(0, 5)}</text>`);
  }
  labels.push(html`<text x=${W - R - 22} y=${H - 6}>now</text>`);
  return labels;
}

function yAxis(max, fmt) {
  const ticks = [0, max / 2, max];
  return ticks.map((v) => {
    const y = T + (H - T - B) * (1 - v / max);
    return html`<line class="axis" x1=${L} x2=${W - R} y1=${y} y2=${y} /><text x="2" y=${y + 3}>${fmt(v)}</text>`;
  });
}

export function DeliveriesChart({ minutes, totals }) {
  const n = minutes.length, step = (W - L - R) / n, bw = Math.max(1, step - 2);
  const max = niceMax(Math.max(0, ...minutes.map((m) => Number(m.delivered || 0) + Number(m.failed || 0))));
  const y = (v) => (H - T - B) * (v / max);
  const bars = minutes.map((m, i) => {
    const d = Number(m.delivered || 0), f = Number(m.failed || 0);
    const x = L + i * step + 1, base = H - B;
    return html`<rect x=${x} y=${base - y(d)} width=${bw} height=${y(d)} fill="#2da44e" /><rect x=${x} y=${base - y(d) - y(f)} width=${bw} height=${y(f)} fill="#cf222e" />`;
  });
  const label = `Deliveries per minute over the last hour: ${totals.delivered} delivered, ${totals.failed} failed.`;
  return html`<figure>
    <figcaption id="chart-deliveries">Deliveries per minute</figcaption>
    <svg class="chart" viewBox=${`0 0 ${W} ${H}`} role="img" aria-labelledby="chart-deliveries" aria-describedby="chart-deliveries-desc">
      <desc id="chart-deliveries-desc">${label}</desc>
      ${yAxis(max, (v) => String(Math.round(v)))}${bars}${timeAxis(minutes)}
    </svg>
    <div class="legend"><span><span class="swatch sw-delivered"></span>delivered</span><span><span class="swatch sw-failed"></span>failed</span></div>
  </figure>`;
}

export function LatencyChart({ minutes }) {
  const n = minutes.length, step = (W - L - R) / n;
  const p50 = minutes.map((m) => seconds(m.latency && m.latency.p50));
  const p95 = minutes.map((m) => seconds(m.latency && m.latency.p95));
  const max = niceMax(Math.max(0, ...p95, ...p50));
  const path = (vals) => {
    let d = "";
    vals.forEach((v, i) => {
      if (!minutes[i].latency || !Number(minutes[i].latency.count)) return;
      const x = L + i * step + step / 2, yv = T + (H - T - B) * (1 - v / max);
      d += `${d ? "L" : "M"}${x.toFixed(1)},${yv.toFixed(1)} `;
    });
    return d;
  };
  // Dots too: a minute alone (no neighbour to draw a line to) still shows.
  const dots = (vals, colour) => vals.map((v, i) => (!minutes[i].latency || !Number(minutes[i].latency.count)) ? null
    : html`<circle cx=${L + i * step + step / 2} cy=${T + (H - T - B) * (1 - v / max)} r="2.5" fill=${colour} />`);
  const worst = Math.max(0, ...p95);
  const label = `End-to-end latency per minute over the last hour; the highest p95 was ${formatSeconds(worst)}.`;
  return html`<figure>
    <figcaption id="chart-latency">End-to-end latency</figcaption>
    <svg class="chart" viewBox=${`0 0 ${W} ${H}`} role="img" aria-labelledby="chart-latency" aria-describedby="chart-latency-desc">
      <desc id="chart-latency-desc">${label}</desc>
      ${yAxis(max, formatSeconds)}
      <path d=${path(p50)} fill="none" stroke="#0a5cc2" stroke-width="2" />
      <path d=${path(p95)} fill="none" stroke="#bf8700" stroke-width="2" />
      ${dots(p50, "#0a5cc2")}${dots(p95, "#bf8700")}
      ${timeAxis(minutes)}
    </svg>
    <div class="legend"><span><span class="swatch sw-p50"></span>p50</span><span><span class="swatch sw-p95"></span>p95</span></div>
  </figure>`;
}
