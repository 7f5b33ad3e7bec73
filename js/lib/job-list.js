// The queue view's data: a paged, filtered list of job summaries kept current by websocket deltas.
//
// Pages of `pageSize` come from GET /comfymq/jobs with the cursor; a delta changes a loaded job in place (new
// object, so views can compare by identity; a record fetched again unchanged keeps its object) and marks it stale;
// stale and newly seen jobs are fetched once per flush (the window of the list they fall in), so a burst of events
// costs one fetch, never a refetch per event. The whole list is fetched again only on resync/reconnect (reload keeps
// as many jobs as were loaded, up to 1,000). A window or a reload of more than 200 jobs is asked for in pages of 200,
// one after the other (fetchRange): each answers within the host's page budget.

import {matchesFilter, FINISHED} from "./model.js";

/** @typedef {import("./model.js").Job} Job */
/** @typedef {import("./model.js").JobDelta} JobDelta */
/** @typedef {import("./client.js").MQClient} MQClient */
/** @typedef {{states: string[], batch: string | null, owner?: string | null}} Filter */

const MAX_WINDOW = 1000;     // the most jobs a reload or a window fetch brings
const FETCH_PAGE = 200;      // ... in requests of at most this many (each answers fast; the host is not held long)
const FEW = 6;               // up to this many changed jobs are fetched one by one (light requests)
const FLUSH_MS = 200;

export class JobList {
  /**
   * @param {MQClient} client
   * @param {{pageSize?: number, onChange?: () => void, onError?: (e: unknown) => void}} [opts]
   */
  constructor(client, opts = {}) {
    this.client = client;
    this.pageSize = opts.pageSize || 100;
    this.onChange = opts.onChange || (() => {});
    this.onError = opts.onError || ((e) => console.warn("[ComfyMQ]", e));
    /** @type {Filter} */
    this.filter = {states: [], batch: null, owner: null};
    /** @type {"newest" | "oldest"} */
    this.order = "newest";
    /** @type {Map<string, Job>} */
    this.byId = new Map();
    /** @type {string[]} ids in list order */
    this.ids = [];
    /** @type {string | null} */
    this.nextCursor = null;
    this.loaded = false;
    this.loading = false;
    /** @type {Error | null} */
    this.error = null;
    this.generation = 0;
    /** @type {Set<string>} loaded jobs whose record changed (finished_at, error, artifacts ...) */
    this.stale = new Set();
    /** @type {Set<string>} jobs not loaded that may belong in the list */
    this.unseen = new Set();
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.flushTimer = null;
    this.flushing = false;
    this.closed = false;
    /** @type {Set<string> | null} jobs changed while a reload or a page was on its way (its answer may predate them) */
    this.crossed = null;
  }

  close() {
    this.closed = true;
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = null;
  }

  get size() {
    return this.ids.length;
  }

  get hasMore() {
    return this.nextCursor != null;
  }

  /** @param {number} i */
  at(i) {
    return this.byId.get(this.ids[i]);
  }

  /** @param {Partial<Filter>} f */
  setFilter(f) {
    this.filter = {states: f.states ?? this.filter.states, batch: f.batch !== undefined ? f.batch : this.filter.batch,
      owner: f.owner !== undefined ? f.owner : this.filter.owner};
    return this.reset();
  }

  /** @param {"newest" | "oldest"} order */
  setOrder(order) {
    this.order = order;
    return this.reset();
  }

  reset() {
    this.ids = [];
    this.byId.clear();
    this.nextCursor = null;
    this.loaded = false;
    this.stale.clear();
    this.unseen.clear();
    return this.reload();
  }

  /** Fetches the list again from its start, as many jobs as were loaded (at least a page, at most 1,000). */
  async reload() {
    const gen = ++this.generation;
    const limit = Math.min(MAX_WINDOW, Math.max(this.pageSize, this.ids.length));
    this.loading = true;
    this.crossed = new Set();
    this.onChange();
    try {
      const page = await this.fetchRange(null, limit, gen);
      if (page === null) return;
      const had = this.byId;
      this.byId = new Map(page.jobs.map((j) => [j.id, kept(had.get(j.id), j)]));
      this.ids = page.jobs.map((j) => j.id);
      this.nextCursor = page.next_cursor;
      this.loaded = true;
      this.error = null;
      this.stale.clear();
      this.unseen.clear();
      for (const id of this.crossed) (this.byId.has(id) ? this.stale : this.unseen).add(id);
      this.crossed = null;
      if (this.stale.size || this.unseen.size) this.scheduleFlush();
    } catch (e) {
      if (gen !== this.generation) return;
      this.error = e instanceof Error ? e : new Error(String(e));
      this.onError(e);
    } finally {
      if (gen === this.generation) {
        this.loading = false;
        this.crossed = null;
      }
      this.onChange();
    }
  }

  /**
   * Fetches the next page (no-op while loading or at the end). A change that comes while the page is on its way
   * finds the page's jobs neither loaded nor in range, and the page may predate it: those jobs are fetched again
   * once it lands (a job the page brought is stale, one it lacks may belong in it).
   */
  async loadMore() {
    if (this.loading || !this.nextCursor || this.closed) return;
    const gen = this.generation;
    this.loading = true;
    this.crossed = new Set();
    this.onChange();
    try {
      const page = await this.client.listJobs({...this.query(), cursor: this.nextCursor, limit: this.pageSize});
      if (gen !== this.generation || this.closed) return;
      for (const j of page.jobs) {
        if (!this.byId.has(j.id)) this.ids.push(j.id);
        this.byId.set(j.id, kept(this.byId.get(j.id), j));
      }
      this.nextCursor = page.next_cursor;
      const brought = new Set(page.jobs.map((j) => j.id));
      for (const id of this.crossed) {
        if (brought.has(id)) this.stale.add(id);
        else if (!this.byId.has(id)) this.unseen.add(id);
      }
      if (this.stale.size || this.unseen.size) this.scheduleFlush();
    } catch (e) {
      if (gen === this.generation) this.onError(e);
    } finally {
      if (gen === this.generation) {
        this.loading = false;
        this.crossed = null;
      }
      this.onChange();
    }
  }

  query() {
    return {states: this.filter.states, batch: this.filter.batch, owner: this.filter.owner, order: this.order};
  }

  /** a before b in list order @param {string} a @param {string} b */
  before(a, b) {
    return this.order === "newest" ? a > b : a < b;
  }

  /** Where id goes in the list (binary search; ids are fixed-width hex that sort by enqueue order). @param {string} id */
  position(id) {
    let lo = 0;
    let hi = this.ids.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.before(this.ids[mid], id)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Whether a job not loaded would fall among the loaded ones (else a later page brings it). @param {string} id */
  inRange(id) {
    if (!this.nextCursor) return true;
    const last = this.ids[this.ids.length - 1];
    return last === undefined || this.before(id, last);
  }

  /**
   * Puts a job's newer record in the list (or takes it out when it no longer matches the filter).
   * @param {Job} job
   */
  upsert(job) {
    if (!matchesFilter(job, this.filter)) {
      this.removeId(job.id);
      return;
    }
    if (this.byId.has(job.id)) {
      this.byId.set(job.id, kept(this.byId.get(job.id), job));
      return;
    }
    if (!this.inRange(job.id)) return;
    this.ids.splice(this.position(job.id), 0, job.id);
    this.byId.set(job.id, job);
  }

  /** @param {string} id */
  removeId(id) {
    if (!this.byId.delete(id)) return false;
    const i = this.ids.indexOf(id);
    if (i >= 0) this.ids.splice(i, 1);
    this.stale.delete(id);
    return true;
  }

  /**
   * Applies one comfymq.job event's entries.
   * @param {JobDelta[]} deltas
   */
  apply(deltas) {
    if (this.crossed) for (const d of deltas) this.crossed.add(d.job_id);
    if (!this.loaded) return;
    let changed = false;
    const now = Date.now();
    for (const d of deltas) {
      const id = d.job_id;
      if (d.removed) {
        changed = this.removeId(id) || changed;
        this.unseen.delete(id);
        continue;
      }
      const old = this.byId.get(id);
      if (!old) {
        // progress of a job we do not show needs nothing; a state change may bring it into the list
        if (d.state && (!this.filter.states.length || this.filter.states.includes(d.state)) && this.inRange(id)) {
          this.unseen.add(id);
        }
        continue;
      }
      /** @type {Job} */
      const job = {...old};
      if (d.state && d.state !== old.state) {
        job.state = d.state;
        if (d.state === "running") {
          job.started_at = now;
          job.finished_at = null;
          job.error = null;
        } else {
          job.progress = null;
          if (d.state === "pending") {
            job.started_at = null;
            job.finished_at = null;
            job.worker = null;
          } else if (FINISHED.has(d.state)) {
            job.finished_at = now;
          }
        }
        this.stale.add(id);
      }
      if (d.worker && (d.state === "running" || job.state === "running")) job.worker = d.worker;
      if (d.progress !== undefined && job.state === "running") job.progress = d.progress;
      if (!matchesFilter(job, this.filter)) {
        this.removeId(id);
      } else {
        this.byId.set(id, job);
      }
      changed = true;
    }
    if (changed) this.onChange();
    if (this.stale.size || this.unseen.size) this.scheduleFlush();
  }

  scheduleFlush() {
    if (this.flushTimer || this.closed) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      this.flush().catch((e) => this.onError(e));
    }, FLUSH_MS);
  }

  /** Fetches the records of changed and newly seen jobs: one by one when few, else the list window they span. */
  async flush() {
    if (this.flushing) {
      this.scheduleFlush();
      return;
    }
    // A job seen unloaded may have been loaded since (by a fetch that was in flight when its change came):
    // what was fetched may predate that change, so it is fetched again like any stale job.
    const stale = [...new Set([...this.stale, ...this.unseen])].filter((id) => this.byId.has(id));
    const unseen = [...this.unseen].filter((id) => !this.byId.has(id) && this.inRange(id));
    this.stale.clear();
    this.unseen.clear();
    if (!stale.length && !unseen.length) return;
    const gen = this.generation;
    this.flushing = true;
    try {
      /** @type {Job[]} */
      let fresh = [];
      if (stale.length + unseen.length <= FEW) {
        fresh = (await Promise.all([
          ...stale.map((id) => this.fetchLight(id)),
          ...unseen.map((id) => this.client.getJob(id).then(lighten, () => null)),
        ])).filter((j) => j != null);
        // a job asked for but gone was deleted meanwhile
        for (const id of stale) if (!fresh.some((j) => j.id === id) && gen === this.generation) this.removeId(id);
      } else {
        const positions = [...stale.map((id) => this.ids.indexOf(id)), ...unseen.map((id) => this.position(id))];
        const first = Math.max(0, Math.min(...positions));
        const last = Math.max(...positions);
        const limit = last - first + unseen.length + 10;
        if (limit > MAX_WINDOW) {
          if (gen === this.generation) await this.reload();
          return;
        }
        const cursor = first > 0 ? this.ids[first - 1] : null;
        const page = await this.fetchRange(cursor, limit, gen);
        if (page === null) return;
        fresh = page.jobs;
      }
      if (gen !== this.generation || this.closed) return;
      for (const j of fresh) this.upsert(j);
      this.onChange();
    } finally {
      this.flushing = false;
    }
  }

  /**
   * Up to `limit` jobs of the list after `cursor` (null: from its start), asked for in pages of FETCH_PAGE one after
   * the other (a page of 1,000 holds the host for tens of milliseconds; five of 200 each answer in a few); null when
   * the list was reset or closed meanwhile (generation `gen` is over).
   * @param {string | null} cursor @param {number} limit @param {number} gen
   * @returns {Promise<{jobs: Job[], next_cursor: string | null} | null>}
   */
  async fetchRange(cursor, limit, gen) {
    /** @type {Job[]} */
    const jobs = [];
    let next = cursor;
    do {
      const page = await this.client.listJobs({...this.query(), cursor: next, limit: Math.min(FETCH_PAGE, limit - jobs.length)});
      if (gen !== this.generation || this.closed) return null;
      jobs.push(...page.jobs);
      next = page.next_cursor;
    } while (next && jobs.length < limit);
    return {jobs, next_cursor: next};
  }

  /** @param {string} id @returns {Promise<Job | null>} */
  async fetchLight(id) {
    const known = this.byId.get(id);
    try {
      if (known && known.prompt_id) {
        const j = await this.client.findByPromptId(known.prompt_id);
        if (j && j.id === id) return j;
      }
      return lighten(await this.client.getJob(id));
    } catch (e) {
      if (/** @type {any} */ (e).status === 404) return null;
      throw e;
    }
  }

  /**
   * A job's record from elsewhere (an action's answer, the details pane). It may be older than deltas already
   * applied (the job moved on while the answer was on its way), so the job is fetched again once more: the
   * list ends on the server's latest record, never on an answer that crossed a later event.
   * @param {Job} job
   */
  put(job) {
    if (!this.loaded) return;
    this.upsert(lighten(job));
    if (this.byId.has(job.id)) {
      this.stale.add(job.id);
      this.scheduleFlush();
    }
    this.onChange();
  }

  /** Batches among the loaded jobs, newest first. @returns {string[]} */
  batches() {
    /** @type {Map<string, string>} batch -> newest job id */
    const seen = new Map();
    for (const id of this.ids) {
      const b = this.byId.get(id)?.batch_id;
      if (b && (!seen.has(b) || /** @type {string} */ (seen.get(b)) < id)) seen.set(b, id);
    }
    return [...seen.entries()].sort((a, b) => (a[1] < b[1] ? 1 : -1)).map((e) => e[0]);
  }
}

/**
 * The record to keep for a job: the one held when the new one says the same (a reload, a page or a window fetched
 * after a burst of changes brings every job in it again, most of them unchanged: their rows are not rebuilt),
 * else the new one.
 * @param {Job | undefined} held
 * @param {Job} fresh
 * @returns {Job}
 */
function kept(held, fresh) {
  return held && held !== fresh && JSON.stringify(held) === JSON.stringify(fresh) ? held : fresh;
}

/**
 * A full job record without what a list never shows (prompt, workflow, history).
 * @param {Job} job
 * @returns {Job}
 */
export function lighten(job) {
  if (!job || (job.prompt === undefined && job.workflow === undefined)) return job;
  const {prompt, workflow, history, waiting, ...rest} = job;
  const error = rest.error ? {type: rest.error.type, message: rest.error.message, node_id: rest.error.node_id} : null;
  return {...rest, error};
}
