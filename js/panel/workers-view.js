// The Workers tab: every worker the host knows, online or not; what it runs now with its progress; heartbeat
// age; host facts (machine, devices, memory, versions); how many models and node classes it offers; drain /
// undrain; and asking all workers to report their models and nodes again. Below the list, pairing: "Add a worker"
// and the paired keys (pairing-view.js, an admin's), and, in a ComfyUI whose role is not set, "Join a farm"
// (join-farm.js: this ComfyUI then serves another host's queue and the panel becomes its worker card).

import {h, button, icon, replaceChildren} from "../lib/dom.js";
import {progressFraction, jobLabel} from "../lib/model.js";
import {formatAge, formatBytes, formatCount, plural} from "../lib/format.js";
import {JOB, WORKER, RECONNECTED} from "../lib/events.js";
import {PairingSection} from "./pairing-view.js";
import {JoinFarm} from "./join-farm.js";

/** @typedef {import("../lib/model.js").Worker} Worker */
/** @typedef {import("../lib/model.js").Progress} Progress */
/** @typedef {import("./panel.js").PanelContext} PanelContext */

const POLL_MS = 5000;

export class WorkersView {
  /**
   * @param {PanelContext} ctx
   * @param {{onCapabilities?: () => void, onCount?: (online: number, total: number) => void}} [hooks]
   */
  constructor(ctx, hooks = {}) {
    this.ctx = ctx;
    this.hooks = hooks;
    /** @type {Worker[]} */
    this.workers = [];
    /** @type {Map<string, {progress: Progress | null, worker?: string}>} running jobs' live progress */
    this.live = new Map();
    /** @type {(() => void)[]} */
    this.offs = [];
    this.visible = false;
    this.loaded = false;
    /** @type {Map<string, import("../lib/model.js").Job | null>} running jobs not in the queue view's list */
    this.jobs = new Map();
    /** @type {string | null} */
    this.error = null;
    this.loadSeq = 0;     // requests for the list, numbered in order
    this.shownSeq = 0;    // the one whose answer is shown
    this.workerEvents = 0;
    this.summaryEl = h("span", {class: "mq-muted mq-grow", "aria-live": "polite"});
    this.listEl = h("div", {class: "mq-workers", role: "list", "aria-label": "Workers"});
    this.pairing = new PairingSection(ctx, {onlineKeys: () => new Map(this.workers.filter((w) => w.online && w.key)
      .map((w) => [/** @type {string} */ (w.key), w.name || w.id]))});
    this.join = new JoinFarm(ctx);
    this.joinEl = h("details", {class: "mq-section mq-join-details", hidden: true},
      h("summary", {class: "mq-meta"}, "Use this ComfyUI as a worker of another farm"), this.join.el);
    this.el = h("div", {class: "mq-view", role: "tabpanel", "aria-label": "Workers", hidden: true},
      h("section", {class: "mq-section"}, h("div", {class: "mq-toolbar", style: {marginTop: "0"}}, this.summaryEl,
        button({icon: "pi-sync", label: "Rescan models", action: "refresh-caps",
          title: "Ask every worker to report its models and nodes again (after installing some)",
          onclick: () => this.refreshCapabilities()}),
        button({icon: "pi-refresh", title: "Reload the list", action: "reload", onclick: () => this.load()}))),
      this.listEl, this.pairing.el, this.joinEl);
  }

  start() {
    const ctx = this.ctx;
    const hub = ctx.hub;
    this.offs.push(
      hub.on(WORKER, (d) => this.onWorker(d)),
      hub.on(JOB, (d) => this.onJob(d)),
      hub.on(RECONNECTED, () => this.load()),
      ctx.status.on((st) => this.showJoin(st)),
    );
    this.showJoin(ctx.status.current);
    this.pairing.start();
    this.ticker = setInterval(() => this.tick(), 1000);
    this.poller = setInterval(() => {
      if (this.visible) this.load();
    }, POLL_MS);
    this.load();
  }

  /**
   * "Join a farm" is offered where the host says this ComfyUI may join one (its role is not set).
   * @param {import("../lib/status.js").Known} st
   */
  showJoin(st) {
    const farm = st ? st.farm : null;
    this.joinEl.hidden = !(farm && farm.can_join && !farm.joined);
  }

  stop() {
    for (const off of this.offs) off();
    this.offs = [];
    this.pairing.stop();
    clearInterval(this.ticker);
    clearInterval(this.poller);
  }

  /** @param {boolean} v */
  setVisible(v) {
    this.visible = v;
    this.el.hidden = !v;
    this.pairing.setVisible(v);
    if (v) this.load();
  }

  /**
   * Fetches the workers. An answer is not shown after that of a later request; and one that a worker event
   * crossed may predate the event (a worker shown offline that has rejoined), so the list is asked for again:
   * while the tab is hidden nothing polls, and the online count in the panel's header would stay wrong.
   */
  async load() {
    const seq = ++this.loadSeq;
    const events = this.workerEvents;
    try {
      const workers = await this.ctx.client.workers();
      if (seq < this.shownSeq) return;
      this.workers = workers;
      this.error = null;
      for (const w of this.workers) this.ctx.rememberWorker(w);
    } catch (e) {
      if (seq < this.shownSeq) return;
      this.error = e instanceof Error ? e.message : String(e);
    }
    this.shownSeq = seq;
    this.loaded = true;
    this.render();
    if (this.workerEvents !== events) this.load();
  }

  /** @param {{event?: string, worker?: Worker, reason?: string}} d */
  onWorker(d) {
    if (!d || !d.worker) return;
    const w = d.worker;
    this.workerEvents++;
    this.ctx.rememberWorker(w);
    const i = this.workers.findIndex((x) => x.id === w.id);
    if (i >= 0) this.workers[i] = w;
    else this.workers.push(w);
    if (d.event === "joined" || d.event === "rejoined" || d.event === "left" || d.event === "changed") {
      this.hooks.onCapabilities?.();
    }
    this.render();
  }

  /** @param {{jobs?: {job_id: string, state?: string, worker?: string, progress?: Progress | null}[]}} d */
  onJob(d) {
    let changed = false;
    for (const j of (d && d.jobs) || []) {
      if (j.state && j.state !== "running") {
        changed = this.live.delete(j.job_id) || changed;
        for (const w of this.workers) {
          if (w.running && w.running.includes(j.job_id)) {
            w.running = w.running.filter((x) => x !== j.job_id);
            changed = true;
          }
        }
        continue;
      }
      const prev = this.live.get(j.job_id);
      const worker = j.worker || prev?.worker;
      this.live.set(j.job_id, {progress: j.progress !== undefined ? j.progress : prev?.progress ?? null, worker});
      const w = worker ? this.workers.find((x) => x.id === worker) : undefined;
      if (w && !(w.running || []).includes(j.job_id)) w.running = [...(w.running || []), j.job_id];
      changed = true;
    }
    if (changed && this.visible) this.renderSoon();
  }

  renderSoon() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  tick() {
    if (!this.visible) return;
    const now = Date.now();
    for (const el of this.listEl.querySelectorAll("[data-seen]")) {
      el.textContent = "heartbeat " + formatAge(Number(/** @type {HTMLElement} */ (el).dataset.seen), now);
    }
  }

  render() {
    const ws = [...this.workers].sort((a, b) => Number(b.online) - Number(a.online) ||
      (a.name || a.id).localeCompare(b.name || b.id));
    const online = ws.filter((w) => w.online);
    this.hooks.onCount?.(online.length, ws.length);
    const busy = online.filter((w) => (w.running || []).length).length;
    const draining = online.filter((w) => w.draining).length;
    this.summaryEl.textContent = this.error ? this.error : `${plural(online.length, "worker")} online` +
      (busy ? ` · ${busy} busy` : "") + (draining ? ` · ${draining} draining` : "") +
      (ws.length > online.length ? ` · ${ws.length - online.length} offline` : "");
    this.summaryEl.classList.toggle("mq-error-text", !!this.error);
    if (!this.visible) return;
    const focusedAction = document.activeElement instanceof HTMLElement && this.listEl.contains(document.activeElement)
      ? [document.activeElement.closest("[data-worker]")?.getAttribute("data-worker"), document.activeElement.dataset.action]
      : null;
    if (!ws.length) {
      replaceChildren(this.listEl, h("div", {class: "mq-empty"}, this.loaded
        ? "No worker has connected. In role \u201cboth\u201d this ComfyUI is its own worker; other machines join with COMFYMQ_ROLE=worker."
        : "Loading…"));
      return;
    }
    this.listEl.replaceChildren(...ws.map((w) => this.card(w)));
    if (focusedAction && focusedAction[0]) {
      const el = this.listEl.querySelector(`[data-worker="${CSS.escape(focusedAction[0])}"] [data-action="${focusedAction[1]}"]`);
      if (el instanceof HTMLElement) el.focus({preventScroll: true});
    }
  }

  /** @param {Worker} w */
  card(w) {
    const now = Date.now();
    const info = w.info || {};
    const status = !w.online ? "offline" : w.draining ? "draining" : (w.running || []).length ? "busy" : "idle";
    const dotClass = !w.online ? "mq-offline-dot" : w.draining ? "mq-draining" : "mq-online";
    const head = h("div", {class: "mq-worker-head"},
      h("span", {class: `mq-dot ${dotClass}`, "aria-hidden": "true"}),
      h("span", {class: "mq-name", title: w.id}, w.name || w.id),
      h("span", {class: `mq-pill ${dotClass}`}, status),
      w.online ? button({icon: w.draining ? "pi-play" : "pi-stop-circle", label: w.draining ? "Undrain" : "Drain",
        action: "drain", title: w.draining ? "Let this worker take jobs again"
          : "Drain: the worker finishes what it runs and takes no new job",
        onclick: () => this.drain(w, !w.draining)}) : null);

    const running = (w.running || []).map((id) => {
      const live = this.live.get(id);
      const job = this.ctx.findJob(id) || this.lookup(id);
      const p = live?.progress ?? job?.progress ?? null;
      const frac = progressFraction(p);
      const label = job ? jobLabel(job) : null;
      return h("div", {class: "mq-line"},
        icon("pi-spin pi-spinner"),
        h("span", {class: "mq-ellipsis", title: id}, label ? label.name + (label.index != null ? ` #${label.index}` : "")
          : `job ${id.slice(-8)}`),
        h("div", {class: "mq-progress", role: "progressbar", "aria-label": `progress of job ${id}`, "aria-valuemin": "0",
          "aria-valuemax": "100", "aria-valuenow": String(Math.round(frac * 100))},
        h("span", {style: {width: `${(frac * 100).toFixed(1)}%`}})),
        h("span", {class: "mq-meta"}, p ? `${p.title || p.class_type || ""}${p.max && p.max > 1 ? ` ${p.value}/${p.max}` : ""}` : ""));
    });

    const devices = (info.devices || []).map((d) => `${d.name || d.type}` +
      (d.vram_total ? ` · VRAM ${formatBytes(d.vram_free)} free of ${formatBytes(d.vram_total)}` : ""));
    const facts = h("div", {class: "mq-facts"},
      h("span", {dataset: {seen: String(w.last_seen || 0)}}, "heartbeat " + formatAge(w.last_seen, now)),
      info.hostname ? h("span", null, icon("pi-desktop"), " ", info.hostname + (info.os ? ` (${info.os})` : "")) : null,
      devices.map((d) => h("span", null, icon("pi-microchip"), " ", d)),
      info.ram_total ? h("span", null, `RAM ${formatBytes(info.ram_total)}`) : null,
      h("span", {title: "model files (checkpoints, LoRAs, VAEs, ...) this worker's ComfyUI has"}, icon("pi-box"),
        ` ${formatCount(w.models || 0)} models`),
      h("span", {title: "node classes this worker's ComfyUI has"}, `${formatCount(w.node_classes || 0)} node classes`),
      h("span", null, `capacity ${w.capacity ?? 1}`),
      w.comfyui_version ? h("span", null, `ComfyUI ${w.comfyui_version}`) : null,
      w.plugin_version ? h("span", null, `ComfyMQ ${w.plugin_version}`) : null,
      w.key ? h("span", {title: w.key}, icon("pi-lock"), " CURVE") : null);
    return h("div", {class: "mq-worker" + (w.online ? "" : " mq-offline"), role: "listitem", dataset: {worker: w.id}},
      head, running.length ? running : h("div", {class: "mq-meta"}, w.online ? (w.draining ? "draining: takes no new job" : "idle")
        : "offline"), facts);
  }

  /**
   * A running job the queue view has not loaded (another filter or page): fetched once, for its name.
   * @param {string} id
   */
  lookup(id) {
    if (this.jobs.has(id)) return this.jobs.get(id) || undefined;
    if (this.jobs.size > 200) this.jobs.clear();
    this.jobs.set(id, null);
    this.ctx.client.getJob(id).then((j) => {
      this.jobs.set(id, {...j, prompt: undefined, workflow: undefined});
      this.renderSoon();
    }, () => {});
    return undefined;
  }

  /** @param {Worker} w @param {boolean} drain */
  async drain(w, drain) {
    try {
      await this.ctx.client.drain(w.id, drain);
      w.draining = drain;
      this.render();
    } catch (e) {
      this.ctx.toastError(`Could not ${drain ? "drain" : "undrain"} ${w.name || w.id}`, e);
    }
  }

  async refreshCapabilities() {
    try {
      await this.ctx.client.refreshWorkers();
      this.ctx.toast({severity: "info", summary: "Asked the workers for their models and nodes", life: 3000});
      setTimeout(() => this.load(), 1500);
    } catch (e) {
      this.ctx.toastError("Could not ask the workers", e);
    }
  }
}
