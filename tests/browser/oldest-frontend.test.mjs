// The panel on the oldest comfyui-frontend-package supported (harness.mjs OLDEST_FRONTEND: 1.27.10, the one
// ComfyUI v0.3.64 pins; unpacked by tools/setup-debian.sh). That frontend has no action-bar buttons for
// extensions, so the Queue (MQ) button is the fallback in its top menu: exactly one button, and it queues; a job
// it queues that no worker can run is a warning toast, and the panel opens on that job.

import {describe, it, before, after} from "node:test";
import assert from "node:assert/strict";
import {existsSync} from "node:fs";
import {
  startComfy, launchBrowser, openComfy, openPanel, screenshot, testPrompt, loadWorkflow, setWidget, waitFor,
  OLDEST_FRONTEND, OLDEST_FRONTEND_ROOT,
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

// Model loader classes 1.27.10's model-to-node table looks up as soon as it builds a combo widget; it fails on
// every one (no widget, a node that cannot be loaded) when a class is missing. Every real ComfyUI has them; the
// stand-in offers a smaller set, so its /object_info gets a copy of CheckpointLoaderSimple under each missing name.
// Only the frontend sees these: no workflow here uses them.
const MODEL_LOADERS = ["CheckpointLoaderSimple", "ImageOnlyCheckpointLoader", "LoraLoader", "LoraLoaderModelOnly",
  "VAELoader", "ControlNetLoader", "UNETLoader", "UpscaleModelLoader", "StyleModelLoader", "GLIGENLoader"];

/** @param {import("playwright-core").BrowserContext} context */
async function completeObjectInfo(context) {
  await context.route(/\/object_info$/, async (route) => {
    const res = await route.fetch();
    const info = await res.json();
    for (const name of MODEL_LOADERS) {
      if (!info[name]) info[name] = {...info.CheckpointLoaderSimple, name, display_name: name};
    }
    await route.fulfill({response: res, json: info});
  });
}

describe(`ComfyMQ panel on ComfyUI frontend ${OLDEST_FRONTEND} (the oldest supported)`, () => {
  before(async () => {
    assert.ok(existsSync(OLDEST_FRONTEND_ROOT),
      `${OLDEST_FRONTEND_ROOT} is missing: tools/setup-debian.sh unpacks comfyui-frontend-package==${OLDEST_FRONTEND} there`);
    comfy = await startComfy({frontendRoot: OLDEST_FRONTEND_ROOT, stepDelay: 0.05});
    browser = await launchBrowser();
    ({page, ours} = await openComfy(browser, comfy.url, {beforeLoad: completeObjectInfo}));
  });

  after(async () => {
    await browser?.close();
    await comfy?.stop();
  });

  it("opens the panel: the queue, and the worker in the Workers tab", async () => {
    assert.equal(await page.evaluate(() => /** @type {any} */ (window).__COMFYUI_FRONTEND_VERSION__), OLDEST_FRONTEND);
    await openPanel(page);
    await page.locator('.comfymq-panel .mq-chip[data-state="pending"]').waitFor();
    await page.locator(".comfymq-panel .mq-tab", {hasText: "Workers"}).click();
    await page.locator(".comfymq-panel .mq-worker", {hasText: "standin-gpu"}).waitFor();
    await page.locator(".comfymq-panel .mq-tab", {hasText: "Queue"}).click();
    assert.deepEqual(ours, []);
  });

  it("has one Queue (MQ) button, in the top menu, and it queues the workflow", async () => {
    const fallback = page.locator("button.comfymq-queue-fallback");
    await fallback.waitFor();
    assert.equal(await fallback.count(), 1);
    assert.equal(await page.locator(".comfymq-queue-button").count(), 0, "this frontend renders no action-bar button");
    assert.ok(await fallback.evaluate((el) => !!el.closest(".comfyui-menu")), "in the top menu");
    await loadWorkflow(page, testPrompt({steps: 10}), "oldest frontend");
    const since = await newestId();
    await fallback.click();
    const j = await oneJobAfter(since);
    await page.locator(".p-toast-message", {hasText: "Queued in ComfyMQ"}).first().waitFor();
    const row = page.locator(`.comfymq-panel .mq-job[data-job="${j.id}"]`);
    await row.and(page.locator('[data-state="succeeded"]')).waitFor({timeout: 30000});
    await screenshot(page, `oldest-${OLDEST_FRONTEND}-fallback-button`);
    assert.deepEqual(ours, []);
  });

  it("a job no worker can run, queued while the panel is closed: a warning, and the panel opens on it", async () => {
    await page.getByRole("button", {name: "ComfyMQ queue and workers"}).click();
    await page.locator(".comfymq-panel").waitFor({state: "detached"});
    await setWidget(page, "4", "ckpt_name", "nobody-has-it.safetensors");
    const since = await newestId();
    await page.locator("button.comfymq-queue-fallback").click();
    const j = await oneJobAfter(since);
    const warn = page.locator(".p-toast-message-warn", {hasText: "no worker can run it yet"});
    await warn.waitFor();
    assert.match(await warn.innerText(), /missing checkpoint nobody-has-it\.safetensors/);
    await openPanel(page);
    await page.locator(`.comfymq-panel .mq-job[data-job="${j.id}"][aria-current="true"]`).waitFor();
    await page.locator(".comfymq-panel .mq-details .mq-waitbox", {hasText: "nobody-has-it.safetensors"}).waitFor();
    await screenshot(page, `oldest-${OLDEST_FRONTEND}-unrunnable`);
    await page.locator('.comfymq-panel .mq-details [data-action="cancel"]').click();
    await page.locator(`.comfymq-panel .mq-job[data-job="${j.id}"][data-state="cancelled"]`).waitFor();
    await setWidget(page, "4", "ckpt_name", "a.safetensors");
    assert.deepEqual(ours, []);
  });

  it("queues with Ctrl+Shift+Enter", async () => {
    const since = await newestId();
    await page.locator("#graph-canvas").click({position: {x: 800, y: 700}});
    await page.keyboard.press("Control+Shift+Enter");
    await oneJobAfter(since);
    assert.equal(await page.locator("button.comfymq-queue-fallback").count(), 1, "still one button");
    assert.deepEqual(ours, []);
  });
});
