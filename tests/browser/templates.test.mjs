// Templates and webhooks in the panel, in the real ComfyUI frontend (1.35.9) on the stand-in ComfyUI with the plugin:
// "Save canvas as template" from the canvas's workflow ticking two widgets, the Templates tab's form drawn from
// the template's schema (limits from /object_info), a bad value refused in the form, queueing from it (the job runs
// with the form's values and shows in the template's recent jobs, which open it in the queue), and a job's
// webhook deliveries in its details (a receiver in this test).

import {describe, it, before, after} from "node:test";
import assert from "node:assert/strict";
import {createServer} from "node:http";
import {startComfy, launchBrowser, openComfy, openPanel, screenshot, testPrompt, loadWorkflow, waitFor} from "./harness.mjs";

/** @type {Awaited<ReturnType<typeof startComfy>>} */
let comfy;
/** @type {import("playwright-core").Browser} */
let browser;
/** @type {import("playwright-core").Page} */
let page;
/** @type {string[]} */
let ours;

describe("Templates and webhooks in the panel on ComfyUI frontend 1.35.9", () => {
  before(async () => {
    comfy = await startComfy({stepDelay: 0.02});
    browser = await launchBrowser();
    ({page, ours} = await openComfy(browser, comfy.url));
    await openPanel(page);
  });

  after(async () => {
    await browser?.close();
    await comfy?.stop();
  });

  it("saves the canvas as a template with the ticked widgets as named parameters", async () => {
    await loadWorkflow(page, testPrompt({steps: 3}), "fox template");
    await page.locator("#comfymq-tab-templates").click();
    await page.locator('.comfymq-panel [data-action="save-template"]').click();
    const save = page.locator(".comfymq-panel .mq-tpl-save");
    await save.waitFor();
    await save.locator('input[name="template-name"]').fill("fox");
    await save.locator('input[name="template-description"]').fill("a fox, in words and steps");
    await save.locator('input[data-target="6.text"]').check();
    await save.locator('input[data-target="3.steps"]').check();
    // the parameter names are the node's title and input, editable
    const stepsName = save.locator('input[aria-label^="Parameter name for"][aria-label$="· steps"]');
    assert.match(await stepsName.inputValue(), /steps$/);
    await stepsName.fill("steps");
    await save.locator('[data-action="save-template-confirm"]').click();
    const form = page.locator('.comfymq-panel .mq-tpl-form[data-template="fox"]');
    await form.waitFor();
    const {template} = await comfy.api("/comfymq/templates/fox");
    assert.equal(template.version, 1);
    assert.equal(Object.keys(template.parameters).length, 2);
    assert.deepEqual(template.parameters.steps.targets, ["3.steps"]);
    assert.equal(template.parameters.steps.type, "integer");
    assert.equal(template.parameters.steps.min, 1, "the limits come from the stand-in's /object_info");
    const textParam = Object.entries(template.parameters).find(([k]) => k !== "steps");
    assert.ok(textParam && textParam[1].targets[0] === "6.text");
    await screenshot(page, "templates-form", {panelOnly: true});
  });

  it("refuses a value out of its limits in the form, then queues the template with the form's values", async () => {
    const form = page.locator('.comfymq-panel .mq-tpl-form[data-template="fox"]');
    const steps = form.locator('input[name="steps"]');
    assert.equal(await steps.inputValue(), "3", "the form starts from the workflow's own value");
    await steps.fill("0");
    await form.locator('[data-action="queue-template"]').click();
    await waitFor(async () => (await steps.getAttribute("aria-invalid")) === "true", 5000, "the field marked invalid");
    assert.equal((await comfy.api("/comfymq/templates/fox/jobs")).jobs.length, 0, "nothing was queued");
    await steps.fill("2");
    const text = form.locator("input[type=text], textarea").first();
    await text.fill("a blue whale");
    await form.locator('[data-action="queue-template"]').click();
    const [made] = await waitFor(async () => {
      const {jobs} = await comfy.api("/comfymq/templates/fox/jobs");
      return jobs.length ? jobs : null;
    }, 10000, "the template's job");
    const job = await waitFor(async () => {
      const j = (await comfy.api(`/comfymq/jobs/${made.id}`)).job;
      return j.state === "succeeded" ? j : null;
    }, 30000, "the job to succeed");
    assert.equal(job.prompt["6"].inputs.text, "a blue whale");
    assert.equal(job.prompt["3"].inputs.steps, 2);
    assert.equal(job.template.name, "fox");
    assert.equal(job.template.version, 1);
    // its recent jobs list it; a click opens it in the queue
    const entry = page.locator(`.comfymq-panel .mq-tpl-jobs li[data-job="${made.id}"] button`);
    await entry.waitFor({timeout: 10000});
    await entry.click();
    await page.locator(".comfymq-panel .mq-details").locator(`text=${made.id}`).waitFor({timeout: 10000});
    assert.equal(await page.locator("#comfymq-tab-queue").getAttribute("aria-selected"), "true");
  });

  it("shows a job's webhook deliveries in its details", async () => {
    /** @type {any[]} */
    const got = [];
    const server = createServer((req, res) => {
      let body = "";
      req.on("data", (d) => { body += d; });
      req.on("end", () => {
        got.push({headers: req.headers, body: JSON.parse(body)});
        res.writeHead(204).end();
      });
    });
    await new Promise((r) => server.listen(0, "127.0.0.1", () => r(undefined)));
    try {
      const addr = /** @type {import("node:net").AddressInfo} */ (server.address());
      const r = await comfy.api("/comfymq/jobs", {method: "POST",
        body: JSON.stringify({prompt: testPrompt({steps: 2}), webhooks: [`http://127.0.0.1:${addr.port}/done`]})});
      const id = r.jobs[0].id;
      await waitFor(() => got.length >= 1, 30000, "the webhook");
      assert.equal(got[0].body.type, "job.succeeded");
      assert.equal(got[0].body.data.id, id);
      assert.match(String(got[0].headers["webhook-signature"]), /^v1,/);
      await page.locator("#comfymq-tab-queue").click();
      await page.locator(`.comfymq-panel .mq-job[data-job="${id}"]`).click();
      const li = page.locator('.comfymq-panel .mq-details .mq-webhooks li[data-state="delivered"]');
      await waitFor(async () => {
        if (await li.count()) return true;
        await page.locator(`.comfymq-panel .mq-job[data-job="${id}"]`).click();  // load the details again
        return false;
      }, 15000, "the delivery shown as delivered");
      assert.match(await li.innerText(), /job\.succeeded → 127\.0\.0\.1:\d+ · 1 attempt · HTTP 204/);
    } finally {
      server.close();
    }
    assert.deepEqual(ours, [], "console errors, page errors or failed requests from the ComfyMQ extension");
  });
});
