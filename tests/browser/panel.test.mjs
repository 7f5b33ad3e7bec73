// The ComfyMQ panel in the real ComfyUI frontend (comfyui-frontend-package 1.35.9, the one ComfyUI v0.8.0 pins),
// served by the stand-in ComfyUI with this repository loaded as a plugin (host + local worker), in headless
// Chromium. Each step acts as a user does (clicks, keys) and checks what the panel shows; screenshots go to
// tests/browser/artifacts/.

import {describe, it, before, after} from "node:test";
import assert from "node:assert/strict";
import {
  startComfy, launchBrowser, openComfy, openPanel, screenshot, testPrompt, loadWorkflow, setWidget, waitFor, sleep,
} from "./harness.mjs";

/** @typedef {import("playwright-core").Page} Page */

/** @type {Awaited<ReturnType<typeof startComfy>>} */
let comfy;
/** @type {import("playwright-core").Browser} */
let browser;
/** @type {Page} */
let page;
/** @type {string[]} */
let ours;
/** @type {string[]} */
let all;

/** The panel's row of a job. @param {string} id */
const row = (id) => page.locator(`.comfymq-panel .mq-job[data-job="${id}"]`);

/** Jobs newer than `since` (ids sort by enqueue order), newest first. @param {string} since */
async function jobsAfter(since) {
  const page1 = await comfy.api("/comfymq/jobs?limit=1000");
  return page1.jobs.filter((/** @type {any} */ j) => j.id > since);
}

async function newestId() {
  const r = await comfy.api("/comfymq/jobs?limit=1");
  return r.jobs[0]?.id || "";
}

/** Clicks the panel's Queue button and returns the jobs it made. @param {number} [expect] */
async function queueFromPanel(expect = 1) {
  const since = await newestId();
  await page.locator('.comfymq-panel [data-action="enqueue"]').click();
  return waitFor(async () => {
    const jobs = await jobsAfter(since);
    return jobs.length >= expect ? jobs : null;
  }, 15000, `${expect} new job(s)`);
}

/** @param {string} id @param {string} state */
async function rowState(id, state, timeout = 20000) {
  try {
    await row(id).and(page.locator(`[data-state="${state}"]`)).waitFor({timeout});
  } catch (e) {
    // Say what the server and the panel thought, so a timeout here can be told apart: the job never got there,
    // or the panel did not show it.
    const shown = await row(id).getAttribute("data-state", {timeout: 1000}).catch(() => "(no row)");
    const rec = await job(id).catch((/** @type {any} */ err) => ({error: String(err)}));
    const {prompt, workflow, ...brief} = rec || {};
    const lines = comfy.log().split("\n").slice(-80).join("\n");
    throw new Error(`${e}\nthe panel shows ${shown}; the server has ${JSON.stringify(brief)}\n` +
      `the stand-in's last log lines:\n${lines}`);
  }
}

/** The job's full record from the API. @param {string} id */
async function job(id) {
  return (await comfy.api(`/comfymq/jobs/${id}`)).job;
}

/** @param {number} n */
async function setCount(n) {
  await page.locator("#comfymq-count").fill(String(n));
}

function assertNoErrorsFromUs() {
  assert.deepEqual(ours, [], "console errors, page errors or failed requests from the ComfyMQ extension");
}

describe("ComfyMQ panel on ComfyUI frontend 1.35.9", () => {
  before(async () => {
    comfy = await startComfy({stepDelay: 0.05});
    browser = await launchBrowser();
    ({page, ours, all} = await openComfy(browser, comfy.url));
  });

  after(async () => {
    if (all && all.length) console.log(`(${all.length} console messages in total; ComfyUI's own are not failures)`);
    await browser?.close();
    await comfy?.stop();
  });

  it("adds the Queue (MQ) button, the menu entry and the sidebar tab, without console errors", async () => {
    await page.locator("button.comfymq-queue-button").waitFor();
    const commands = await page.evaluate(() => {
      const em = /** @type {any} */ (window).comfyAPI.app.app.extensionManager;
      return em.command.commands.map((/** @type {any} */ c) => c.id).filter((/** @type {string} */ id) => id.startsWith("ComfyMQ."));
    });
    assert.deepEqual(commands.sort(), ["ComfyMQ.QueueWorkflow", "ComfyMQ.TogglePanel"]);
    await openPanel(page);
    await page.locator(".comfymq-panel .mq-tab", {hasText: "Workers"}).locator(".mq-tag", {hasText: "1"}).waitFor();
    await screenshot(page, "01-panel-empty");
    assertNoErrorsFromUs();
  });

  it("queues the workflow: pending -> running (the progress bar moves) -> succeeded with its thumbnail", async () => {
    await loadWorkflow(page, testPrompt({steps: 40}), "fox test");
    await page.locator('.comfymq-panel [data-action="pause"]').click();
    await page.locator(".comfymq-panel .mq-banner", {hasText: "paused"}).waitFor();
    const [j] = await queueFromPanel();
    await rowState(j.id, "pending");
    await page.locator(".p-toast-message", {hasText: "Queued"}).first().waitFor();
    assert.match(await row(j.id).locator(".mq-name").innerText(), /fox test/);
    await screenshot(page, "02-pending-paused");

    await page.locator('.comfymq-panel [data-action="pause"]').click(); // resume
    await rowState(j.id, "running");
    const bar = row(j.id).locator('[role="progressbar"]');
    const first = Number(await bar.getAttribute("aria-valuenow"));
    const later = await waitFor(async () => {
      const v = Number(await row(j.id).locator('[role="progressbar"]').getAttribute("aria-valuenow"));
      return v > first ? v : 0;
    }, 10000, "the progress bar to move");
    assert.ok(later > first);
    await row(j.id).locator(".mq-meta", {hasText: /KSampler \d+\/40/}).waitFor(); // the executing node and its steps
    await screenshot(page, "03-running");

    await rowState(j.id, "succeeded", 30000);
    const img = row(j.id).locator(".mq-thumb img");
    await waitFor(() => img.evaluate((/** @type {HTMLImageElement} */ el) => el.complete && el.naturalWidth > 0), 10000,
      "the thumbnail to load");
    assert.match(await img.getAttribute("src") || "", /\/comfymq\/artifacts\//);
    await page.locator(".p-toast-message", {hasText: "Finished"}).first().waitFor();
    await screenshot(page, "04-succeeded");

    // full size
    await row(j.id).locator(".mq-thumb").click();
    const big = page.locator(".comfymq-lightbox img");
    await waitFor(() => big.evaluate((/** @type {HTMLImageElement} */ el) => el.complete && el.naturalWidth > 0), 10000,
      "the full-size image");
    await screenshot(page, "05-lightbox");
    await page.keyboard.press("Escape");
    await page.locator(".comfymq-lightbox").waitFor({state: "detached"});
    assertNoErrorsFromUs();
  });

  it("shows a job's details and opens its workflow in the canvas with the job's own seed", async () => {
    await loadWorkflow(page, testPrompt({steps: 5, seed: 777}), "seed check");
    const [j] = await queueFromPanel();
    await rowState(j.id, "succeeded", 30000);
    const ran = await job(j.id);
    const seed = ran.prompt["3"].inputs.seed;
    // the canvas moved on (randomize after generate): the open job must bring the job's seed back
    await loadWorkflow(page, testPrompt({steps: 5, seed: 1}), "something else");
    await row(j.id).click();
    await page.locator(".comfymq-panel .mq-details", {hasText: j.id}).waitFor();
    await page.locator('.comfymq-panel .mq-details [data-action="open"]').click();
    await page.locator(".p-toast-message", {hasText: "Opened seed check"}).first().waitFor();
    const shown = await page.evaluate(() => {
      const app = /** @type {any} */ (window).comfyAPI.app.app;
      const g = app.rootGraph ?? app.graph;
      return g.getNodeById(3).widgets.find((/** @type {any} */ w) => w.name === "seed").value;
    });
    assert.equal(shown, seed);
    await screenshot(page, "06-opened-workflow");
    await page.locator('.comfymq-panel .mq-details [data-action="close"]').click();
    assertNoErrorsFromUs();
  });

  it("cancels a running job", async () => {
    await loadWorkflow(page, testPrompt({steps: 2000}), "long run");
    const [j] = await queueFromPanel();
    await rowState(j.id, "running");
    await row(j.id).locator('[data-action="cancel"]').click();
    await rowState(j.id, "cancelled");
    assert.equal((await job(j.id)).state, "cancelled");
    await waitFor(async () => (await comfy.api("/comfymq/workers"))[0].running.length === 0, 15000, "the worker to stop");
    assertNoErrorsFromUs();
  });

  it("shows a failure (node and message) and retries the failed job", async () => {
    await loadWorkflow(page, testPrompt({steps: 3, fail: true}), "doomed");
    const [j] = await queueFromPanel();
    await rowState(j.id, "failed", 30000);
    // the row shows the failing node and the message (once the record is fetched after the state change)
    await row(j.id).locator(".mq-error-text", {hasText: "#10: the test node failed on purpose"}).waitFor();
    await page.locator(".p-toast-message", {hasText: "Failed: doomed"}).first().waitFor();
    const before = (await job(j.id)).history.length;
    await row(j.id).locator('[data-action="retry"]').click();
    await waitFor(async () => (await job(j.id)).history.length > before, 20000, "another attempt");
    await rowState(j.id, "failed", 30000);
    await row(j.id).click();
    const details = page.locator(".comfymq-panel .mq-details");
    await details.locator(".mq-errbox", {hasText: "RuntimeError"}).waitFor();
    assert.match(await details.locator(".mq-errbox").innerText(), /Fail Node \(#10\)|FailNode \(#10\)/);
    await screenshot(page, "07-failed-details");
    await details.locator('[data-action="close"]').click();
    assertNoErrorsFromUs();
  });

  it("shows ComfyUI's validation errors per node", async () => {
    await loadWorkflow(page, testPrompt({steps: 3}), "invalid");
    await setWidget(page, "3", "steps", 0); // below KSampler's minimum of 1
    const [j] = await queueFromPanel();
    await rowState(j.id, "failed", 30000);
    await row(j.id).click();
    const box = page.locator(".comfymq-panel .mq-details .mq-errbox");
    await box.waitFor();
    assert.match(await box.innerText(), /validation_error/);
    assert.match(await box.locator("li").first().innerText(), /KSampler \(#3\).*smaller than min/i);
    await screenshot(page, "08-validation-error");
    await page.locator('.comfymq-panel .mq-details [data-action="close"]').click();
    assertNoErrorsFromUs();
  });

  it("says why a waiting job is not taken (a checkpoint no worker has)", async () => {
    await loadWorkflow(page, testPrompt({steps: 3}), "needs a model");
    await setWidget(page, "4", "ckpt_name", "missing-model.safetensors");
    const [j] = await queueFromPanel();
    // not the green "Queued": a warning that names why, and the panel has the job selected
    const warn = page.locator(".p-toast-message-warn", {hasText: "no worker can run it yet"});
    await warn.waitFor();
    assert.match(await warn.innerText(), /worker standin-gpu: missing checkpoint missing-model\.safetensors/);
    assert.match(await warn.innerText(), /ComfyMQ panel/);
    assert.equal(await page.locator(".p-toast-message-success", {hasText: "needs a model"}).count(), 0);
    await row(j.id).and(page.locator('[aria-current="true"]')).waitFor();
    await page.locator(".comfymq-panel .mq-details .mq-waitbox").waitFor();
    await rowState(j.id, "pending");
    await row(j.id).locator(".mq-row-main", {hasText: "missing checkpoint missing-model.safetensors"}).waitFor({timeout: 15000});
    await row(j.id).click();
    const box = page.locator(".comfymq-panel .mq-details .mq-waitbox");
    await box.waitFor();
    assert.match(await box.innerText(), /worker standin-gpu .*missing checkpoint missing-model\.safetensors/);
    await screenshot(page, "09-waiting-reason");
    await page.locator('.comfymq-panel .mq-details [data-action="cancel"]').click();
    await rowState(j.id, "cancelled");
    await page.locator('.comfymq-panel .mq-details [data-action="close"]').click();
    assertNoErrorsFromUs();
  });

  it("shows a job that waits for another: the job it waits for (opens it), then cancelled with it", async () => {
    const post = (/** @type {any} */ body) => comfy.api("/comfymq/jobs", {method: "POST", body: JSON.stringify(body)});
    const first = (await post({prompt: testPrompt({ckpt: "missing-model.safetensors", steps: 2})})).jobs[0].id;
    const second = (await post({prompt: testPrompt({steps: 2}), after: [first]})).jobs[0].id;
    await rowState(second, "pending");
    const waits = row(second).locator(".mq-waits-for");
    await waits.waitFor();
    assert.match(await waits.innerText(), new RegExp(`job ${first}`));
    await row(second).click();
    const details = page.locator(".comfymq-panel .mq-details");
    await details.locator(".mq-waitdeps", {hasText: `waits for job ${first} (pending) to succeed`}).waitFor();
    assert.equal(await details.locator(".mq-waitbox").count(), 0, "not a worker problem");
    await screenshot(page, "09b-waits-for-job");
    await details.locator('[data-action="open-job"]', {hasText: first}).first().click();
    await row(first).and(page.locator('[aria-current="true"]')).waitFor();
    await details.locator(".mq-waitbox", {hasText: "missing checkpoint missing-model.safetensors"}).waitFor();
    await details.locator('[data-action="cancel"]').click();
    await rowState(first, "cancelled");
    await rowState(second, "cancelled");
    await row(second).locator(".mq-row-main", {hasText: `it waits for job ${first}, which was cancelled`}).waitFor();
    await details.locator('[data-action="close"]').click();
    assertNoErrorsFromUs();
  });

  it("a host that refuses jobs no worker can run (409 unrunnable): an error toast with the reasons", async () => {
    // the answer of a host with unrunnable_jobs = "refuse" (docs/http-api.md), played here for this one request
    const refusal = {error: {type: "unrunnable", message: "no online worker can run this job",
      waiting: ["worker standin-gpu (standin-gpu-1234): missing checkpoint sdxl.safetensors"]}};
    await page.route("**/comfymq/jobs", (route) => route.request().method() === "POST"
      ? route.fulfill({status: 409, contentType: "application/json", body: JSON.stringify(refusal)}) : route.fallback());
    const since = await newestId();
    try {
      await page.locator('.comfymq-panel [data-action="enqueue"]').click();
      const err = page.locator(".p-toast-message-error", {hasText: "Not queued: no worker can run this workflow"});
      await err.waitFor();
      assert.match(await err.innerText(), /worker standin-gpu: missing checkpoint sdxl\.safetensors/);
    } finally {
      await page.unroute("**/comfymq/jobs");
    }
    assert.deepEqual(await jobsAfter(since), [], "nothing was queued");
    // the 409 was the point of this step
    const others = ours.filter((l) => !/409/.test(l));
    ours.length = 0;
    ours.push(...others);
    assertNoErrorsFromUs();
  });

  it("count 3 with a randomized seed makes 3 jobs with 3 different seeds, and one toast for the batch", async () => {
    await loadWorkflow(page, testPrompt({steps: 2}), "three foxes");
    await setCount(3);
    const jobs = await queueFromPanel(3);
    await setCount(1);
    const seeds = new Set();
    for (const j of jobs) seeds.add((await job(j.id)).prompt["3"].inputs.seed);
    assert.equal(seeds.size, 3, "distinct seeds");
    const batch = jobs[0].batch_id;
    assert.ok(batch && jobs.every((/** @type {any} */ j) => j.batch_id === batch));
    await page.locator(`.comfymq-panel .mq-batch[data-batch="${batch}"]`, {hasText: "3/3 done"}).waitFor({timeout: 30000});
    await page.locator(".p-toast-message", {hasText: "Batch finished: three foxes (3 jobs)"}).waitFor();
    assert.equal(await page.locator(".p-toast-summary", {hasText: /^Finished: three foxes/}).count(), 0,
      "no toast per job of a batch");
    await screenshot(page, "10-batch");
    assertNoErrorsFromUs();
  });

  it("count 3 with the seed on increment makes seeds s, s+1, s+2 (as ComfyUI's Queue button would)", async () => {
    await loadWorkflow(page, testPrompt({steps: 2, seed: 5000}), "increment");
    await setWidget(page, "3", "control_after_generate", "increment");
    await setCount(3);
    const jobs = await queueFromPanel(3);
    await setCount(1);
    const seeds = [];
    for (const j of jobs) seeds.push((await job(j.id)).prompt["3"].inputs.seed);
    assert.deepEqual(seeds.sort(), [5000, 5001, 5002]);
    const next = await page.evaluate(() => {
      const app = /** @type {any} */ (window).comfyAPI.app.app;
      return (app.rootGraph ?? app.graph).getNodeById(3).widgets.find((/** @type {any} */ w) => w.name === "seed").value;
    });
    assert.equal(next, 5003, "the widget moved on, as after ComfyUI's own Queue");
    assertNoErrorsFromUs();
  });

  it("sweeps one widget's values (KSampler cfg 4, 6, 8)", async () => {
    await loadWorkflow(page, testPrompt({steps: 2}), "cfg sweep");
    await page.locator(".comfymq-panel details.mq-sweep > summary").click();
    const axis = page.locator(".comfymq-panel .mq-axis").first();
    await axis.locator("select").first().selectOption("3");
    await axis.locator("select").nth(1).selectOption("cfg");
    await axis.locator("input.mq-values").fill("4, 6, 8");
    await page.locator(".comfymq-panel .mq-sweep-foot", {hasText: "= 3 jobs"}).waitFor();
    await screenshot(page, "11-sweep-form");
    const jobs = await queueFromPanel(3);
    const cfgs = [];
    for (const j of jobs) cfgs.push((await job(j.id)).prompt["3"].inputs.cfg);
    assert.deepEqual(cfgs.sort(), [4, 6, 8]);
    await axis.locator("input.mq-values").fill("");
    await page.locator(".comfymq-panel details.mq-sweep > summary").click();
    assertNoErrorsFromUs();
  });

  it("queues with Ctrl+Shift+Enter and with the action bar's Queue (MQ) button", async () => {
    await loadWorkflow(page, testPrompt({steps: 2}), "keys");
    let since = await newestId();
    await page.locator("#graph-canvas").click({position: {x: 700, y: 700}});
    await page.keyboard.press("Control+Shift+Enter");
    await waitFor(async () => (await jobsAfter(since)).length === 1, 10000, "a job queued by the key");
    since = await newestId();
    await page.locator("button.comfymq-queue-button").click();
    await waitFor(async () => (await jobsAfter(since)).length === 1, 10000, "a job queued by the button");
    // this frontend renders the action-bar button: the top-menu fallback of older frontends never comes
    assert.equal(await page.locator(".comfymq-queue-button, .comfymq-queue-fallback").count(), 1);
    // ComfyUI's own queue got nothing from the key (its "Queue Prompt (Front)" did not run)
    const history = await comfy.api("/history");
    assert.ok(Object.values(history).every((/** @type {any} */ h) => h.prompt?.[3]?.client_id !== "browser"));
    assertNoErrorsFromUs();
  });

  it("stays responsive with 1,200 jobs: windowed rows, paging, live deltas, cancelling the batch", async (t) => {
    await comfy.api("/comfymq/queue/pause", {method: "POST"});
    // whatever happens below, the 1,200 jobs must not be left for the worker to run in the later tests
    t.after(async () => {
      await comfy.api("/comfymq/batches/load-test.abcdef/cancel", {method: "POST"});
      await comfy.api("/comfymq/queue/resume", {method: "POST"});
    });
    const r = await comfy.api("/comfymq/jobs", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({prompt: testPrompt({steps: 1}), count: 1200, batch_id: "load-test.abcdef"})});
    assert.equal(r.jobs.length, 1200);
    await page.locator('.comfymq-panel .mq-chip[data-state="pending"]', {hasText: "1,200"}).waitFor({timeout: 15000});
    const list = page.locator(".comfymq-panel .mq-list");
    const rendered = await list.locator(".mq-job").count();
    assert.ok(rendered < 60, `only the visible rows are in the DOM (${rendered})`);
    // scrolling to the end loads the next pages
    for (let i = 0; i < 4; i++) {
      await list.evaluate((el) => {
        el.scrollTop = el.scrollHeight;
      });
      await sleep(400);
    }
    const loaded = await list.evaluate((el) => el.querySelectorAll(".mq-job").length);
    assert.ok(loaded < 80, `still windowed after scrolling (${loaded})`);
    const height = await list.evaluate((el) => el.scrollHeight);
    assert.ok(height > 66 * 300, "more than the first page is loaded");
    await list.evaluate((el) => {
      el.scrollTop = 0;
    });
    // keyboard: into the list (the top row, once the window has followed the scroll), down two rows
    const top = list.locator('.mq-job[aria-posinset="1"]');
    await top.waitFor({timeout: 5000});
    await top.focus();
    await page.keyboard.press("ArrowDown");
    await page.keyboard.press("ArrowDown");
    const focused = await page.evaluate(() => document.activeElement?.getAttribute("aria-posinset"));
    assert.equal(focused, "3");
    await screenshot(page, "12-many-jobs");
    // a delta for one of them changes that row in place, without reloading the list
    let listRequests = 0;
    const count = (/** @type {import("playwright-core").Request} */ req) => {
      if (/\/comfymq\/jobs\?(?!prompt_id)/.test(req.url())) listRequests++;
    };
    page.on("request", count);
    const target = r.jobs[1199].id; // the newest: at the top
    // focused while its job changes: the row is rebuilt, and the focus goes to the new row (not to the body)
    await page.keyboard.press("Home");
    const focusedKey = () => page.evaluate(() => /** @type {HTMLElement} */ (document.activeElement)?.dataset?.key || "");
    assert.equal(await focusedKey(), target);
    const before = await row(target).elementHandle();
    await comfy.api(`/comfymq/jobs/${target}/cancel`, {method: "POST"});
    await rowState(target, "cancelled");
    assert.ok(await before?.evaluate((el) => !el.isConnected), "the row was rebuilt");
    assert.equal(await focusedKey(), target, "the focus stayed on the row whose job changed");
    await page.keyboard.press("ArrowDown");
    assert.equal(await page.evaluate(() => document.activeElement?.getAttribute("aria-posinset")), "2",
      "the keys still move from it");
    page.off("request", count);
    assert.equal(listRequests, 0, "no list refetch for one change");
    // cancel the whole batch from its batch row (with the confirmation dialog)
    await page.locator('.comfymq-panel .mq-batch[data-batch="load-test.abcdef"] [data-action="cancel-batch"]').click();
    await page.locator(".p-dialog").getByRole("button", {name: /confirm|yes|ok/i}).click();
    await page.locator('.comfymq-panel .mq-chip[data-state="pending"]', {hasText: /^\s*Pending 0\s*$/}).waitFor({timeout: 20000});
    await comfy.api("/comfymq/queue/resume", {method: "POST"});
    assertNoErrorsFromUs();
  });

  it("shows the workers: online, current job with progress, heartbeat, host facts, models; drain and undrain", async (t) => {
    await page.locator(".comfymq-panel .mq-tab", {hasText: "Workers"}).click();
    t.after(() => page.locator(".comfymq-panel .mq-tab", {hasText: "Queue"}).click());
    const card = page.locator(".comfymq-panel .mq-worker").first();
    await card.waitFor();
    const text = await card.innerText();
    assert.match(text, /standin-gpu/);
    assert.match(text, /idle|busy/);
    assert.match(text, /heartbeat (just now|[\d.]+s ago)/);
    assert.match(text, /\d+ models/);
    assert.match(text, /ComfyUI 0\.8\.0/);
    // a running job shows on its worker with progress
    await loadWorkflow(page, testPrompt({steps: 200}), "worker view");
    const since = await newestId();
    await page.locator("button.comfymq-queue-button").click();
    const [j] = await waitFor(async () => {
      const js = await jobsAfter(since);
      return js.length ? js : null;
    }, 10000, "the job");
    await card.locator('[role="progressbar"]').waitFor({timeout: 15000});
    await screenshot(page, "13-workers");
    await card.locator('[data-action="drain"]').click();
    await card.locator(".mq-pill", {hasText: "draining"}).waitFor();
    assert.equal((await comfy.api("/comfymq/workers"))[0].draining, true);
    await card.locator('[data-action="drain"]').click();
    await card.locator(".mq-pill", {hasText: /idle|busy/}).waitFor();
    await comfy.api(`/comfymq/jobs/${j.id}/cancel`, {method: "POST"});
    await page.locator(".comfymq-panel .mq-tab", {hasText: "Queue"}).click();
    assertNoErrorsFromUs();
  });

  it("recovers after the websocket reconnects", async () => {
    const since = await newestId();
    await page.evaluate(() => /** @type {any} */ (window).comfyAPI.api.api.socket.close());
    await comfy.api("/comfymq/jobs", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({prompt: testPrompt({steps: 1}), metadata: {prompt_id: "while-away"}})});
    const [j] = await waitFor(async () => {
      const js = await jobsAfter(since);
      return js.length ? js : null;
    }, 10000, "the job");
    await row(j.id).waitFor({timeout: 20000});
    await rowState(j.id, "succeeded", 30000);
    assertNoErrorsFromUs();
  });

  it("reads well in the light theme", async () => {
    await page.evaluate(() => /** @type {any} */ (window).comfyAPI.app.app.extensionManager.setting.set("Comfy.ColorPalette", "light"));
    await sleep(500);
    const colors = await page.locator(".comfymq-panel").evaluate((el) => {
      const s = getComputedStyle(el);
      return {fg: s.color, bg: getComputedStyle(el.closest(".side-bar-panel, .sidebar-content-container") || document.body).backgroundColor};
    });
    await screenshot(page, "14-light-theme");
    await page.locator(".comfymq-panel .mq-tab", {hasText: "Workers"}).click();
    await screenshot(page, "15-light-workers");
    await page.locator(".comfymq-panel .mq-tab", {hasText: "Queue"}).click();
    await page.evaluate(() => /** @type {any} */ (window).comfyAPI.app.app.extensionManager.setting.set("Comfy.ColorPalette", "dark"));
    assert.notEqual(colors.fg, "rgb(221, 221, 221)", "the text colour follows the light palette");
    assertNoErrorsFromUs();
  });

  it("closes cleanly: the tab's listeners and timers stop with it", async () => {
    await page.getByRole("button", {name: "ComfyMQ queue and workers"}).click();
    await page.locator(".comfymq-panel").waitFor({state: "detached"});
    await sleep(1200);
    await openPanel(page);
    await page.locator(".comfymq-panel .mq-job").first().waitFor();
    assertNoErrorsFromUs();
  });
});
