// Pairing from the panels, in two stand-in ComfyUIs with the plugin: a host (default role, CURVE on) and a
// worker-role ComfyUI with nothing configured. The host's Workers tab: "Add a worker" shows a one-time code and the
// host's fingerprint. The worker's panel: "Join a farm", the host's address typed by hand (both listen on loopback,
// where nothing is advertised), the code: it joins without a restart, its card shows the farm and its fingerprint,
// and the host lists the paired key online. "Leave" unpairs it on the host; joined again, the host's "Remove"
// shuts it out at once. A wrong code is refused with the host's words and keeps nothing.

import {describe, it, before, after} from "node:test";
import assert from "node:assert/strict";
import {execFileSync} from "node:child_process";
import {startComfy, launchBrowser, openComfy, openPanel, screenshot, waitFor, freePort, PYTHON, REPO} from "./harness.mjs";

/** @type {Awaited<ReturnType<typeof startComfy>>} */
let host;
/** @type {Awaited<ReturnType<typeof startComfy>>} */
let worker;
/** @type {import("playwright-core").Browser} */
let browser;
/** @type {import("playwright-core").Page} */
let hostPage;
/** @type {import("playwright-core").Page} */
let workerPage;

const card = () => workerPage.locator(".comfymq-panel .mq-worker-role");
const pairing = () => hostPage.locator(".comfymq-panel .mq-pairing");

let lastCode = "";

/** A new code from the host's panel ("Add a worker"); its digits (once the box shows it, not the one before). */
async function codeFromHostPanel() {
  await pairing().locator('[data-action="add-worker"]').click();
  const box = pairing().locator('[data-testid="pairing-code"]');
  // (a new code equal to the one before, one chance in a million, would only make this wait fail)
  const code = await waitFor(async () => {
    const shown = (await box.count()) ? (await box.innerText()).replace(/\s/g, "") : "";
    return /^\d{6}$/.test(shown) && shown !== lastCode ? shown : null;
  }, 10000, "the new code in the host's panel");
  assert.ok((await host.api("/comfymq/pairing")).code, "the host holds a code");
  lastCode = code;
  return code;
}

/** @param {string} code */
async function joinFromWorkerPanel(code) {
  const join = card().locator(".mq-join");
  await join.locator('input[name="host_url"]').fill(host.url);
  await join.locator('input[name="code"]').fill(code.slice(0, 3) + " " + code.slice(3));
  await join.locator('[data-action="join"]').click();
}

async function linkOf() {
  const s = await worker.api("/comfymq/status");
  return s.worker ? s.worker.link : "none";
}

describe("Pairing from the panels", () => {
  before(async () => {
    const secret = execFileSync(PYTHON, ["-c", "from comfy_nodes import _native as n; print(n.curve_keypair()[1])"],
      {cwd: REPO, encoding: "utf8"}).trim();
    host = await startComfy({env: {COMFYMQ_CURVE_SECRET_KEY: secret}});
    worker = await startComfy({env: {COMFYMQ_ROLE: "worker", COMFYMQ_BROKER: `tcp://127.0.0.1:${await freePort()}`,
      COMFYMQ_WORKER_NAME: "gpu-three"}});
    browser = await launchBrowser();
    ({page: hostPage} = await openComfy(browser, host.url));
    ({page: workerPage} = await openComfy(browser, worker.url));
    await openPanel(hostPage);
    await hostPage.locator("#comfymq-tab-workers").click();
    await openPanel(workerPage);
  });

  after(async () => {
    await browser?.close();
    await worker?.stop();
    await host?.stop();
  });

  it("the host's Workers tab shows Add a worker; a default-role ComfyUI may join a farm too", async () => {
    await pairing().waitFor({timeout: 10000});
    assert.match(await pairing().innerText(), /No worker has paired with this host yet/);
    const joinDetails = hostPage.locator(".comfymq-panel .mq-join-details");
    assert.equal(await joinDetails.isVisible(), true, "offered in a ComfyUI whose role is not set");
  });

  it("Find hosts asks the LAN and says what it found (hosts on loopback are not advertised)", async () => {
    await card().locator(".mq-join").waitFor({timeout: 10000});
    await card().locator('[data-action="discover"]').click();
    const found = card().locator(".mq-found");
    await waitFor(async () => /No host answered|Could not look|Use/.test(await found.innerText()), 20000,
      "the browse's answer");
    const text = await found.innerText();
    assert.ok(!text.includes(host.url), "a host on loopback only is not advertised: " + text);
  });

  it("a wrong code is refused with the host's words and keeps nothing", async () => {
    const code = await codeFromHostPanel();
    await joinFromWorkerPanel(code === "000000" ? "111111" : "000000");
    const msg = card().locator('.mq-join [role="alert"]');
    await msg.waitFor({timeout: 15000});
    assert.match(await msg.innerText(), /not paired/);
    assert.equal((await worker.api("/comfymq/farm")).joined, null);
    const overview = await host.api("/comfymq/pairing");
    assert.equal(overview.workers.length, 0);
    assert.ok(overview.refusals.length >= 1, "the host keeps the refusal");
    await pairing().locator(".mq-refusals summary").waitFor({timeout: 10000});
  });

  it("Join a farm with the host's code: it serves at once, and the host lists it online", async () => {
    const code = await codeFromHostPanel();
    const fingerprint = (await host.api("/comfymq/pairing")).fingerprint;
    assert.ok((await pairing().innerText()).includes(fingerprint), "the host shows its fingerprint with the code");
    await screenshot(hostPage, "pairing-1-code", {panelOnly: true});
    await joinFromWorkerPanel(code);
    // (counts, not innerText: a locator's innerText waits for its element, and the toast lives 5 s)
    const joinedToast = workerPage.locator(".p-toast-message", {hasText: "Joined the farm"});
    const refused = card().locator('.mq-join [role="alert"]');
    await waitFor(async () => (await joinedToast.count()) + (await refused.count()) > 0, 20000, "the join's answer");
    assert.equal(await refused.count(), 0, await card().innerText());
    const farm = card().locator(".mq-farm");
    await farm.waitFor({timeout: 10000});
    assert.ok((await farm.innerText()).includes(fingerprint), "the worker shows the fingerprint it pinned");
    assert.ok((await farm.innerText()).includes(host.url));
    await waitFor(async () => (await linkOf()) === "connected", 20000, "the worker to connect to the host's broker");
    await card().locator('[data-link="connected"]').first().waitFor({timeout: 10000});
    // the host: the code is used up, the key is listed with its name and online
    await waitFor(async () => (await pairing().locator('[data-testid="pairing-code"]').count()) === 0, 10000,
      "the used code to go away");
    await waitFor(async () => /gpu-three.*online as gpu-three/s.test(await pairing().innerText()), 20000,
      "the paired key shown online");
    await screenshot(workerPage, "pairing-2-joined", {panelOnly: true});
  });

  it("Leave unpairs it on the host", async () => {
    await card().locator('[data-action="leave"]').click();
    await workerPage.locator(".p-dialog").getByRole("button", {name: /confirm|yes|ok/i}).click();
    await workerPage.locator(".p-toast-message", {hasText: "Left the farm"}).first().waitFor({timeout: 20000});
    await card().locator(".mq-join").waitFor({timeout: 10000});
    assert.equal((await host.api("/comfymq/pairing")).workers.length, 0);
    await waitFor(async () => (await linkOf()) !== "connected", 15000, "the worker to stop serving");
  });

  it("joined again, the host's Remove shuts it out at once", async () => {
    await joinFromWorkerPanel(await codeFromHostPanel());
    await waitFor(async () => (await linkOf()) === "connected", 20000, "the worker to connect again");
    const row = pairing().locator(".mq-paired-key", {hasText: "gpu-three"});
    await row.waitFor({timeout: 15000});
    await row.locator('[data-action="unpair"]').click();
    await hostPage.locator(".p-dialog").getByRole("button", {name: /confirm|yes|ok/i}).click();
    await waitFor(async () => (await host.api("/comfymq/pairing")).workers.length === 0, 10000, "the key removed");
    await waitFor(async () => (await linkOf()) !== "connected", 15000, "the worker to be shut out");
    const ws = await host.api("/comfymq/workers");
    assert.ok(!ws.some((/** @type {any} */ w) => w.name === "gpu-three" && w.online), "not online on the host");
  });
});
