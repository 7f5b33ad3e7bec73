// Toasts for the jobs this browser queued: one when they are queued, one when a job ends (or, for a batch, one
// when the whole batch has ended, whatever its size: never one per job), and failures right away (for a batch,
// the first failure only; the batch's final toast counts the rest). A queueing no online worker can run yet is a
// warning that names the reasons (not the green "Queued"), and the job is handed to `onUnrunnable` (the panel
// selects it); one the host refused for that reason (409 `unrunnable`) is an error with the reasons.

import {FINISHED, batchLabel, nodeName, compactReason} from "./model.js";
import {formatDuration, plural} from "./format.js";

/** @typedef {import("./client.js").MQClient} MQClient */
/** @typedef {import("./model.js").JobDelta} JobDelta */
/** @typedef {import("./model.js").JobState} JobState */
/** @typedef {import("./enqueue.js").Enqueued} Enqueued */
/**
 * @typedef {{severity?: "success" | "info" | "warn" | "error" | "secondary" | "contrast", summary?: string,
 *            detail?: any, life?: number}} Toast
 */
/** @typedef {{add(t: Toast): void}} ToastLike */
/** @typedef {{name: string, total: number, ids: Set<string>, ended: Map<string, string>, failureShown: boolean,
 *             announced: boolean}} TrackedBatch */

const FLUSH_MS = 500;
const MAX_TRACKED = 20000;
// A job made or retried this soon after a resync (the host dropped a burst of events for a refetch) may have
// ended in events nobody saw: its state is asked for once it is tracked.
const RESYNC_WINDOW_MS = 60000;
const MAX_REASONS = 3;  // reasons named in a toast; the panel lists them all

/**
 * "No worker can run it yet: worker gpu1: missing checkpoint x.safetensors; worker gpu2: ..." for a toast.
 * @param {string[]} reasons  the host's `waiting` lines
 * @param {string} [lead]
 */
export function waitingText(reasons, lead = "No worker can run it yet") {
  const shown = reasons.slice(0, MAX_REASONS).map(compactReason);
  const more = reasons.length > MAX_REASONS ? ` (and ${reasons.length - MAX_REASONS} more)` : "";
  return `${lead}: ${shown.join("; ")}${more}`;
}

export class Notifier {
  /**
   * @param {() => ToastLike | null} toast  ComfyUI's toast manager (looked up late: it exists once the app is set up)
   * @param {MQClient} client
   * @param {{finishToasts?: () => boolean, onUnrunnable?: (jobId: string) => void}} [opts]
   *   onUnrunnable: a job just queued that no online worker can run yet (the panel selects it, with why)
   */
  constructor(toast, client, opts = {}) {
    this.toast = toast;
    this.client = client;
    this.finishToasts = opts.finishToasts || (() => true);
    this.onUnrunnable = opts.onUnrunnable || (() => {});
    /** @type {Map<string, {batch: string | null, name: string, state: string}>} */
    this.jobs = new Map();
    /** @type {Map<string, TrackedBatch>} */
    this.batches = new Map();
    /** @type {Map<string, string>} job id -> the state it ended in, waiting for the flush */
    this.ended = new Map();
    /**
     * @type {Map<string, JobState>} job id -> the latest state events gave for a job not tracked (yet): the answer
     * that makes a job tracked (an enqueue's, a retry's) can come after the job's first events, even its end
     * (a request of many jobs, or one request per copy, is answered after its first jobs ran)
     */
    this.early = new Map();
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.timer = null;
    this.resyncAt = -Infinity;  // when the last resync came (Date.now())
  }

  /** @param {Toast} t */
  show(t) {
    try {
      this.toast()?.add(t);
    } catch (e) {
      console.warn("[ComfyMQ] toast failed", e);
    }
  }

  /** @param {Enqueued} r */
  queued(r) {
    if (r.remote) {
      this.queuedRemote(r, r.remote);
      return;
    }
    const fresh = r.jobs.filter((j) => !j.state || !FINISHED.has(j.state));
    for (const j of fresh) {
      if (this.jobs.size >= MAX_TRACKED) break;
      this.jobs.set(j.id, {batch: r.batchId, name: r.name, state: j.state || "pending"});
    }
    if (r.batchId) {
      const prev = this.batches.get(r.batchId);
      const ids = prev ? prev.ids : new Set();
      for (const j of r.jobs) ids.add(j.id);
      this.batches.set(r.batchId, prev || {name: r.name, total: 0, ids, ended: new Map(), failureShown: false,
        announced: false});
      /** @type {TrackedBatch} */ (this.batches.get(r.batchId)).total = ids.size;
    }
    const existed = r.jobs.length - fresh.length;
    const what = r.name + (r.batchId ? ` · batch ${batchLabel(r.batchId)}` : "") +
      (existed ? ` (${existed} already finished)` : "");
    const stuck = r.waiting && r.waiting.length ? fresh.find((j) => !j.existed) || fresh[0] : undefined;
    if (r.waiting && r.waiting.length && stuck) {
      // toasts here cannot carry a button: the panel selects the job instead, and the toast says where to look
      this.show({
        severity: "warn",
        summary: r.total > 1 ? `Queued ${plural(r.total, "job")}, but no worker can run them yet` :
          "Queued, but no worker can run it yet",
        detail: `${what}. ${waitingText(r.waiting, r.total > 1 ? "No worker can run them yet" : undefined)}. ` +
          "It waits until one can: open the ComfyMQ panel (MQ in the sidebar), where the job is selected.",
        life: 15000,
      });
      this.onUnrunnable(stuck.id);
    } else {
      this.show({
        severity: "success",
        summary: r.total > 1 ? `Queued ${plural(r.total, "job")}` : "Queued in ComfyMQ",
        detail: what,
        life: 3000,
      });
    }
    // a job the request made has had no event before it was made: what came already is newer than the answer
    this.catchUp(fresh.filter((j) => !j.existed).map((j) => j.id));
    this.afterResync();
  }

  /** Asks for the tracked jobs' states when events may have been dropped for a resync while an answer was on its way. */
  afterResync() {
    if (Date.now() - this.resyncAt < RESYNC_WINDOW_MS) this.recount().catch(() => {});
  }

  /**
   * A retry of a job is on its way: what events said of the job until now is about the run that ended, not the
   * one the retry starts (call before asking, then watch() with the answer).
   * @param {string} id
   */
  retrying(id) {
    this.early.delete(id);
  }

  /**
   * Follows a job queued again (a retry) to its end.
   * @param {{id: string, state: string, batch_id?: string | null}} job
   * @param {string} name
   */
  watch(job, name) {
    if (this.jobs.size >= MAX_TRACKED) return;
    const batch = job.batch_id && this.batches.has(job.batch_id) ? job.batch_id : null;
    this.jobs.set(job.id, {batch, name, state: job.state});
    this.catchUp([job.id]);
    this.afterResync();
  }

  /**
   * Applies to jobs just tracked what events said of them before (see `early`).
   * @param {string[]} ids
   */
  catchUp(ids) {
    /** @type {JobDelta[]} */
    const seen = [];
    for (const id of ids) {
      const state = this.early.get(id);
      if (state === undefined) continue;
      this.early.delete(id);
      if (this.jobs.has(id)) seen.push({job_id: id, state});
    }
    if (seen.length) this.onJob({jobs: seen});
  }

  /**
   * Jobs a worker forwarded to its host: this page gets no events of that host's queue, so they are not followed
   * (no finish toasts); the host's own panel shows them.
   * @param {Enqueued} r
   * @param {string} host
   */
  queuedRemote(r, host) {
    const n = r.total > 1 ? plural(r.total, "job") : "the workflow";
    const it = r.total > 1 ? "them" : "it";
    const stuck = r.waiting && r.waiting.length;
    this.show({
      severity: stuck ? "warn" : "success",
      summary: stuck ? `Queued ${n} on the host, but no worker can run ${it} yet` : `Queued ${n} on the host`,
      detail: `${r.name} · ${host}` +
        (stuck ? `. ${waitingText(/** @type {string[]} */ (r.waiting), `No worker can run ${it} yet`)}` : "") +
        `. The host's ComfyMQ panel follows ${it}.`,
      life: stuck ? 15000 : 4000,
    });
  }

  /** @param {unknown} e */
  queueFailed(e) {
    const err = /** @type {{type?: string, waiting?: string[] | null}} */ (e ?? {});
    if (err.type === "unrunnable") {
      const reasons = Array.isArray(err.waiting) && err.waiting.length ? err.waiting : null;
      this.show({severity: "error", summary: "Not queued: no worker can run this workflow",
        detail: reasons ? waitingText(reasons, "The host refuses jobs no online worker can run") :
          (e instanceof Error ? e.message : String(e)),
        life: 15000});
      return;
    }
    this.show({severity: "error", summary: "ComfyMQ could not queue the workflow",
      detail: e instanceof Error ? e.message : String(e), life: 10000});
  }

  /** @param {{jobs?: JobDelta[], resync?: boolean}} detail */
  onJob(detail) {
    if (detail && detail.resync) {
      this.resyncAt = Date.now();
      this.recount();
      return;
    }
    for (const d of (detail && detail.jobs) || []) {
      const t = this.jobs.get(d.job_id);
      if (!t) {
        this.remember(d);
        continue;
      }
      if (d.removed) {
        this.jobs.delete(d.job_id);
        continue;
      }
      if (!d.state || d.state === t.state) continue;
      t.state = d.state;
      if (FINISHED.has(d.state)) this.ended.set(d.job_id, d.state);
      else {
        this.ended.delete(d.job_id);
        if (t.batch) this.batches.get(t.batch)?.ended.delete(d.job_id); // retried
      }
    }
    if (this.ended.size && !this.timer) this.timer = setTimeout(() => this.flush(), FLUSH_MS);
  }

  /** Notes a change of a job not tracked, in case an answer that comes later makes it tracked. @param {JobDelta} d */
  remember(d) {
    if (d.removed) {
      this.early.delete(d.job_id);
    } else if (d.state) {
      this.early.delete(d.job_id); // the newest last: the oldest goes first when there are too many
      this.early.set(d.job_id, d.state);
      if (this.early.size > MAX_TRACKED) this.early.delete(/** @type {string} */ (this.early.keys().next().value));
    }
  }

  flush() {
    this.timer = null;
    const ended = [...this.ended];
    this.ended.clear();
    /** @type {Set<string>} */
    const touched = new Set();
    const singles = [];
    for (const [id, state] of ended) {
      const t = this.jobs.get(id);
      if (!t) continue;
      const b = t.batch ? this.batches.get(t.batch) : null;
      if (b) {
        b.ended.set(id, state);
        touched.add(/** @type {string} */ (t.batch));
        if (state === "failed" && !b.failureShown) {
          b.failureShown = true;
          this.failureToast(id, `A job of batch ${b.name} failed`, "the batch goes on");
        }
        if (b.announced && state !== "cancelled") b.announced = false; // retried and finished again
      } else {
        singles.push([id, state, t.name]);
        this.jobs.delete(id);
      }
    }
    for (const batch of touched) this.maybeAnnounce(batch);
    const ok = singles.filter((s) => s[1] === "succeeded");
    for (const [id, state, name] of singles) {
      if (state === "failed") this.failureToast(id, `Failed: ${name}`, "");
    }
    if (this.finishToasts() && ok.length) {
      if (ok.length === 1) this.finishedToast(ok[0][0], ok[0][2]);
      else this.show({severity: "success", summary: `${plural(ok.length, "job")} finished`, life: 4000});
    }
  }

  /** @param {string} batchId */
  maybeAnnounce(batchId) {
    const b = this.batches.get(batchId);
    if (!b || b.announced || b.ended.size < b.total) return;
    b.announced = true;
    /** @type {Record<string, number>} */
    const n = {succeeded: 0, failed: 0, cancelled: 0};
    for (const s of b.ended.values()) n[s] = (n[s] || 0) + 1;
    if (n.cancelled === b.total) return; // the user cancelled it: no news
    if (!n.failed && !this.finishToasts()) return;
    const parts = [`${n.succeeded} succeeded`];
    if (n.failed) parts.push(`${n.failed} failed`);
    if (n.cancelled) parts.push(`${n.cancelled} cancelled`);
    this.show({severity: n.failed ? "warn" : "success",
      summary: `Batch finished: ${b.name} (${plural(b.total, "job")})`, detail: parts.join(", "), life: 8000});
    for (const id of b.ids) this.jobs.delete(id);
  }

  /** @param {string} id @param {string} summary @param {string} suffix */
  async failureToast(id, summary, suffix) {
    let detail = "";
    try {
      const job = await this.client.getJob(id);
      const e = job.error || {};
      detail = [nodeName(job, e.node_id), e.message || e.type || "failed"].filter(Boolean).join(": ");
    } catch {
      detail = "open the ComfyMQ panel for the error";
    }
    if (detail.length > 300) detail = detail.slice(0, 299) + "…";
    this.show({severity: "error", summary, detail: suffix ? `${detail} — ${suffix}` : detail, life: 10000});
  }

  /** @param {string} id @param {string} name */
  async finishedToast(id, name) {
    let detail = "";
    try {
      const job = await this.client.getJob(id);
      if (job.started_at && job.finished_at) detail = `ran ${formatDuration(job.finished_at - job.started_at)}`;
      const n = (job.artifacts || []).length;
      if (n) detail += `${detail ? ", " : ""}${plural(n, "file")}`;
    } catch {
      // the toast is still worth showing
    }
    this.show({severity: "success", summary: `Finished: ${name}`, detail, life: 4000});
  }

  /** After a resync or a reconnect: the ends we missed, from the batches' counts. */
  async recount() {
    for (const [id, b] of this.batches) {
      if (b.announced) continue;
      try {
        const info = await this.client.batch(id);
        const finished = info.counts.succeeded + info.counts.failed + info.counts.cancelled;
        if (finished >= info.total) {
          b.ended = new Map();
          let k = 0;
          for (const s of ["succeeded", "failed", "cancelled"]) {
            for (let i = 0; i < (info.counts[s] || 0); i++) b.ended.set(`#${k++}`, s);
          }
          b.total = info.total;
          this.maybeAnnounce(id);
        }
      } catch {
        this.batches.delete(id);
      }
    }
    for (const [id, t] of [...this.jobs]) {
      if (t.batch) continue;
      const asked = t.state;
      try {
        const job = await this.client.getJob(id);
        // an event that came while the answer was on its way stands (the answer may predate it: applying it
        // would take back an end already noted, and no event would bring it again)
        if (this.jobs.get(id) !== t || t.state !== asked) continue;
        if (job.state !== t.state) this.onJob({jobs: [{job_id: id, state: job.state}]});
      } catch {
        this.jobs.delete(id);
      }
    }
  }
}
