// The panel against a host that requires an access token (COMFYMQ_TOKEN), on the pinned frontend: without the
// token the panel says what is missing and where to enter it; entered in ComfyUI's settings, the panel reloads by
// itself, queues, and shows the result's thumbnail, full-size view and original file (artifacts are fetched with
// the Authorization header, since an <img> or a new tab cannot send it).

import {describe, it, before, after} from "node:test";
import assert from "node:assert/strict";
import {startComfy, launchBrowser, openComfy, openPanel, screenshot, testPrompt, loadWorkflow, waitFor, sleep}
  from "./harness.mjs";

const TOKEN = "browser-test-token-1234";

/** @type {Awaited<ReturnType<typeof startComfy>>} */
let comfy;
/** @type {import("playwright-core").Browser} */
let browser;
/** @type {import("playwright-core").Page} */
let page;
/** @type {string[]} */
let ours;

/** Sets a ComfyUI setting through the frontend's public settings API (what the settings dialog does). */
async function setSetting(/** @type {string} */ id, /** @type {unknown} */ value) {
  await page.evaluate(async ([k, v]) => {
    await /** @type {any} */ (window).comfyAPI.app.app.extensionManager.setting.set(k, v);
  }, /** @type {const} */ ([id, value]));
}

const banner = () => page.locator(".comfymq-panel .mq-banner.mq-error");

/** A refused request, as our response listener or Chromium's console reports it. @param {string} line */
const is401 = (line) => line.startsWith("HTTP 401") || line.includes("status of 401 (Unauthorized)");

/** Takes the expected 401s out of the problems seen so far; anything else stays and fails the test. */
function drop401s() {
  const others = ours.filter((l) => !is401(l));
  ours.length = 0;
  ours.push(...others);
}

describe("ComfyMQ panel with an access token on the host", () => {
  before(async () => {
    comfy = await startComfy({stepDelay: 0.02, token: TOKEN});
    browser = await launchBrowser();
    ({page, ours} = await openComfy(browser, comfy.url));
  });

  after(async () => {
    await browser?.close();
    await comfy?.stop();
  });

  it("without the token: every ComfyMQ route says 401, and the panel says where to enter the token", async () => {
    const r = await fetch(comfy.url + "/comfymq/jobs");
    assert.equal(r.status, 401);
    assert.equal((await r.json()).error.type, "unauthorized");
    // ComfyUI's own routes are not ours to guard
    assert.equal((await fetch(comfy.url + "/system_stats")).status, 200);
    await openPanel(page);
    await banner().filter({hasText: /needs its access token.*Settings > ComfyMQ > Access token/}).waitFor();
    await screenshot(page, "token-1-missing", {panelOnly: true});
    // the 401s were the point of this step
    assert.ok(ours.some(is401), "the panel's requests were refused");
    drop401s();
    assert.deepEqual(ours, []);
  });

  it("a wrong token is named as wrong", async () => {
    await setSetting("ComfyMQ.Token", "not-the-token-000");
    await banner().filter({hasText: /is not this host's COMFYMQ_TOKEN/}).waitFor();
    drop401s();
    assert.deepEqual(ours, []);
  });

  it("while refused it stops asking: no request reaches the host until the token changes, whatever happens there", async () => {
    await banner().filter({hasText: /is not this host's COMFYMQ_TOKEN/}).waitFor();
    await sleep(1000); // the requests of the reload that found the token wrong
    /** @type {string[]} */
    const sent = [];
    const onRequest = (/** @type {import("playwright-core").Request} */ r) => {
      if (/\/comfymq\//.test(new URL(r.url()).pathname)) sent.push(`${r.method()} ${new URL(r.url()).pathname}`);
    };
    page.on("request", onRequest);
    // activity on the host: job, stats and worker events reach this page's websocket all along
    await comfy.api("/comfymq/jobs", {method: "POST", body: JSON.stringify({prompt: testPrompt({steps: 40}), count: 3})});
    await page.locator(".comfymq-panel .mq-tab", {hasText: "Workers"}).click();
    await sleep(3000);
    await page.locator(".comfymq-panel .mq-tab", {hasText: "Queue"}).click();
    await sleep(3000);
    page.off("request", onRequest);
    assert.deepEqual(sent, [], "requests sent while the token is refused");
    await banner().filter({hasText: /is not this host's COMFYMQ_TOKEN/}).waitFor();
    drop401s();
    assert.deepEqual(ours, []);
  });

  it("with the token entered, the panel reloads by itself, queues and shows the thumbnail, full size and original", async () => {
    await setSetting("ComfyMQ.Token", TOKEN);
    await banner().waitFor({state: "hidden"});
    await page.locator('.comfymq-panel .mq-chip[data-state="pending"]').waitFor();
    drop401s();  // reported late by the console, from before the token was right

    await loadWorkflow(page, testPrompt({steps: 5}), "token check");
    const before = (await comfy.api("/comfymq/jobs?limit=1")).jobs[0]?.id || "";
    await page.locator('.comfymq-panel [data-action="enqueue"]').click();
    const j = await waitFor(async () => {
      const jobs = (await comfy.api("/comfymq/jobs?limit=10")).jobs.filter((/** @type {any} */ x) => x.id > before);
      return jobs.length === 1 ? jobs[0] : null;
    }, 15000, "the queued job");
    const row = page.locator(`.comfymq-panel .mq-job[data-job="${j.id}"]`);
    await row.and(page.locator('[data-state="succeeded"]')).waitFor({timeout: 30000});

    const img = row.locator(".mq-thumb img");
    await waitFor(() => img.evaluate((/** @type {HTMLImageElement} */ el) => el.complete && el.naturalWidth > 0), 10000,
      "the thumbnail, fetched with the token");
    assert.match(await img.getAttribute("src") || "", /^blob:/);

    await row.locator(".mq-thumb").click();
    const big = page.locator(".comfymq-lightbox img");
    await waitFor(() => big.evaluate((/** @type {HTMLImageElement} */ el) => el.complete && el.naturalWidth > 0), 10000,
      "the full-size image");
    // "Original" opens in a new tab, which cannot send the header: it points at the fetched file, as a download
    const original = page.locator(".comfymq-lightbox a", {hasText: "Original"});
    await waitFor(async () => /^blob:/.test(await original.getAttribute("href") || ""), 5000, "the original's blob link");
    assert.match(await original.getAttribute("download") || "", /\.png$/);
    await screenshot(page, "token-2-lightbox");
    await page.keyboard.press("Escape");
    assert.deepEqual(ours, []);
  });
});
