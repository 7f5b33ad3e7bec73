// Test harness: the stand-in ComfyUI (tests/standin) serving the real ComfyUI frontend, with this repository
// loaded as a custom node pack (role "both": the host plus a local worker that drives the stand-in itself), and a
// headless Chromium (Debian's) driven by playwright-core.

import {spawn} from "node:child_process";
import {mkdtempSync, mkdirSync, rmSync, existsSync, readFileSync} from "node:fs";
import {createServer} from "node:net";
import {tmpdir} from "node:os";
import path from "node:path";
import {fileURLToPath} from "node:url";
import {chromium} from "playwright-core";

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const ARTIFACTS = path.join(REPO, "tests/browser/artifacts");
export const PYTHON = process.env.PYTHON || path.join(REPO, ".venv/bin/python");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
/** The newest comfyui-frontend-package checked besides the pinned one (tools/setup-debian.sh unpacks it). */
export const NEWEST_FRONTEND = readFileSync(path.join(REPO, "tests/browser/frontend-newest.txt"), "utf8").trim();
export const NEWEST_FRONTEND_ROOT = process.env.COMFYMQ_NEWEST_FRONTEND_ROOT ||
  path.join(REPO, `tests/browser/.frontend/${NEWEST_FRONTEND}/comfyui_frontend_package/static`);
/** The oldest comfyui-frontend-package supported (the one ComfyUI v0.3.64 pins), unpacked the same way. */
export const OLDEST_FRONTEND = readFileSync(path.join(REPO, "tests/browser/frontend-oldest.txt"), "utf8").trim();
export const OLDEST_FRONTEND_ROOT = process.env.COMFYMQ_OLDEST_FRONTEND_ROOT ||
  path.join(REPO, `tests/browser/.frontend/${OLDEST_FRONTEND}/comfyui_frontend_package/static`);
/** ComfyUI serves the pack's js/ under /extensions/<the pack's folder name>/. */
export const EXTENSION_PATH = `/extensions/${path.basename(REPO)}/`;

/** A TCP port nobody listens on right now. @returns {Promise<number>} */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/**
 * Starts the stand-in with the plugin; resolves once it printed READY and the plugin's worker has joined.
 * With `token`, the host requires it (COMFYMQ_TOKEN) and comfy.api sends it; the browser's setting is the test's.
 * `env` adds to the plugin's environment (COMFYMQ_ROLE=worker with COMFYMQ_BROKER=<a host's comfy.broker> makes it
 * a worker of that host: then nothing waits for a local worker). comfy.broker is where its broker listens (in role
 * both or host).
 * @param {{frontendRoot?: string, stepDelay?: number, models?: string[], settings?: object, token?: string,
 *          env?: Record<string, string>}} [o]
 */
export async function startComfy(o = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), "comfymq-browser-"));
  for (const d of ["out", "user", "input"]) mkdirSync(path.join(dir, d));
  const brokerPort = await freePort();
  const args = ["-m", "tests.standin", "--port", "0", "--output-dir", path.join(dir, "out"),
    "--input-dir", path.join(dir, "input"), "--user-dir", path.join(dir, "user"),
    "--models", (o.models || ["a.safetensors", "b.safetensors"]).join(","), "--step-delay", String(o.stepDelay ?? 0.05),
    "--with-plugin", REPO,
    "--settings", JSON.stringify({"Comfy.TutorialCompleted": true, ...(o.settings || {})})];
  if (o.frontendRoot) args.push("--frontend-root", o.frontendRoot);
  else args.push("--frontend");
  const broker = `tcp://127.0.0.1:${brokerPort}`;
  const env = {...process.env, COMFYMQ_BROKER_BIND: broker, COMFYMQ_WORKER_NAME: "standin-gpu",
    PYTHONUNBUFFERED: "1", ...(o.token ? {COMFYMQ_TOKEN: o.token} : {}), ...(o.env || {})};
  const workerRole = env.COMFYMQ_ROLE === "worker";
  const proc = spawn(PYTHON, args, {cwd: REPO, env, stdio: ["ignore", "pipe", "pipe"]});
  let log = "";
  proc.stderr.on("data", (d) => {
    log += d;
    if (log.length > 200000) log = log.slice(-100000);
  });
  const url = await new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error("the stand-in did not start in 60 s:\n" + log)), 60000);
    proc.stdout.on("data", (d) => {
      out += d;
      const m = /READY (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    proc.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the stand-in exited (${code}) before it was ready:\n${log}`));
    });
  });
  const comfy = {
    url, dir, proc, broker,
    log: () => log,
    /** @param {string} route @param {RequestInit} [init] */
    async api(route, init) {
      const headers = {...(o.token ? {Authorization: "Bearer " + o.token} : {}),
        // as the panel's client: every request but a GET says it is JSON (the host refuses it otherwise)
        ...((init?.method || "GET") !== "GET" ? {"Content-Type": "application/json"} : {}), ...(init?.headers || {})};
      const r = await fetch(url + route, {...init, headers});
      const text = await r.text();
      if (!r.ok) throw new Error(`${init?.method || "GET"} ${route}: ${r.status} ${text}`);
      return text ? JSON.parse(text) : null;
    },
    async stop() {
      if (proc.exitCode == null) {
        proc.kill("SIGTERM");
        await Promise.race([new Promise((r) => proc.once("exit", r)), sleep(10000)]);
        if (proc.exitCode == null) proc.kill("SIGKILL");
      }
      rmSync(dir, {recursive: true, force: true});
    },
  };
  if (!workerRole) {
    await waitFor(async () => {
      const ws = await comfy.api("/comfymq/workers");
      return ws.some((/** @type {any} */ w) => w.online);
    }, 30000, "the plugin's local worker to join");
  }
  return comfy;
}

/** @param {number} ms */
export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Polls fn until it returns something truthy.
 * @template T
 * @param {() => Promise<T> | T} fn
 * @param {number} [timeout]
 * @param {string} [what]
 * @returns {Promise<T>}
 */
export async function waitFor(fn, timeout = 15000, what = "a condition") {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}` + (last ? `: ${last}` : ""));
    await sleep(100);
  }
}

export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium (tools/setup-debian.sh)`);
  return chromium.launch({executablePath: CHROMIUM, headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]});
}

/**
 * A page on the stand-in with ComfyUI loaded, and what it logged.
 * Problems that count against us: uncaught errors and console errors whose text or source mentions this
 * extension, and failed /comfymq requests. (ComfyUI's own noise, e.g. its 404s for user.css, is not ours.)
 * `beforeLoad` runs before the page is opened (e.g. to route some of its requests).
 * @param {import("playwright-core").Browser} browser
 * @param {string} url
 * @param {{colorScheme?: "dark" | "light", beforeLoad?: (c: import("playwright-core").BrowserContext) => Promise<void>}} [o]
 */
export async function openComfy(browser, url, o = {}) {
  const context = await browser.newContext({viewport: {width: 1440, height: 900}, colorScheme: o.colorScheme || "dark"});
  if (o.beforeLoad) await o.beforeLoad(context);
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  /** @type {string[]} */
  const ours = [];
  /** @type {string[]} */
  const all = [];
  const mentionsUs = (/** @type {string} */ s) => /comfymq/i.test(s) || s.includes(EXTENSION_PATH);
  // A host older than GET /comfymq/status answers it 404, which the extension takes as "a host, as before": an
  // answer it expects, not a failure (any other 4xx or 5xx of ours is).
  const olderHostStatus = (/** @type {string} */ url, /** @type {string | number} */ status) => {
    try {
      return String(status).includes("404") && /\/comfymq\/status$/.test(new URL(url).pathname);
    } catch {
      return false;
    }
  };
  page.on("console", (m) => {
    if (m.type() !== "error" && m.type() !== "warning") return;
    const where = m.location()?.url || "";
    const line = `${m.type()}: ${m.text()} (${where})`;
    all.push(line);
    if (olderHostStatus(where, m.text())) return;
    if (m.type() === "error" && (mentionsUs(m.text()) || mentionsUs(where))) ours.push(line);
  });
  page.on("pageerror", (e) => {
    const line = `pageerror: ${e.message}\n${e.stack || ""}`;
    all.push(line);
    if (mentionsUs(line)) ours.push(line);
  });
  page.on("response", (r) => {
    if (r.status() >= 400 && /\/comfymq\//.test(new URL(r.url()).pathname) && !olderHostStatus(r.url(), r.status())) {
      ours.push(`HTTP ${r.status()} ${r.request().method()} ${r.url()}`);
    }
  });
  await page.goto(url);
  await page.waitForFunction(() => {
    const w = /** @type {any} */ (window);
    return w.comfyAPI?.app?.app?.extensionManager && document.querySelector("#graph-canvas");
  }, null, {timeout: 60000});
  // the extension registered (ComfyUI loads every extension module before it finishes setting up)
  await page.waitForFunction(() => /** @type {any} */ (window).comfyAPI.app.app.extensionManager.getSidebarTabs()
    .some((/** @type {any} */ t) => t.id === "comfymq"), null, {timeout: 30000});
  return {page, context, ours, all};
}

/**
 * Opens the ComfyMQ sidebar tab the way a user does: its button in the sidebar.
 * @param {import("playwright-core").Page} page
 */
export async function openPanel(page) {
  if (await page.locator(".comfymq-panel").count()) return;
  await page.getByRole("button", {name: "ComfyMQ queue and workers"}).click();
  await page.locator(".comfymq-panel").waitFor();
}

/**
 * @param {import("playwright-core").Page} page
 * @param {string} name
 * @param {{panelOnly?: boolean}} [o]
 */
export async function screenshot(page, name, o = {}) {
  mkdirSync(ARTIFACTS, {recursive: true});
  const file = path.join(ARTIFACTS, `${name}.png`);
  if (o.panelOnly) await page.locator(".comfymq-panel").screenshot({path: file});
  else await page.screenshot({path: file});
  return file;
}

/**
 * The API-format test workflow: checkpoint -> prompts -> latent -> KSampler (steps) -> decode -> save.
 * @param {{steps?: number, seed?: number, ckpt?: string, fail?: boolean}} [o]
 */
export function testPrompt(o = {}) {
  /** @type {Record<string, any>} */
  const p = {
    "4": {class_type: "CheckpointLoaderSimple", inputs: {ckpt_name: o.ckpt || "a.safetensors"}},
    "5": {class_type: "EmptyLatentImage", inputs: {width: 64, height: 64, batch_size: 1}},
    "6": {class_type: "CLIPTextEncode", inputs: {text: "a red fox in the snow", clip: ["4", 1]}},
    "7": {class_type: "CLIPTextEncode", inputs: {text: "blurry", clip: ["4", 1]}},
    "3": {class_type: "KSampler", inputs: {seed: o.seed ?? 1234, steps: o.steps ?? 30, cfg: 7, sampler_name: "euler",
      scheduler: "normal", denoise: 1, model: ["4", 0], positive: ["6", 0], negative: ["7", 0], latent_image: ["5", 0]}},
    "8": {class_type: "VAEDecode", inputs: {samples: ["3", 0], vae: ["4", 2]}},
    "9": {class_type: "SaveImage", inputs: {filename_prefix: "mqtest", images: ["8", 0]}},
  };
  if (o.fail) {
    delete p["9"];
    p["10"] = {class_type: "FailNode", inputs: {message: "the test node failed on purpose", images: ["8", 0]}};
  }
  return p;
}

/**
 * Loads an API-format workflow into the canvas (as opening a file would) and names the tab.
 * @param {import("playwright-core").Page} page
 * @param {Record<string, any>} prompt
 * @param {string} name
 */
export async function loadWorkflow(page, prompt, name) {
  await page.evaluate(async ([p, n]) => {
    const app = /** @type {any} */ (window).comfyAPI.app.app;
    await app.loadApiJson(p, n);
  }, /** @type {const} */ ([prompt, name]));
  await page.waitForTimeout(300);
}

/**
 * Sets a widget of a node in the canvas's graph (test setup: what a user does by clicking the widget).
 * @param {import("playwright-core").Page} page
 * @param {string} nodeId
 * @param {string} widget
 * @param {any} value
 */
export async function setWidget(page, nodeId, widget, value) {
  await page.evaluate(([id, name, v]) => {
    const app = /** @type {any} */ (window).comfyAPI.app.app;
    const graph = app.rootGraph ?? app.graph;
    const node = graph.getNodeById(Number(id)) ?? graph.getNodeById(id);
    const w = node.widgets.find((/** @type {any} */ x) => x.name === name);
    if (!w) throw new Error(`node ${id} has no widget ${name}`);
    w.value = v;
  }, /** @type {const} */ ([nodeId, widget, value]));
}
