// The panel of a ComfyUI in role "worker" (COMFYMQ_ROLE=worker): two stand-ins, a host (role both) and a worker
// of its broker that knows the host's HTTP address (COMFYMQ_HOST_URL). The worker's panel shows its worker card
// (whose worker, the link, the ComfyUI it drives, the job it runs) and asks for GET /comfymq/status only while it
// is open; its Queue (MQ) sends the workflow to the host. The states a running pair does not show on demand (a
// refusal, a worker without the host's address) are played with a stand-in answer of /comfymq/status.

import {describe, it, before, after} from "node:test";
import assert from "node:assert/strict";
import {startComfy, launchBrowser, openComfy, openPanel, screenshot, testPrompt, loadWorkflow, waitFor, sleep}
  from "./harness.mjs";

/** @type {Awaited<ReturnType<typeof startComfy>>} */
let host;
/** @type {Awaited<ReturnType<typeof startComfy>>} */
let worker;
/** @type {import("playwright-core").Browser} */
let browser;
/** @type {import("playwright-core").Page} */
let page;
/** @type {string[]} */
let ours;
/** @type {string[]} every /comfymq request the worker's page made, "METHOD /path" */
const requests = [];

const card = () => page.locator(".comfymq-panel .mq-worker-role");

async function newestHostJob() {
  return (await host.api("/comfymq/jobs?limit=1")).jobs[0]?.id || "";
}

describe("ComfyMQ panel on a ComfyUI in role worker", () => {
  before(async () => {
    host = await startComfy({stepDelay: 0.05});
    worker = await startComfy({stepDelay: 0.05, env: {COMFYMQ_ROLE: "worker", COMFYMQ_BROKER: host.broker,
      COMFYMQ_WORKER_NAME: "gpu-two", COMFYMQ_HOST_URL: host.url}});
    // the host's own local worker is drained: what the worker's page queues runs on the worker
    await waitFor(async () => (await host.api("/comfymq/workers")).some((/** @type {any} */ w) => w.name === "gpu-two" && w.online),
      30000, "the worker to join the host");
    const local = (await host.api("/comfymq/workers")).find((/** @type {any} */ w) => w.name === "standin-gpu");
    await host.api(`/comfymq/workers/${local.id}/drain`, {method: "POST", body: JSON.stringify({drain: true})});
    browser = await launchBrowser();
    ({page, ours} = await openComfy(browser, worker.url));
    page.on("request", (r) => {
      const u = new URL(r.url());
      if (/\/comfymq\//.test(u.pathname)) requests.push(`${r.method()} ${u.pathname}`);
    });
  });

  after(async () => {
    await browser?.close();
    await worker?.stop();
    await host?.stop();
  });

  it("shows the worker card: the host, the link, the ComfyUI it drives; no queue", async () => {
    const s = await worker.api("/comfymq/status");
    assert.equal(s.role, "worker");
    assert.deepEqual(s.queue, {target: "remote", host_url: host.url});
    await openPanel(page);
    await card().locator('[data-link="connected"]').first().waitFor({timeout: 20000});
    const text = await card().innerText();
    assert.match(text, /Worker gpu-two/);
    assert.ok(text.includes(host.broker), "the host's broker address");
    assert.ok(text.includes(host.url), "the host's page");
    assert.match(text, /Drives\s+ComfyUI 0\.8\.0: answering/, "the ComfyUI it drives, and that it answers");
    assert.equal(await page.locator(".comfymq-panel .mq-tab").count(), 0, "no Queue / Workers tabs");
    assert.ok(!requests.some((r) => /\/comfymq\/(jobs|queue|workers|stats)/.test(r)), requests.join(", "));
    await screenshot(page, "worker-1-card", {panelOnly: true});
    assert.deepEqual(ours, []);
  });

  it("Queue (MQ) sends the workflow to the host; the card shows the job running", async () => {
    await loadWorkflow(page, testPrompt({steps: 60}), "from the worker");
    const since = await newestHostJob();
    await page.locator("button.comfymq-queue-button").click();
    const j = await waitFor(async () => {
      const jobs = (await host.api("/comfymq/jobs?limit=10")).jobs.filter((/** @type {any} */ x) => x.id > since);
      return jobs.length === 1 ? jobs[0] : null;
    }, 15000, "the job on the host");
    await page.locator(".p-toast-message", {hasText: "on the host"}).first().waitFor();
    await card().locator(`[data-job="${j.id}"]`).waitFor({timeout: 20000});
    await screenshot(page, "worker-2-running", {panelOnly: true});
    await waitFor(async () => (await host.api(`/comfymq/jobs/${j.id}`)).job.state === "succeeded", 30000, "the job to finish");
    await card().locator(`[data-job="${j.id}"]`).waitFor({state: "detached", timeout: 10000});
    assert.ok(!requests.some((r) => /\/comfymq\/(queue|workers|stats)|GET \/api\/comfymq\/jobs/.test(r)), requests.join(", "));
    assert.deepEqual(ours, []);
  });

  it("asks for its status every few seconds while open (every 3 s), and not at all once closed", async () => {
    const count = () => requests.filter((r) => r.endsWith("/comfymq/status")).length;
    let n = count();
    await sleep(7000);
    assert.ok(count() - n >= 2, `polled ${count() - n} times in 7 s`);
    await page.getByRole("button", {name: "ComfyMQ queue and workers"}).click();
    await page.locator(".comfymq-panel").waitFor({state: "detached"});
    await sleep(500);
    n = count();
    await sleep(4000);
    assert.equal(count() - n, 0, "no status requests while the panel is closed");
    assert.deepEqual(ours, []);
  });

  it("a refused worker says why; without the host's address Queue (MQ) is hidden and the command says why", async () => {
    const refused = {role: "worker", version: "0.1.0", hosts_queue: false,
      worker: {id: "gpu-two-1", name: "gpu-two", broker: host.broker, link: "refused",
        refused: "this CURVE key is not on the host's allowed_worker_keys", comfyui: "http://127.0.0.1:1",
        message: null, running: [], reconnects: 3},
      queue: {target: null, host_url: null}};
    await page.route("**/comfymq/status", (route) => route.fulfill({status: 200, contentType: "application/json",
      body: JSON.stringify(refused)}));
    // (the last test of the file: the route stays until the page closes)
    await page.reload();
    await page.waitForFunction(() => /** @type {any} */ (window).comfyAPI?.app?.app?.extensionManager
      ?.getSidebarTabs?.().some((/** @type {any} */ t) => t.id === "comfymq"), null, {timeout: 60000});
    await openPanel(page);
    await card().locator('[data-link="refused"]').first().waitFor();
    assert.match(await card().innerText(), /not on the host's allowed_worker_keys/);
    assert.match(await card().innerText(), /Queue \(MQ\)\s*off/);
    await screenshot(page, "worker-3-refused", {panelOnly: true});
    // the action-bar button is there but hidden; there is no fallback
    await waitFor(async () => (await page.locator("button.comfymq-queue-button").count()) === 1, 10000, "the button");
    assert.equal(await page.locator("button.comfymq-queue-button").isVisible(), false);
    assert.equal(await page.locator(".comfymq-queue-fallback").count(), 0);
    const before = requests.filter((r) => r.startsWith("POST")).length;
    await page.evaluate(() => /** @type {any} */ (window).comfyAPI.app.app.extensionManager.command
      .execute("ComfyMQ.QueueWorkflow"));
    await page.locator(".p-toast-message", {hasText: "Queue (MQ) is off on this ComfyUI"}).waitFor();
    assert.match(await page.locator(".p-toast-message", {hasText: "Queue (MQ) is off"}).innerText(),
      /does not know the host's HTTP address/);
    assert.equal(requests.filter((r) => r.startsWith("POST")).length, before, "nothing was sent");
    assert.deepEqual(ours, []);
  });
});
