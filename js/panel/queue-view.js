// The Queue tab: counts per state (they double as the state filter), pause/resume, the batch filter and order,
// the batches among the listed jobs with their progress, the windowed job list and the selected job's details.

import {h, button, icon, replaceChildren} from "../lib/dom.js";
import {STATES, fullCounts, batchLabel, jobLabel, shortIds, matchesFilter, isDependencyReason} from "../lib/model.js";
import {formatCount, plural} from "../lib/format.js";
import {JobList} from "../lib/job-list.js";
import {jobImages} from "../lib/images.js";
import {JOB, QUEUE, STATS, RECONNECTED} from "../lib/events.js";
import {VirtualList} from "./virtual-list.js";
import {renderJobRow, tickDurations} from "./job-row.js";
import {JobDetails} from "./job-details.js";
import {openLightbox} from "./lightbox.js";
import {ROW_HEIGHT} from "./styles.js";

/** @typedef {import("../lib/model.js").Job} Job */
/** @typedef {import("./panel.js").PanelContext} PanelContext */

const STATE_NAMES = {pending: "Pending", running: "Running", succeeded: "Done", failed: "Failed", cancelled: "Cancelled"};
const WAIT_TTL = 20000;    // how long a pending job's waiting reasons are trusted
const WAIT_AFTER = 1500;   // a job pending for less than this is not asked about yet
const WAIT_PARALLEL = 3;
const MAX_BATCHES = 3;
const BATCH_RETRY_MS = 5000;  // a batch whose counts could not be fetched is asked for again after this

export class QueueView {
  /** @param {PanelContext} ctx */
  constructor(ctx) {
    this.ctx = ctx;
    /** @type {(() => void)[]} */
    this.offs = [];
    this.counts = fullCounts(null);
    this.paused = false;
    /** @type {string | null} */
    this.selected = null;
    /** @type {Map<string, {at: number, reasons: string[]}>} */
    this.waiting = new Map();
    this.waitInFlight = 0;
    /** @type {WeakMap<object, number>} */
    this.objIds = new WeakMap();
    this.nextObjId = 1;
    /** @type {Map<string, import("../lib/client.js").Batch | null>} */
    this.batchInfo = new Map();
    /** @type {string | null} whose jobs this panel queues (GET /comfymq/whoami's owner): the "Mine" filter */
    this.me = null;
    /** @type {Set<string>} */
    this.batchDirty = new Set();
    /** @type {Map<string, number>} batch -> the request whose answer is shown (requests are numbered in order) */
    this.batchShown = new Map();
    this.batchSeq = 0;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.batchTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} asks again for batches whose counts could not be fetched */
    this.batchRetry = null;
    this.batchesKey = "";
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.countsTimer = null;
    /** @type {Map<string, string>} each listed job's short id (unique among the listed jobs) */
    this.shorts = new Map();

    this.list = new JobList(ctx.client, {pageSize: 100, onChange: () => this.changed(),
      onError: (e) => this.showError(e)});

    this.countsEl = h("div", {class: "mq-counts", role: "group", "aria-label": "Filter by state"});
    this.pauseBtn = button({icon: "pi-pause", label: "Pause", action: "pause", onclick: () => this.togglePause()});
    this.batchFilterEl = h("span", {class: "mq-grow"});
    this.orderBtn = button({icon: "pi-sort-amount-down", label: "Newest", action: "order",
      title: "Order: newest first / oldest first", onclick: () => this.toggleOrder()});
    this.bannerEl = h("div", {hidden: true});
    this.batchesEl = h("div", {class: "mq-batches"});
    this.batchesSection = h("section", {class: "mq-section", "aria-label": "Batches", hidden: true}, this.batchesEl);

    this.vlist = new VirtualList({
      rowHeight: ROW_HEIGHT,
      label: "Jobs",
      count: () => this.list.size,
      key: (i) => this.list.ids[i],
      version: (i) => this.rowVersion(i),
      render: (i) => this.renderRow(i),
      onEndReached: () => this.list.loadMore(),
      onActivate: (i) => this.select(this.list.ids[i]),
      empty: () => this.emptyText(),
      footer: () => this.list.hasMore || (this.list.loading && this.list.size)
        ? h("span", {class: "mq-muted"}, this.list.loading ? "Loading…" : "") : null,
    });
    this.vlist.el.addEventListener("click", (e) => {
      const row = /** @type {HTMLElement} */ (e.target).closest(".mq-row");
      if (row instanceof HTMLElement && row.dataset.key) this.select(row.dataset.key);
    });

    this.details = new JobDetails({
      client: ctx.client, images: ctx.images, workerName: (id) => ctx.workerName(id), paused: () => this.paused,
      onAction: (a, job) => this.action(a, job), onClose: () => this.select(null),
      onBatch: (id) => this.filterBatch(id), onImage: (job, i) => this.lightbox(job, i),
      onUseImage: (ref) => ctx.useAsInput(ref), onJob: (id) => this.select(id),
      onLoaded: (job) => {
        if (job.state === "pending") this.waiting.set(job.id, {at: Date.now(), reasons: job.waiting || []});
        this.list.put(job);
      },
    });

    this.el = h("div", {class: "mq-view", role: "tabpanel", "aria-label": "Queue"},
      this.bannerEl,
      h("section", {class: "mq-section", "aria-label": "Queue state"},
        this.countsEl,
        h("div", {class: "mq-toolbar"}, this.pauseBtn, this.batchFilterEl, this.orderBtn,
          button({icon: "pi-refresh", title: "Reload the list", action: "reload", onclick: () => this.reloadAll()}))),
      this.batchesSection,
      this.vlist.el,
      this.details.el);
  }

  /** Starts listening and loads; called from the sidebar tab's render. */
  start() {
    const hub = this.ctx.hub;
    this.offs.push(
      hub.on(JOB, (d) => this.onJob(d)),
      hub.on(QUEUE, (d) => {
        this.paused = !!(d && d.paused);
        this.renderCounts();
      }),
      // a stats event may be older than the counts just fetched: it only says "counts changed"
      hub.on(STATS, () => this.countsSoon()),
      hub.on(RECONNECTED, () => this.reloadAll()),
    );
    this.ticker = setInterval(() => {
      tickDurations(this.vlist.el, Date.now());
      this.askWaiting();
    }, 1000);
    // the websocket carries stats only when they change; this catches anything missed while hidden
    this.poller = setInterval(() => this.loadCounts(), 15000);
    this.renderCounts();
    this.renderFilter();
    this.reloadAll();
    // whose jobs this panel queues: the "Mine" filter shows them alone (a host older than the route has none)
    this.ctx.client.whoami().then((me) => {
      this.me = me && me.owner ? me.owner : null;
      this.renderFilter();
    }).catch(() => {});
  }

  stop() {
    for (const off of this.offs) off();
    this.offs = [];
    clearInterval(this.ticker);
    clearInterval(this.poller);
    if (this.batchTimer) clearTimeout(this.batchTimer);
    if (this.batchRetry) clearTimeout(this.batchRetry);
    this.batchRetry = null;
    if (this.countsTimer) clearTimeout(this.countsTimer);
    this.list.close();
    this.vlist.destroy();
    this.details.destroy();
  }

  reloadAll() {
    this.loadCounts();
    this.batchInfo.clear();
    this.list.reload();
    if (this.selected) this.details.refreshSoon();
  }

  countsSoon() {
    if (this.countsTimer) return;
    this.countsTimer = setTimeout(() => {
      this.countsTimer = null;
      this.loadCounts();
    }, 400);
  }

  async loadCounts() {
    try {
      const q = await this.ctx.client.queue();
      this.counts = fullCounts(q.counts);
      this.paused = q.paused;
      this.setBanner(null);
    } catch (e) {
      this.showError(e);
    }
    this.renderCounts();
  }

  /** @param {unknown} e */
  showError(e) {
    const msg = e instanceof Error ? e.message : String(e);
    this.setBanner(msg);
  }

  /** @param {string | null} msg */
  setBanner(msg) {
    if (!msg) {
      if (!this.paused) this.bannerEl.hidden = true;
      else this.renderBanner();
      return;
    }
    this.bannerEl.hidden = false;
    this.bannerEl.className = "mq-banner mq-error";
    this.bannerEl.setAttribute("role", "alert");
    replaceChildren(this.bannerEl, icon("pi-exclamation-triangle"), h("span", null, msg),
      button({icon: "pi-refresh", title: "Try again", action: "retry-load", onclick: () => {
        this.ctx.client.resetAuth(); // asked for: one real request, even if the host refused this token before
        this.reloadAll();
      }}));
  }

  renderBanner() {
    if (!this.paused) {
      if (this.bannerEl.classList.contains("mq-paused")) this.bannerEl.hidden = true;
      return;
    }
    this.bannerEl.hidden = false;
    this.bannerEl.className = "mq-banner mq-paused";
    this.bannerEl.setAttribute("role", "status");
    replaceChildren(this.bannerEl, icon("pi-pause"),
      h("span", null, "The queue is paused: running jobs finish, nothing new starts."));
  }

  /** @param {{jobs?: import("../lib/model.js").JobDelta[], resync?: boolean}} d */
  onJob(d) {
    if (!d) return;
    if (d.resync) {
      this.reloadAll();
      return;
    }
    const jobs = d.jobs || [];
    // each job's batch, looked up before the deltas apply: a job that leaves the state filter leaves the list
    const batchOf = new Map(jobs.map((j) => [j.job_id, this.list.byId.get(j.job_id)?.batch_id]));
    this.list.apply(jobs);
    const ended = new Set(jobs.filter((j) => j.state === "succeeded").map((j) => j.job_id));
    if (ended.size) {
      // the jobs that wait for one that just succeeded: their reasons are asked again (they may run now)
      for (const w of this.waiting.values()) {
        if (w.reasons.some((r) => ended.has(r.slice(14, 30)) && isDependencyReason(r))) w.at = 0;
      }
    }
    for (const j of jobs) {
      if (j.state && j.state !== "pending") this.waiting.delete(j.job_id);
      if (j.job_id === this.selected) {
        if (j.state || j.removed) this.details.refreshSoon();
        else if (j.progress !== undefined) this.details.progress(j.progress ?? null);
      }
      const b = batchOf.get(j.job_id) ?? this.list.byId.get(j.job_id)?.batch_id;
      if (b && j.state && this.batchInfo.has(b)) this.batchDirty.add(b);
    }
    // counts: one request for a burst of changes (the stats event, at most once a second, also brings them)
    if (jobs.some((j) => j.state || j.removed)) this.countsSoon();
    if (this.batchDirty.size && !this.batchTimer) {
      this.batchTimer = setTimeout(() => {
        this.batchTimer = null;
        const ids = [...this.batchDirty];
        this.batchDirty.clear();
        for (const id of ids) this.loadBatch(id);
      }, 1000);
    }
  }

  changed() {
    this.updateShortIds();
    this.vlist.schedule();
    this.renderBatches();
  }

  /** Short ids for the listed jobs, computed again only when the list's set of ids changed. */
  updateShortIds() {
    const ids = this.list.ids;
    if (ids.length === this.shorts.size && ids.every((id) => this.shorts.has(id))) return;
    this.shorts = shortIds(ids);
  }

  /** @param {string} id */
  shortId(id) {
    return this.shorts.get(id) || id.slice(-6);
  }

  /** @param {number} i */
  rowVersion(i) {
    const job = this.list.at(i);
    if (!job) return "";
    let id = this.objIds.get(job);
    if (!id) this.objIds.set(job, (id = this.nextObjId++));
    const w = job.state === "pending" ? (this.waiting.get(job.id)?.reasons || []).join("|") : "";
    return `${id}|${job.id === this.selected}|${w}|${this.shortId(job.id)}`;
  }

  /** @param {number} i */
  renderRow(i) {
    const job = /** @type {Job} */ (this.list.at(i));
    return renderJobRow(job, {
      now: Date.now(), selected: job.id === this.selected, images: this.ctx.images, shortId: this.shortId(job.id),
      waiting: this.waiting.get(job.id)?.reasons, workerName: (id) => this.ctx.workerName(id),
      onAction: (a, j) => this.action(a, j), onImage: (j, k) => this.lightbox(j, k),
    });
  }

  emptyText() {
    if (this.list.loading) return "Loading…";
    if (this.list.error) return "Could not load the jobs.";
    const f = this.list.filter;
    if (f.states.length || f.batch || f.owner) return "No jobs match the filter.";
    return "No jobs yet. Queue the workflow with the Queue button above, the \u201cQueue (MQ)\u201d button or Ctrl+Shift+Enter.";
  }

  renderCounts() {
    const f = this.list.filter;
    const total = STATES.reduce((n, s) => n + this.counts[s], 0);
    const all = h("button", {type: "button", class: "mq-btn mq-chip", "aria-pressed": String(!f.states.length),
      title: "Show every state", onclick: () => this.setStates([])}, "All ", h("b", null, formatCount(total)));
    const chips = STATES.map((s) => h("button", {type: "button", class: `mq-btn mq-chip mq-state-${s}`,
      "aria-pressed": String(f.states.includes(s)), dataset: {state: s},
      title: `Show only ${STATE_NAMES[s].toLowerCase()} jobs (click again to clear)`,
      onclick: () => this.setStates(f.states.length === 1 && f.states[0] === s ? [] : [s])},
    h("span", {class: "mq-dot"}), STATE_NAMES[s], " ", h("b", null, formatCount(this.counts[s]))));
    this.countsEl.replaceChildren(all, ...chips);
    const label = /** @type {HTMLElement} */ (this.pauseBtn.querySelector("span"));
    const ic = /** @type {HTMLElement} */ (this.pauseBtn.querySelector("i"));
    label.textContent = this.paused ? "Resume" : "Pause";
    ic.className = `pi ${this.paused ? "pi-play" : "pi-pause"}`;
    this.pauseBtn.title = this.paused ? "Resume the queue: workers take jobs again"
      : "Pause the queue: running jobs finish, no new job starts";
    this.pauseBtn.setAttribute("aria-pressed", String(this.paused));
    this.renderBanner();
  }

  renderFilter() {
    const b = this.list.filter.batch;
    const me = this.me;
    const mine = !!me && this.list.filter.owner === me;
    this.batchFilterEl.replaceChildren(
      me ? h("button", {type: "button", class: "mq-btn mq-chip", "aria-pressed": String(mine), "data-action": "mine",
        title: mine ? "Showing your jobs only; click to show everyone's" : `Show only your jobs (${me})`,
        onclick: () => {
          this.list.setFilter({owner: mine ? null : me});
          this.renderFilter();
        }}, icon("pi-user"), "Mine") : "",
      b ? h("button", {type: "button", class: "mq-btn mq-chip", "aria-pressed": "true",
        title: `Showing batch ${b}; click to show all batches`, onclick: () => this.filterBatch(null)},
      icon("pi-filter"), batchLabel(b), icon("pi-times")) : "");
    const newest = this.list.order === "newest";
    /** @type {HTMLElement} */ (this.orderBtn.querySelector("span")).textContent = newest ? "Newest" : "Oldest";
    /** @type {HTMLElement} */ (this.orderBtn.querySelector("i")).className =
      `pi ${newest ? "pi-sort-amount-down" : "pi-sort-amount-up"}`;
  }

  /** @param {string[]} states */
  setStates(states) {
    this.list.setFilter({states});
    this.renderCounts();
    this.vlist.el.scrollTop = 0;
  }

  /** @param {string | null} batch */
  filterBatch(batch) {
    this.list.setFilter({batch});
    this.renderFilter();
    this.vlist.el.scrollTop = 0;
  }

  toggleOrder() {
    this.list.setOrder(this.list.order === "newest" ? "oldest" : "newest");
    this.renderFilter();
    this.vlist.el.scrollTop = 0;
  }

  async togglePause() {
    try {
      const q = await this.ctx.client.setPaused(!this.paused);
      this.paused = q.paused;
      this.counts = fullCounts(q.counts);
      this.renderCounts();
    } catch (e) {
      this.ctx.toastError("Could not change the queue", e);
    }
  }

  /** @param {string | null} id */
  select(id) {
    if (id === this.selected) {
      if (id) this.details.refreshSoon();
      return;
    }
    this.selected = id;
    if (id) this.details.show(id);
    else this.details.hide();
    this.vlist.schedule();
  }

  /**
   * Shows a job the user was pointed to (a toast's "no worker can run it yet"): every state and batch listed
   * again unless the filter shows it, the job selected with its details (why it waits), and its row scrolled to
   * (a job just queued is the list's first, newest first, when its record has not come yet).
   * @param {string} id
   */
  focus(id) {
    const f = this.list.filter;
    const job = this.list.byId.get(id);
    if ((f.states.length || f.batch || f.owner) && !(job && matchesFilter(job, f))) {
      this.list.setFilter({states: [], batch: null, owner: null});
      this.renderCounts();
      this.renderFilter();
    }
    this.select(id);
    this.vlist.el.scrollTop = Math.max(0, this.list.ids.indexOf(id)) * ROW_HEIGHT;
  }

  /** @param {Job} job @param {number} index */
  lightbox(job, index) {
    const l = jobLabel(job);
    openLightbox(jobImages(job), index, this.ctx.images, l.name + (l.index != null ? ` #${l.index}` : ""),
      {onUse: (ref) => this.ctx.useAsInput(ref)});
  }

  /**
   * @param {string} action
   * @param {Job} job
   */
  async action(action, job) {
    const c = this.ctx.client;
    try {
      if (action === "open") {
        await this.ctx.openJob(job.id);
      } else if (action === "cancel") {
        this.list.put(await c.cancel(job.id));
      } else if (action === "retry") {
        this.ctx.notifier.retrying(job.id);
        const j = await c.retry(job.id);
        this.list.put(j);
        this.ctx.notifier.watch(j, jobLabel(j).name);
      } else if (action === "delete") {
        await c.remove(job.id);
        this.list.removeId(job.id);
        if (this.selected === job.id) this.select(null);
        this.changed();
        this.loadCounts();
      } else if (action === "cancel-batch" && job.batch_id) {
        await this.cancelBatch(job.batch_id);
      }
      if (this.selected === job.id && action !== "delete") this.details.refreshSoon();
    } catch (e) {
      this.ctx.toastError(`Could not ${action.replace("-", " ")} the job`, e);
      if (/** @type {any} */ (e).status === 404 || /** @type {any} */ (e).status === 409) this.list.reload();
    }
  }

  /** @param {string} batchId */
  async cancelBatch(batchId) {
    const info = this.batchInfo.get(batchId) || await this.ctx.client.batch(batchId).catch(() => null);
    const open = info ? info.counts.pending + info.counts.running : null;
    const ok = await this.ctx.confirm("Cancel the batch?",
      `Cancel ${open != null ? plural(open, "unfinished job") : "every unfinished job"} of batch ${batchLabel(batchId)}?`);
    if (!ok) return;
    try {
      const r = await this.ctx.client.cancelBatch(batchId);
      this.ctx.toast({severity: "info", summary: `Batch ${batchLabel(batchId)} cancelled`,
        detail: r.cancelled ? `${plural(r.cancelled, "job")} cancelled` : "nothing was left to cancel", life: 4000});
      this.loadBatch(batchId);
    } catch (e) {
      this.ctx.toastError("Could not cancel the batch", e);
    }
  }

  /** Asks why the visible pending jobs wait (a few at a time, each at most every 20 s). */
  askWaiting() {
    if (this.waitInFlight >= WAIT_PARALLEL) return;
    const now = Date.now();
    const first = Math.floor(this.vlist.el.scrollTop / ROW_HEIGHT);
    const last = Math.min(this.list.size - 1, first + Math.ceil((this.vlist.el.clientHeight || 400) / ROW_HEIGHT));
    for (let i = Math.max(0, first); i <= last && this.waitInFlight < WAIT_PARALLEL; i++) {
      const job = this.list.at(i);
      if (!job || job.state !== "pending" || now - job.enqueued_at < WAIT_AFTER) continue;
      const known = this.waiting.get(job.id);
      if (known && now - known.at < WAIT_TTL) continue;
      this.waiting.set(job.id, {at: now, reasons: known ? known.reasons : []});
      this.waitInFlight++;
      this.ctx.client.getJob(job.id).then((full) => {
        if (full.state === "pending") this.waiting.set(job.id, {at: Date.now(), reasons: full.waiting || []});
        else this.waiting.delete(job.id);
        this.vlist.schedule();
      }, () => {}).finally(() => {
        this.waitInFlight--;
      });
    }
  }

  /** Worker capabilities changed: ask again why jobs wait (the rows', and the open details' if its job waits). */
  forgetWaiting() {
    this.waiting.clear();
    this.vlist.schedule();
    if (this.selected && this.list.byId.get(this.selected)?.state === "pending") this.details.refreshSoon();
  }

  renderBatches() {
    const ids = this.list.filter.batch ? [this.list.filter.batch] : this.list.batches().slice(0, MAX_BATCHES);
    this.batchesSection.hidden = !ids.length;
    for (const id of ids) if (!this.batchInfo.has(id)) this.loadBatch(id);
    for (const id of [...this.batchInfo.keys()]) if (!ids.includes(id) && this.batchInfo.size > 20) this.batchInfo.delete(id);
    const key = ids.map((id) => {
      const b = this.batchInfo.get(id);
      return b ? `${id}:${b.finished}:${b.counts.running}:${b.counts.failed}:${b.total}` : id;
    }).join(",") + "|" + this.list.filter.batch;
    if (key === this.batchesKey) return;
    this.batchesKey = key;
    this.batchesEl.replaceChildren(...ids.map((id) => this.batchRow(id)));
  }

  /**
   * Fetches a batch's counts. Several requests for one batch can be on their way (events, a cancel, a reload):
   * an answer is not shown after that of a later request, it would put back counts the batch has left (and a
   * finished batch sends no event that would correct them).
   * @param {string} id
   */
  async loadBatch(id) {
    if (!this.batchInfo.has(id)) this.batchInfo.set(id, null);
    const seq = ++this.batchSeq;
    /** @type {import("../lib/client.js").Batch | null} */
    let b = null;
    try {
      b = await this.ctx.client.batch(id);
    } catch {
      // kept as "not known yet" (so rendering does not ask again at once, in a loop while the host refuses or is
      // down) and asked for again in a while, if the batch is still shown then
      if (!this.batchRetry) {
        this.batchRetry = setTimeout(() => {
          this.batchRetry = null;
          for (const [bid, info] of this.batchInfo) if (info === null) this.loadBatch(bid);
        }, BATCH_RETRY_MS);
      }
    }
    if (seq < (this.batchShown.get(id) || 0)) return;
    this.batchShown.set(id, seq);
    if (b) this.batchInfo.set(id, b);
    else if (!this.batchInfo.has(id)) this.batchInfo.set(id, null);
    this.renderBatches();
  }

  /** @param {string} id */
  batchRow(id) {
    const b = this.batchInfo.get(id);
    const name = h("div", {class: "mq-batch-name", title: id}, icon("pi-th-large"), " ", batchLabel(id));
    if (!b) return h("div", {class: "mq-batch"}, name, h("div", {class: "mq-progress"}));
    const seg = (/** @type {string} */ s) => h("span", {class: `mq-seg-${s}`,
      style: {width: `${(100 * (b.counts[s] || 0)) / Math.max(1, b.total)}%`}});
    const open = b.counts.pending + b.counts.running;
    name.append(h("span", {class: "mq-muted"}, ` · ${formatCount(b.finished)}/${formatCount(b.total)} done` +
      (b.counts.running ? ` · ${b.counts.running} running` : "") + (b.counts.failed ? ` · ${b.counts.failed} failed` : "")));
    const filtered = this.list.filter.batch === id;
    return h("div", {class: "mq-batch", dataset: {batch: id}},
      name,
      h("div", {class: "mq-progress", role: "progressbar", "aria-label": `batch ${batchLabel(id)}`, "aria-valuemin": "0",
        "aria-valuemax": String(b.total), "aria-valuenow": String(b.finished)},
      seg("succeeded"), seg("failed"), seg("cancelled"), seg("running")),
      h("div", {class: "mq-batch-actions"},
        button({icon: filtered ? "pi-filter-slash" : "pi-filter", title: filtered ? "Show all jobs" : "Show only this batch",
          action: "filter-batch", onclick: () => this.filterBatch(filtered ? null : id)}),
        open ? button({icon: "pi-ban", title: `Cancel the batch's ${plural(open, "unfinished job")}`, class: "mq-danger",
          action: "cancel-batch", onclick: () => this.cancelBatch(id)}) : null));
  }
}
