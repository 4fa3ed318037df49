// browser.mjs drives the Outflow console in Debian's Chromium with
// Playwright, against a running `outflow dev --receiver` (TestConsoleInBrowser
// starts one and runs this script). Each step waits for what a person would
// see; any JavaScript error, CSP violation or serious accessibility
// violation (axe-core) fails the run. Screenshots go to OUT_DIR.
//
// Environment: OUTFLOW_URL (http://127.0.0.1:port), OUTFLOW_API_KEY,
// RECEIVER_URL (the dev receiver), OUT_DIR, BROWSER_DEPS_DIR (where
// scripts/browser-deps.sh installed playwright-core and axe-core),
// CHROMIUM (default /usr/bin/chromium).
import { createRequire } from "node:module";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";

const env = (k, d) => {
  const v = process.env[k] ?? d;
  if (v === undefined) throw new Error(`${k} is not set`);
  return v;
};
const base = env("OUTFLOW_URL");
const apiKey = env("OUTFLOW_API_KEY");
const receiverURL = env("RECEIVER_URL");
const outDir = env("OUT_DIR");
const require = createRequire(path.join(env("BROWSER_DEPS_DIR"), "package.json"));
const { chromium } = require("playwright-core");
const axeSource = fs.readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

fs.mkdirSync(outDir, { recursive: true });
const suffix = Date.now().toString(36);
const log = (...a) => console.log(new Date().toISOString().slice(11, 23), ...a);

// A receiver that fails the first attempt of every event (500) and accepts
// any later one: with max attempts 1 each event becomes a dead letter, and
// retrying it from the console succeeds.
const seen = new Map(); // webhook-id → attempts answered
const accepted = new Set(); // webhook-ids answered 2xx
const failing = http.createServer((req, res) => {
  req.resume();
  req.on("end", () => {
    const id = String(req.headers["webhook-id"] || "");
    const n = (seen.get(id) || 0) + 1;
    seen.set(id, n);
    if (n === 1) {
      res.writeHead(500, { "content-type": "text/plain" }).end("receiver is down for the test");
      return;
    }
    accepted.add(id);
    res.writeHead(204).end();
  });
});
await new Promise((r) => failing.listen(0, "127.0.0.1", r));
const failingURL = `http://127.0.0.1:${failing.address().port}/hooks/flaky`;

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "outflow-chromium-"));
// A fresh profile (Playwright passes it as --user-data-dir).
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: env("CHROMIUM", "/usr/bin/chromium"),
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 1280, height: 900 },
  deviceScaleFactor: 1,
});
const page = context.pages()[0] || await context.newPage();
page.setDefaultTimeout(30_000); // generous: CI runs other packages' tests alongside

const problems = [];
page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
page.on("console", (msg) => {
  // A refused API call is logged by Chromium as a failed resource; the
  // console shows those to the user, they are expected in this test.
  if (msg.type() === "error" && !/^Failed to load resource: the server responded with a status of (4\d\d)/.test(msg.text())) {
    problems.push(`console error: ${msg.text()}`);
  }
});
page.on("dialog", (d) => d.accept());

let shots = 0;
async function shot(name) {
  const file = path.join(outDir, `${String(++shots).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  log("screenshot", file);
}

// axe runs axe-core on the page; serious and critical violations fail.
async function axe(where) {
  // Evaluated over the DevTools protocol: the console's CSP (rightly) refuses
  // an injected <script>, and must stay on to catch the console's own slips.
  if (!(await page.evaluate(() => Boolean(window.axe)))) await page.evaluate(axeSource);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  for (const v of result.violations) log(`axe ${where}: ${v.impact} ${v.id}: ${v.help} (${v.nodes.length})`);
  if (bad.length) {
    throw new Error(`accessibility violations on ${where}:\n` + bad.map((v) =>
      `${v.impact} ${v.id}: ${v.help}\n  ${v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join("\n  ")}`).join("\n"));
  }
}

// tabTo presses Tab until the focused element matches test, as a keyboard
// user would; it fails after max presses.
async function tabTo(description, test, max = 25) {
  for (let i = 0; i < max; i++) {
    await page.keyboard.press("Tab");
    if (await page.evaluate(test)) return;
  }
  throw new Error(`${description} is not reachable with Tab`);
}

async function until(description, fn, timeout = 60_000) {
  const end = Date.now() + timeout;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${description}`);
    await page.waitForTimeout(250);
  }
}

const heading = () => page.getByRole("heading", { level: 1 });

async function createSubscription(fields) {
  await page.goto(`${base}/console/#/new`);
  await heading().filter({ hasText: "New subscription" }).waitFor();
  await page.getByLabel("Name").fill(fields.name);
  await page.getByLabel("Feature views").fill("user_items_added_to_cart");
  if (fields.enrich) {
    await page.getByLabel("Workspace").fill("prod");
    await page.getByLabel("Feature service").fill("promo_fs");
  }
  if (fields.filter) await page.getByLabel("Filter (CEL, optional)").fill(fields.filter);
  if (fields.stream) {
    await page.getByLabel("Stream (gRPC / NDJSON)").check();
  } else {
    await page.getByLabel("Webhook URL").fill(fields.url);
    if (fields.maxAttempts) await page.getByLabel("Max attempts (optional)").fill(String(fields.maxAttempts));
  }
  await page.getByRole("button", { name: "Create subscription" }).click();
  await heading().filter({ hasText: fields.name }).waitFor();
  return decodeURIComponent(page.url().split("#/subscriptions/")[1]);
}

try {
  // 1. Sign in, by keyboard only; a wrong key first.
  log("sign in");
  await page.goto(`${base}/console/`);
  await heading().filter({ hasText: "Sign in" }).waitFor();
  await axe("sign in");
  await tabTo("the API key field", () => document.activeElement && document.activeElement.id === "apikey");
  await page.keyboard.type("ofk_not-a-real-key");
  await page.keyboard.press("Enter");
  await page.getByRole("alert").filter({ hasText: "not valid" }).waitFor();
  await page.keyboard.press("Control+A");
  await page.keyboard.type(apiKey);
  await page.keyboard.press("Enter");
  await heading().filter({ hasText: "Subscriptions" }).waitFor();
  await shot("subscriptions-empty");

  // 2. A new subscription, by keyboard from the list; the API's field
  // violations appear next to their fields, and focus moves to the first.
  log("create, with violations first");
  await tabTo("the New subscription link", () => document.activeElement && document.activeElement.textContent === "New subscription" && document.activeElement.closest("main"));
  await page.keyboard.press("Enter");
  await heading().filter({ hasText: "New subscription" }).waitFor();
  await axe("new subscription form");
  const name = `console webhook ${suffix}`;
  await page.getByLabel("Name").fill(name);
  await page.getByLabel("Feature views").fill("user_items_added_to_cart");
  await page.getByLabel("Filter (CEL, optional)").fill('record.entity_keys["user_id"].startsWith(');
  await page.getByLabel("Webhook URL").fill("ftp://example.com/hook");
  await page.getByRole("button", { name: "Create subscription" }).click();
  const filterError = page.locator("#f-filter-error");
  await filterError.waitFor();
  const urlError = page.locator('[id="f-webhook.url-error"]');
  await urlError.waitFor();
  log("filter violation:", await filterError.textContent());
  log("url violation:", await urlError.textContent());
  if ((await page.getByLabel("Filter (CEL, optional)").getAttribute("aria-invalid")) !== "true") throw new Error("the filter field is not marked invalid");
  const focused = await page.evaluate(() => document.activeElement && document.activeElement.id);
  if (focused !== "f-filter") throw new Error(`focus is on ${focused}, want the first refused field f-filter`);
  await axe("form with violations");
  await shot("form-violations");

  await page.getByLabel("Filter (CEL, optional)").fill("");
  await page.getByLabel("Webhook URL").fill(receiverURL);
  await page.getByLabel("Workspace").fill("prod");
  await page.getByLabel("Feature service").fill("promo_fs");
  await page.getByRole("button", { name: "Create subscription" }).click();
  await heading().filter({ hasText: name }).waitFor();
  const secret = await page.getByTestId("secret").textContent();
  if (!/^whsec_/.test(secret)) throw new Error(`secret shown is ${secret}`);
  const webhookID = decodeURIComponent(page.url().split("#/subscriptions/")[1]);
  log("created", webhookID);

  // 3. See deliveries arrive: the chart's totals come from GetSubscriptionStats.
  log("wait for deliveries");
  await until("a delivery in the last-hour chart", async () => Number(await page.getByTestId("delivered-total").textContent()) >= 3, 90_000);
  await page.getByRole("button", { name: "I have stored it" }).click();
  await axe("subscription page");
  await shot("subscription");

  // 4. Test event, pause and resume, rotate the secret.
  log("test event, pause, resume, rotate");
  await page.getByRole("button", { name: "Send test event" }).click();
  await page.getByRole("status").filter({ hasText: "the receiver answered 2" }).waitFor();
  await page.getByRole("button", { name: "Pause" }).click();
  await heading().locator(".badge", { hasText: "PAUSED" }).waitFor();
  await page.getByRole("button", { name: "Resume" }).click();
  await heading().locator(".badge", { hasText: "ACTIVE" }).waitFor();
  await page.getByRole("button", { name: "Rotate secret" }).click();
  await page.getByTestId("secret").waitFor();
  if ((await page.getByTestId("secret").textContent()) === secret) throw new Error("rotating showed the old secret");
  await page.getByRole("button", { name: "I have stored it" }).click();

  // 5. Edit: the form is filled from the subscription and saves with its etag.
  await page.getByRole("link", { name: "Edit" }).click();
  await heading().filter({ hasText: "Edit subscription" }).waitFor();
  await page.getByLabel("Rate limit (events/s, optional)").fill("20");
  await page.getByRole("button", { name: "Save" }).click();
  await heading().filter({ hasText: name }).waitFor();
  await page.getByText("at most 20/s").waitFor();

  // 6. A replay of the last hour, watched until it ends.
  log("replay");
  await page.getByRole("button", { name: "Start replay" }).click();
  await page.locator("tr[data-replay] .badge", { hasText: "SUCCEEDED" }).first().waitFor({ timeout: 90_000 });
  const progress = await page.locator("tr[data-replay]").first().locator("td").nth(2).textContent();
  log("replay progress:", progress);
  const [read, total] = progress.match(/(\d+) \/ (\d+) records/).slice(1).map(Number);
  if (!(total > 0 && read === total)) throw new Error(`replay read ${read} of ${total} records, want all of some`);
  await shot("replay");

  // 7. Dead letters: a receiver that fails each first attempt, max 1
  // attempt; retry one from the console, then all.
  log("dead letters");
  const flakyName = `console flaky ${suffix}`;
  const flakyID = await createSubscription({ name: flakyName, url: failingURL, maxAttempts: 1,
    filter: 'record.entity_keys["user_id"] in ["u1", "u2", "u3", "u4", "u5"]' });
  await page.getByLabel("Show").selectOption("DEAD");
  const deadRow = page.locator("tr[data-delivery]").filter({ hasText: "DEAD" }).first();
  await deadRow.waitFor({ timeout: 60_000 });
  const deadText = await deadRow.textContent();
  if (!/HTTP 500/.test(deadText)) throw new Error(`the dead letter does not show its last error: ${deadText}`);
  const eventID = (await deadRow.locator("code").first().textContent()).trim();
  await shot("dead-letters");
  await deadRow.getByRole("button", { name: `Retry ${eventID}` }).click();
  await page.getByRole("status").filter({ hasText: "Retrying 1 delivery now." }).waitFor();
  await until(`the receiver to accept the retried ${eventID}`, async () => accepted.has(eventID), 60_000);
  await page.getByLabel("Show").selectOption("DELIVERED");
  await page.locator("tr[data-delivery]").filter({ hasText: eventID }).filter({ hasText: "DELIVERED" }).waitFor({ timeout: 30_000 });
  await page.getByLabel("Show").selectOption("DEAD");
  await page.locator("tr[data-delivery]").first().waitFor({ timeout: 60_000 });
  const retryAll = page.getByRole("button", { name: "Retry all" });
  await until("Retry all to be enabled", async () => retryAll.isEnabled());
  await retryAll.click();
  // New dead letters keep arriving, so the count may have grown since.
  const retriedAll = page.getByRole("status").filter({ hasText: /^Retrying \d+ deliver(y|ies) now\.$/ });
  await retriedAll.waitFor();
  const n = Number((await retriedAll.textContent()).match(/\d+/)[0]);
  log(`retried ${n} with Retry all`);

  // 8. A stream subscription's live tail (NDJSON over HTTP).
  log("live tail");
  const streamName = `console stream ${suffix}`;
  await createSubscription({ name: streamName, stream: true, enrich: true });
  await page.getByRole("button", { name: "Start live tail" }).click();
  await until("events in the live tail", async () => Number(await page.getByTestId("tail-count").textContent()) >= 3, 60_000);
  await axe("live tail");
  await shot("live-tail");
  await page.getByRole("button", { name: "Stop" }).click();

  // 9. The list shows all three; sign out returns to the sign-in page.
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Subscriptions" }).click();
  for (const n of [name, flakyName, streamName]) await page.getByRole("link", { name: n }).waitFor();
  await axe("subscription list");
  await shot("subscriptions");
  await page.getByRole("button", { name: "Sign out" }).click();
  await heading().filter({ hasText: "Sign in" }).waitFor();

  if (problems.length) throw new Error("the page reported errors:\n" + problems.join("\n"));
  console.log(JSON.stringify({ ok: true, webhook: webhookID, flaky: flakyID, retried: eventID, retried_all: n, screenshots: shots }));
} catch (err) {
  await shot("failure").catch(() => {});
  console.error(err.stack || String(err));
  if (problems.length) console.error("page problems:\n" + problems.join("\n"));
  process.exitCode = 1;
} finally {
  await context.close();
  // close() alone keeps the gateway's keep-alive connections (it retries
  // into this receiver), and they would keep node running after the test.
  failing.close();
  failing.closeAllConnections();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
