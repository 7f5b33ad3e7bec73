// The same panel on the newest comfyui-frontend-package checked (harness.mjs NEWEST_FRONTEND, unpacked by
// tools/setup-debian.sh): the public surface it uses (registerExtension, sidebar tab, action bar button, toasts,
// graphToPrompt, loadGraphData, api events) still works there.

import {describe, it, before, after} from "node:test";
import assert from "node:assert/strict";
import {existsSync} from "node:fs";
import {
  startComfy, launchBrowser, openComfy, openPanel, screenshot, testPrompt, loadWorkflow, waitFor,
  NEWEST_FRONTEND, NEWEST_FRONTEND_ROOT,
} from "./harness.mjs";

/** @type {Awaited<ReturnType<typeof startComfy>>} */
let comfy;
/** @type {import("playwright-core").Browser} */
let browser;
/** @type {import("playwright-core").Page} */
let page;
/** @type {string[]} */
let ours;

async function newestId() {
  return (await comfy.api("/comfymq/jobs?limit=1")).jobs[0]?.id || "";
}

/** @param {string} since */
async function oneJobAfter(since) {
  return waitFor(async () => {
    const jobs = (await comfy.api("/comfymq/jobs?limit=20")).jobs.filter((/** @type {any} */ j) => j.id > since);
    return jobs.length === 1 ? jobs[0] : null;
  }, 15000, "one new job");
}

describe(`ComfyMQ panel on ComfyUI frontend ${NEWEST_FRONTEND} (the newest checked)`, () => {
  before(async () => {
    assert.ok(existsSync(NEWEST_FRONTEND_ROOT),
      `${NEWEST_FRONTEND_ROOT} is missing: tools/setup-debian.sh unpacks comfyui-frontend-package==${NEWEST_FRONTEND} there`);
    comfy = await startComfy({frontendRoot: NEWEST_FRONTEND_ROOT, stepDelay: 0.05});
    browser = await launchBrowser();
    ({page, ours} = await openComfy(browser, comfy.url));
  });

  after(async () => {
    await browser?.close();
    await comfy?.stop();
  });

  it("queues from the panel and shows the job through to its thumbnail", async () => {
    await loadWorkflow(page, testPrompt({steps: 20}), "newest frontend");
    await openPanel(page);
    const since = await newestId();
    await page.locator('.comfymq-panel [data-action="enqueue"]').click();
    const j = await oneJobAfter(since);
    const row = page.locator(`.comfymq-panel .mq-job[data-job="${j.id}"]`);
    await row.and(page.locator('[data-state="succeeded"]')).waitFor({timeout: 30000});
    const img = row.locator(".mq-thumb img");
    await waitFor(() => img.evaluate((/** @type {HTMLImageElement} */ el) => el.complete && el.naturalWidth > 0), 10000,
      "the thumbnail");
    await screenshot(page, `newest-${NEWEST_FRONTEND}-panel`);
    assert.deepEqual(ours, []);
  });

  it("queues with the action bar button and with Ctrl+Shift+Enter", async () => {
    let since = await newestId();
    await page.locator("button.comfymq-queue-button").click();
    await oneJobAfter(since);
    // the action-bar button, and no top-menu fallback besides it (that is for frontends without action-bar buttons)
    assert.equal(await page.locator(".comfymq-queue-button, .comfymq-queue-fallback").count(), 1);
    since = await newestId();
    await page.locator("#graph-canvas").click({position: {x: 800, y: 700}});
    await page.keyboard.press("Control+Shift+Enter");
    await oneJobAfter(since);
    assert.deepEqual(ours, []);
  });

  it("opens a job's workflow and lists the worker", async () => {
    const id = await newestId();
    const row = page.locator(`.comfymq-panel .mq-job[data-job="${id}"]`);
    await row.and(page.locator('[data-state="succeeded"]')).waitFor({timeout: 30000});
    await row.locator('[data-action="open"]').click();
    await waitFor(() => page.evaluate(() => {
      const w = /** @type {any} */ (window).comfyAPI.app.app.extensionManager.workflow.activeWorkflow;
      return /\(job [0-9a-f]{6,16}\)/.test(w?.filename || w?.path || "");
    }), 10000, "the job's workflow tab");
    await page.locator(".comfymq-panel .mq-tab", {hasText: "Workers"}).click();
    await page.locator(".comfymq-panel .mq-worker", {hasText: "standin-gpu"}).waitFor();
    await screenshot(page, `newest-${NEWEST_FRONTEND}-workers`);
    assert.deepEqual(ours, []);
  });
});
