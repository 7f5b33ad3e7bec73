// Owners in the panel, on the pinned frontend against a host with tokens: the panel's token is a submit token
// made over the API (alice); each row shows its job's owner, the "Mine" filter shows alice's jobs alone, and the
// jobs of others are out of alice's sight (the host lists her own only).

import {describe, it, before, after} from "node:test";
import assert from "node:assert/strict";
import {startComfy, launchBrowser, openComfy, openPanel, testPrompt, waitFor, screenshot} from "./harness.mjs";

const ADMIN = "owners-admin-token-1234";

/** @type {Awaited<ReturnType<typeof startComfy>>} */
let comfy;
/** @type {import("playwright-core").Browser} */
let browser;
/** @type {import("playwright-core").Page} */
let page;
/** @type {string[]} */
let ours;

describe("owners in the panel", () => {
  before(async () => {
    comfy = await startComfy({stepDelay: 0.02, token: ADMIN});
    browser = await launchBrowser();
    ({page, ours} = await openComfy(browser, comfy.url));
  });

  after(async () => {
    await browser?.close();
    await comfy?.stop();
  });

  it("shows owners, and Mine shows the panel token's jobs alone", async () => {
    const post = async (/** @type {string} */ path, /** @type {any} */ body, /** @type {string} */ token) => {
      const r = await fetch(comfy.url + path, {method: "POST", body: JSON.stringify(body),
        headers: {"Content-Type": "application/json", Authorization: "Bearer " + token}});
      const text = await r.text();
      assert.ok(r.ok, `${path}: ${r.status} ${text}`);
      return JSON.parse(text);
    };
    const alice = (await post("/comfymq/tokens", {name: "alice", role: "submit"}, ADMIN)).token;
    const slow = {"1": {class_type: "SlowNode", inputs: {seconds: 60, tag: "owners"}}};
    const hers = (await post("/comfymq/jobs", {prompt: slow, count: 2}, alice)).jobs.map((/** @type {any} */ j) => j.id);
    const admins = (await post("/comfymq/jobs", {prompt: testPrompt({steps: 2}), owner: "bob"}, ADMIN)).jobs[0].id;
    // the panel with alice's token (entered in ComfyUI's settings, as a user does)
    await page.evaluate(async (t) => {
      await /** @type {any} */ (window).comfyAPI.app.app.extensionManager.setting.set("ComfyMQ.Token", t);
    }, alice);
    await openPanel(page);
    const row = page.locator(`.comfymq-panel .mq-job[data-job="${hers[0]}"]`);
    await row.waitFor({timeout: 15000});
    assert.match(await row.locator(".mq-owner").innerText(), /alice/);
    assert.equal(await page.locator(`.comfymq-panel .mq-job[data-job="${admins}"]`).count(), 0,
      "another owner's job is out of a submit token's sight");
    const mine = page.locator('.comfymq-panel [data-action="mine"]');
    await mine.waitFor();
    await mine.click();
    await waitFor(async () => (await mine.getAttribute("aria-pressed")) === "true", 5000, "Mine pressed");
    await waitFor(async () => (await page.locator(".comfymq-panel .mq-job").count()) === 2, 10000, "alice's 2 jobs");
    await screenshot(page, "owners-mine", {panelOnly: true});
    assert.deepEqual(ours.filter((l) => !l.includes("401")), []);
  });
});
