// "Use as input" in the real ComfyUI frontend (1.35.9, the one ComfyUI v0.8.0 pins) on the stand-in ComfyUI: a
// job's image goes through the stand-in's POST /upload/image into its input folder, and the canvas's image-loading
// node names what the stand-in answered and shows it. Acts as a user does (clicks in the panel and the lightbox);
// the canvas is set up by loading API workflows and selecting nodes through LiteGraph's canvas.

import {describe, it, before, after} from "node:test";
import assert from "node:assert/strict";
import {existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync} from "node:fs";
import path from "node:path";
import {startComfy, launchBrowser, openComfy, openPanel, screenshot, testPrompt, loadWorkflow, waitFor} from "./harness.mjs";

/** @typedef {import("playwright-core").Page} Page */

/** @type {Awaited<ReturnType<typeof startComfy>>} */
let comfy;
/** @type {import("playwright-core").Browser} */
let browser;
/** @type {Page} */
let page;
/** @type {string[]} */
let ours;
/** @type {any} the job whose image is used */
let job;
/** @type {{name: string, url: string, bytes: Buffer}} its image */
let image;

/** The stand-in's input/comfymq folder. */
const uploads = () => path.join(comfy.dir, "input", "comfymq");
const uploaded = () => (existsSync(uploads()) ? readdirSync(uploads()).sort() : []);

/** LoadImage -> ImageInvert -> SaveImage, with more image-loading nodes as asked (id -> [type, title]). */
function img2img(/** @type {Record<string, [string, string]>} */ more = {}) {
  /** @type {Record<string, any>} */
  const p = {
    "1": {class_type: "LoadImage", inputs: {image: "start.png"}, _meta: {title: "Load Image"}},
    "2": {class_type: "ImageInvert", inputs: {image: ["1", 0]}},
    "3": {class_type: "SaveImage", inputs: {filename_prefix: "inverted", images: ["2", 0]}},
  };
  for (const [id, [type, title]] of Object.entries(more)) {
    p[id] = {class_type: type, inputs: type === "LoadImageMask" ? {image: "start.png", channel: "alpha"} : {image: "start.png"},
      _meta: {title}};
  }
  return p;
}

/** Every node of the canvas's graph: id, type, title and its image combo's value (null without one). */
function canvasNodes() {
  return page.evaluate(() => {
    const app = /** @type {any} */ (window).comfyAPI.app.app;
    return app.canvas.graph.nodes.map((/** @type {any} */ n) => ({id: n.id, type: n.type, title: n.title,
      image: n.widgets?.find((/** @type {any} */ w) => w.name === "image")?.value ?? null}));
  });
}

/** @param {number | null} id  the node to select, or null for none */
async function select(id) {
  await page.evaluate((nodeId) => {
    const canvas = /** @type {any} */ (window).comfyAPI.app.app.canvas;
    canvas.deselectAll();
    if (nodeId != null) canvas.selectNode(canvas.graph.getNodeById(nodeId));
  }, id);
}

async function clearToasts() {
  await page.evaluate(() => /** @type {any} */ (window).comfyAPI.app.app.extensionManager.toast.removeAll?.());
  await page.locator(".p-toast-message").first().waitFor({state: "detached", timeout: 5000}).catch(() => {});
}

/** The job's details, open in the panel. */
async function openDetails() {
  const details = page.locator(".comfymq-panel .mq-details");
  if (!(await details.locator(`text=${job.id}`).count())) {
    await page.locator(`.comfymq-panel .mq-job[data-job="${job.id}"]`).click();
    await details.locator(".mq-gallery").waitFor();
  }
  return details;
}

/**
 * Clicks a "Use as input" button and returns what the stand-in's POST /upload/image answered.
 * @param {import("playwright-core").Locator} button
 */
async function useAndAnswer(button) {
  const answer = page.waitForResponse((r) => new URL(r.url()).pathname.endsWith("/upload/image"));
  await button.click();
  const res = await answer;
  assert.equal(res.status(), 200);
  return res.json();
}

function assertNoErrorsFromUs() {
  assert.deepEqual(ours, [], "console errors, page errors or failed requests from the ComfyMQ extension");
}

describe("Use as input on ComfyUI frontend 1.35.9", () => {
  before(async () => {
    comfy = await startComfy({stepDelay: 0.02});
    browser = await launchBrowser();
    ({page, ours} = await openComfy(browser, comfy.url));
    await openPanel(page);
    const r = await comfy.api("/comfymq/jobs", {method: "POST",
      body: JSON.stringify({prompt: testPrompt({steps: 2}), metadata: {prompt_id: "fox for input"}})});
    const id = r.jobs[0].id;
    job = await waitFor(async () => {
      const j = (await comfy.api(`/comfymq/jobs/${id}`)).job;
      return j.state === "succeeded" ? j : null;
    }, 30000, "the job to succeed");
    const art = job.artifacts.find((/** @type {any} */ a) => /\.png$/.test(a.path));
    const res = await fetch(comfy.url + art.url);
    assert.equal(res.status, 200);
    image = {name: art.path.split("/").pop(), url: art.url, bytes: Buffer.from(await res.arrayBuffer())};
    await page.locator(`.comfymq-panel .mq-job[data-job="${job.id}"][data-state="succeeded"]`).waitFor({timeout: 20000});
  });

  after(async () => {
    await browser?.close();
    await comfy?.stop();
  });

  it("from the job's details into the only LoadImage: the stand-in's answer, the file, the preview, the toast", async () => {
    await loadWorkflow(page, img2img(), "img2img");
    await select(null);
    // the input folder already has another file of that name: ComfyUI answers "<name> (1).png" for these bytes
    mkdirSync(uploads(), {recursive: true});
    writeFileSync(path.join(uploads(), image.name), "other bytes");
    const details = await openDetails();
    await clearToasts();
    const answer = await useAndAnswer(details.locator('[data-action="use-as-input"]').first());
    const stem = image.name.replace(/\.png$/, "");
    assert.deepEqual(answer, {name: `${stem} (1).png`, subfolder: "comfymq", type: "input"});
    const value = `${answer.subfolder}/${answer.name}`;
    await page.locator(".p-toast-message-success", {hasText: `Loaded ${answer.name} into Load Image`}).waitFor();

    const nodes = await canvasNodes();
    assert.equal(nodes.find((n) => n.id === 1)?.image, value, "the LoadImage names what the stand-in answered");
    assert.equal(nodes.length, 3, "no node added");
    assert.deepEqual(readFileSync(path.join(uploads(), answer.name)), image.bytes, "the artifact's bytes");
    assert.equal(readFileSync(path.join(uploads(), image.name), "utf8"), "other bytes", "the other file is kept");
    // the node shows the uploaded image (ComfyUI's /view of it), as after its own upload button
    await waitFor(() => page.evaluate((want) => {
      const app = /** @type {any} */ (window).comfyAPI.app.app;
      const img = app.canvas.graph.getNodeById(1).imgs?.[0];
      if (!img || !img.complete || !img.naturalWidth) return false;
      const q = new URL(img.src).searchParams;
      return q.get("filename") === want.name && q.get("subfolder") === want.subfolder && q.get("type") === "input";
    }, answer), 10000, "the node's preview of the uploaded image");
    // and it is what the workflow queues
    const prompt = await page.evaluate(async () => (await /** @type {any} */ (window).comfyAPI.app.app.graphToPrompt()).output);
    assert.equal(prompt["1"].inputs.image, value);
    await screenshot(page, "20-use-as-input");
    assertNoErrorsFromUs();
  });

  it("from the lightbox into the selected one of several; the same bytes keep their name", async () => {
    await loadWorkflow(page, img2img({"4": ["LoadImage", "Second image"], "5": ["LoadImageMask", "Mask"]}), "three loaders");
    await select(4);
    const before = uploaded();
    await clearToasts();
    await page.locator(`.comfymq-panel .mq-job[data-job="${job.id}"] .mq-thumb`).click();
    const box = page.locator(".comfymq-lightbox");
    await box.waitFor();
    const answer = await useAndAnswer(box.locator('[data-action="use-as-input"]'));
    await box.waitFor({state: "detached"});
    assert.equal(answer.name, `${image.name.replace(/\.png$/, "")} (1).png`, "the file uploaded before, not a new one");
    await page.locator(".p-toast-message-success", {hasText: `Loaded ${answer.name} into Second image`}).waitFor();
    assert.deepEqual(uploaded(), before);
    const images = Object.fromEntries((await canvasNodes()).map((n) => [n.id, n.image]));
    assert.equal(images[4], `comfymq/${answer.name}`);
    assert.equal(images[1], "start.png");
    assert.equal(images[5], "start.png");
    assertNoErrorsFromUs();
  });

  it("several image-loading nodes (a LoadImageMask too), none selected: asks which, changes nothing", async () => {
    await loadWorkflow(page, img2img({"5": ["LoadImageMask", "Mask"]}), "two loaders");
    await select(2); // a selected node that loads no image does not decide
    const before = await canvasNodes();
    const files = uploaded();
    let uploads = 0;
    const count = (/** @type {import("playwright-core").Request} */ r) => {
      if (new URL(r.url()).pathname.endsWith("/upload/image")) uploads++;
    };
    page.on("request", count);
    try {
      const details = await openDetails();
      await clearToasts();
      await details.locator('[data-action="use-as-input"]').first().click();
      const warn = page.locator(".p-toast-message-warn", {hasText: `Select the node to load ${image.name} into`});
      await warn.waitFor();
      assert.match(await warn.innerText(), /2 nodes that load images/);
    } finally {
      page.off("request", count);
    }
    assert.equal(uploads, 0, "nothing uploaded");
    assert.deepEqual(await canvasNodes(), before, "the canvas is unchanged");
    assert.deepEqual(uploaded(), files);
    assertNoErrorsFromUs();
  });

  it("no image-loading node: a new Load Image at the canvas's center", async () => {
    await loadWorkflow(page, testPrompt({steps: 2}), "no loader");
    await select(null);
    const details = await openDetails();
    await clearToasts();
    const answer = await useAndAnswer(details.locator('[data-action="use-as-input"]').first());
    await page.locator(".p-toast-message-success", {hasText: `Loaded ${answer.name} into Load Image`}).waitFor();
    const added = (await canvasNodes()).filter((n) => n.type === "LoadImage");
    assert.equal(added.length, 1);
    assert.equal(added[0].image, `comfymq/${answer.name}`);
    const where = await page.evaluate((id) => {
      const canvas = /** @type {any} */ (window).comfyAPI.app.app.canvas;
      const node = canvas.graph.getNodeById(id);
      const el = canvas.canvas;
      const mid = canvas.ds.convertCanvasToOffset([el.clientWidth / 2, el.clientHeight / 2]);
      return {pos: [...node.pos], size: [...node.size], mid};
    }, added[0].id);
    // placed centred on the canvas's middle (it grows downwards once its preview has loaded)
    const {pos, size, mid} = where;
    assert.ok(Math.abs(pos[0] + size[0] / 2 - mid[0]) < 30, `centred horizontally: node at ${pos} size ${size}, middle ${mid}`);
    assert.ok(pos[1] < mid[1] && mid[1] < pos[1] + size[1], `the canvas's middle ${mid} is on the node at ${pos} size ${size}`);
    assertNoErrorsFromUs();
  });

  it("a failure (the host lost the file: 404; ComfyUI refused the upload) is an error toast, nothing changed", async () => {
    await loadWorkflow(page, img2img(), "failures");
    await select(null);
    const before = await canvasNodes();
    const files = uploaded();
    const details = await openDetails();
    await page.route("**/comfymq/artifacts/**", (route) => route.fulfill({status: 404, contentType: "application/json",
      body: JSON.stringify({error: {type: "not_found", message: `job ${job.id} has no artifact '${image.name}'`}})}));
    try {
      await clearToasts();
      await details.locator('[data-action="use-as-input"]').first().click();
      const err = page.locator(".p-toast-message-error", {hasText: `Could not load ${image.name} as input`});
      await err.waitFor();
      assert.match(await err.innerText(), /has no artifact/);
    } finally {
      await page.unroute("**/comfymq/artifacts/**");
    }
    await page.route("**/upload/image", (route) => route.fulfill({status: 400, body: ""}));
    try {
      await clearToasts();
      await details.locator('[data-action="use-as-input"]').first().click();
      const err = page.locator(".p-toast-message-error", {hasText: `Could not load ${image.name} as input`});
      await err.waitFor();
      assert.match(await err.innerText(), /ComfyUI refused the upload \(HTTP 400\)/);
    } finally {
      await page.unroute("**/upload/image");
    }
    assert.deepEqual(await canvasNodes(), before, "the canvas is unchanged");
    assert.deepEqual(uploaded(), files);
    // the 404 was the point of this step
    const others = ours.filter((l) => !/404/.test(l));
    ours.length = 0;
    ours.push(...others);
    assertNoErrorsFromUs();
  });
  it("a job that reads a stored input lists it in its details (name, size, node and input)", async () => {
    const up = await fetch(`${comfy.url}/comfymq/inputs?name=listed.png`, {method: "POST", body: image.bytes,
      headers: {"Content-Type": "application/octet-stream"}});
    assert.equal(up.status, 200);
    const stored = await up.json();
    const prompt = img2img();
    prompt["1"].inputs.image = {comfymq_input: stored.sha256, name: "listed.png"};
    const r = await comfy.api("/comfymq/jobs", {method: "POST", body: JSON.stringify({prompt})});
    const id = r.jobs[0].id;
    await page.locator(`.comfymq-panel .mq-job[data-job="${id}"][data-state="succeeded"]`).waitFor({timeout: 20000});
    await page.locator(`.comfymq-panel .mq-job[data-job="${id}"]`).click();
    const item = page.locator(".comfymq-panel .mq-details .mq-inputs li");
    await item.first().waitFor();
    assert.equal(await item.count(), 1);
    const text = await item.first().innerText();
    assert.match(text, /^listed\.png /);
    assert.match(text, /node 1\.image$/);
    assert.equal(await item.first().getAttribute("title"), `sha256 ${stored.sha256}`);
  });
});
