// The job and worker records as the /comfymq API shows them, and pure helpers over them.
// No side effects: ComfyUI loads every .js under js/ as a module.

import {STATES} from "./states.js";

export {STATES};

/** @typedef {import("./states.js").JobState} JobState */

/**
 * Progress of a running job, as the worker bridge reports it.
 * @typedef {{node?: string | null, class_type?: string | null, title?: string | null, value?: number, max?: number,
 *            nodes_done?: number, nodes_total?: number}} Progress
 */

/** @typedef {{path: string, size?: number, sha256?: string, mime?: string | null, url: string}} Artifact */

/**
 * ComfyUI's own validation errors (HTTP 400 from /prompt), per node.
 * @typedef {{errors?: {type?: string, message?: string, details?: string, extra_info?: any}[], class_type?: string,
 *            dependent_outputs?: string[]}} NodeError
 */

/**
 * @typedef {{type?: string | null, message?: string | null, node_id?: string | null, traceback?: string,
 *            details?: {node_type?: string, error?: any, node_errors?: Record<string, NodeError>} | null}} JobError
 */

/**
 * A webhook delivery of a job's ending (GET /comfymq/jobs/{id} `webhooks`; GET /comfymq/webhooks/deliveries).
 * @typedef {{id: string, job: string, event: string, url: string, state: "pending" | "retrying" | "delivered" | "failed",
 *            attempts: number, last_status: number | null, last_error: string | null, last_at: number | null,
 *            next_at: number | null}} Delivery
 */

/**
 * GET /comfymq/jobs entries (summary view); the full view (GET /comfymq/jobs/{id}) adds prompt, workflow,
 * history, lease_expires_at, inputs (the files it reads, kept by the host) and, for pending jobs, waiting and
 * estimate (when it is expected to start and end, from measured run times; null before any).
 * @typedef {{
 *   id: string, state: JobState, priority: number, batch_id: string | null, prompt_id: string | null,
 *   owner?: string | null, create_time?: number | null, enqueued_at: number, updated_at?: number | null,
 *   started_at: number | null, finished_at: number | null, attempts?: number, max_attempts?: number,
 *   timeout?: number | null, worker: string | null, progress: Progress | null, error: JobError | null,
 *   outputs?: Record<string, any> | null, artifacts: Artifact[],
 *   prompt?: Record<string, {class_type: string, inputs: Record<string, any>, _meta?: {title?: string}}>,
 *   workflow?: any, history?: {attempt?: number, worker?: string, outcome?: string, started_ms?: number,
 *   ended_ms?: number, reason?: string}[], waiting?: string[], after?: string[],
 *   estimate?: {start: number, end: number, ahead: number, run_seconds: number} | null,
 *   inputs?: ({node: string, input: string, sha256: string, size: number, name: string, output_of?: undefined} |
 *             {node: string, input: string, output_of: {job: string, index?: number, filename?: string,
 *                                                       node?: string}})[],
 *   webhooks?: Delivery[], template?: {name: string, version: number, params?: Record<string, any>} | null
 * }} Job
 */

/**
 * Whether a waiting reason is a job this one waits for ("waits for job 01a2... (running) to succeed"), not a
 * reason about workers.
 * @param {string} reason
 */
export function isDependencyReason(reason) {
  return /^waits for job [0-9a-f]{16} /.test(String(reason));
}

/**
 * Whether a waiting reason is its owner's running limit ("owner 'ana' has 2 jobs running, its limit ..."): the job
 * waits its turn, no worker is missing.
 * @param {string} reason
 */
export function isOwnerLimitReason(reason) {
  return /^owner '.*' has \d+ jobs? running, its limit/.test(String(reason));
}

/**
 * One entry of a comfymq.job websocket event: what changed about one job since the last event.
 * @typedef {{job_id: string, state?: JobState, from?: string, worker?: string, reason?: string,
 *            progress?: Progress | null, removed?: boolean}} JobDelta
 */

/**
 * A worker as GET /comfymq/workers lists it. `models`: how many model files (checkpoints, LoRAs, VAEs, ...) its
 * ComfyUI has.
 * @typedef {{id: string, name?: string, online: boolean, draining?: boolean, capacity?: number, credit?: number,
 *            running?: string[], last_seen?: number, connected_at?: number, models?: number, node_classes?: number,
 *            combo_inputs?: number, comfyui_version?: string, plugin_version?: string, key?: string | null,
 *            info?: {hostname?: string, os?: string, python?: string, pytorch?: string, ram_total?: number,
 *                    comfy_url?: string, devices?: {name?: string, type?: string, vram_total?: number,
 *                    vram_free?: number}[]}}} Worker
 */

/** @type {ReadonlySet<string>} */
export const FINISHED = new Set(["succeeded", "failed", "cancelled"]);

/** @param {string} state */
export function isFinished(state) {
  return FINISHED.has(state);
}

/**
 * Whether a job belongs in a list filtered by states (empty = all), a batch and an owner (null = any).
 * @param {{state: string, batch_id?: string | null, owner?: string | null}} job
 * @param {{states: string[], batch: string | null, owner?: string | null}} filter
 */
export function matchesFilter(job, filter) {
  if (filter.states.length && !filter.states.includes(job.state)) return false;
  if (filter.batch && job.batch_id !== filter.batch) return false;
  if (filter.owner && job.owner !== filter.owner) return false;
  return true;
}

// Jobs this panel queues carry a readable prompt_id: "<workflow name>@<tag>" for one job, and the host makes
// "<workflow name>@<tag>-0001" ... for the jobs of a count/sweep request.
const PANEL_PROMPT_ID = /^(.*)@[a-z0-9]{6,}(?:\.(\d+))?(?:-(\d{4,}))?$/;

/**
 * What to call a job: the workflow name and its index in the batch when the panel queued it, else its prompt_id
 * when that reads as a name, else the title (or class) of its output node when the record carries the prompt
 * (the full view), else "job". Names repeat (a workflow queued twice): lists show a short id beside them
 * (shortIds), which tells jobs apart.
 * @param {{id: string, prompt_id?: string | null, prompt?: Job["prompt"]}} job
 * @returns {{name: string, index: number | null}}
 */
export function jobLabel(job) {
  const pid = job.prompt_id || "";
  const m = PANEL_PROMPT_ID.exec(pid);
  if (m) {
    const copy = m[2] ? Number(m[2]) : null;
    const sub = m[3] ? Number(m[3]) : null;
    let index = sub ?? copy;
    if (copy != null && sub != null) index = copy; // several requests, one per copy, each with a sweep
    return {name: m[1] || "workflow", index};
  }
  if (pid && pid.length <= 48 && !/^[0-9a-f]{8}-[0-9a-f]{4}-/i.test(pid)) return {name: pid, index: null};
  return {name: outputTitle(job.prompt) || "job", index: null};
}

/**
 * The title (else class) of a prompt's output node: a node no other node takes an input from (the first, by node
 * id, when there are several; "+N" counts the others).
 * @param {Job["prompt"] | null | undefined} prompt
 */
export function outputTitle(prompt) {
  if (!prompt || typeof prompt !== "object") return "";
  /** @type {Set<string>} */
  const used = new Set();
  for (const node of Object.values(prompt)) {
    for (const v of Object.values((node && node.inputs) || {})) {
      if (Array.isArray(v) && v.length === 2 && (typeof v[0] === "string" || typeof v[0] === "number")) used.add(String(v[0]));
    }
  }
  const sinks = Object.keys(prompt).filter((id) => !used.has(id) && prompt[id] && prompt[id].class_type)
    .sort((a, b) => Number(a) - Number(b) || (a < b ? -1 : a > b ? 1 : 0));
  if (!sinks.length) return "";
  const node = prompt[sinks[0]];
  const title = String(node._meta?.title || node.class_type).slice(0, 60);
  return sinks.length > 1 ? `${title} +${sinks.length - 1}` : title;
}

/**
 * A short id per job that tells it apart from the others given: the shortest tail of its id (at least `min`
 * characters) that no other id ends with. Ids are the enqueue time in ms and a counter, in hex: the tails of jobs
 * queued close together differ early, those of jobs queued apart may need a character or two more.
 * @param {Iterable<string>} ids
 * @param {number} [min]
 * @returns {Map<string, string>}
 */
export function shortIds(ids, min = 6) {
  const rev = [...new Set(ids)].map((id) => ({id, r: [...id].reverse().join("")}))
    .sort((a, b) => (a.r < b.r ? -1 : a.r > b.r ? 1 : 0));
  /** @param {string} a @param {string} b */
  const common = (a, b) => {
    let i = 0;
    while (i < a.length && i < b.length && a[i] === b[i]) i++;
    return i;
  };
  /** @type {Map<string, string>} */
  const out = new Map();
  for (let i = 0; i < rev.length; i++) {
    const {id, r} = rev[i];
    const need = Math.max(min, i > 0 ? common(r, rev[i - 1].r) + 1 : 0, i + 1 < rev.length ? common(r, rev[i + 1].r) + 1 : 0);
    out.set(id, id.slice(-Math.min(need, id.length)));
  }
  return out;
}

/**
 * A waiting reason without the worker's id: "worker gpu-1 (gpu-1-3f2a9c1e): missing checkpoint x" ->
 * "worker gpu-1: missing checkpoint x" (for toasts; the panel shows the reason whole).
 * @param {string} reason
 */
export function compactReason(reason) {
  const m = /^worker (.+?) \([^()]*\): (.*)$/s.exec(String(reason));
  return m ? `worker ${m[1]}: ${m[2]}` : String(reason);
}

/**
 * A batch id the panel made ("<slug>.<tag>") shown as its slug; others shortened.
 * @param {string} batchId
 */
export function batchLabel(batchId) {
  const m = /^(.+)\.[a-z0-9]{6}$/.exec(batchId);
  if (m) return m[1];
  return batchId.length > 14 ? batchId.slice(0, 8) + "…" : batchId;
}

/**
 * The overall fraction done of a running job (0..1): finished nodes plus the current node's steps.
 * @param {Progress | null | undefined} p
 */
export function progressFraction(p) {
  if (!p) return 0;
  const step = p.max && p.max > 0 ? Math.min(1, Math.max(0, (p.value || 0) / p.max)) : 0;
  if (p.nodes_total && p.nodes_total > 0) {
    return Math.min(1, Math.max(0, ((p.nodes_done || 0) + step) / p.nodes_total));
  }
  return step;
}

/**
 * Milliseconds the job waited (enqueue -> start, or until now / its end if it never started) and ran
 * (start -> end, or until now).
 * @param {Job} job
 * @param {number} now
 * @returns {{waited: number | null, ran: number | null}}
 */
export function durations(job, now) {
  const enq = job.enqueued_at;
  const start = job.started_at;
  const end = job.finished_at;
  let waited = null;
  let ran = null;
  if (enq != null) {
    if (start) waited = Math.max(0, start - enq);
    else waited = Math.max(0, (end || now) - enq);
  }
  if (start) ran = Math.max(0, (end || (job.state === "running" ? now : start)) - start);
  return {waited, ran};
}

/**
 * The node a job failed on, as "Title (#id)", from its prompt when known.
 * @param {Job} job
 * @param {string | null | undefined} nodeId
 */
export function nodeName(job, nodeId) {
  if (!nodeId) return "";
  const node = job.prompt && job.prompt[nodeId];
  const title = node && (node._meta?.title || node.class_type);
  return title ? `${title} (#${nodeId})` : `node #${nodeId}`;
}

/**
 * Image artifacts of a job, first the ones a SaveImage-like node wrote.
 * @param {Job} job
 * @returns {Artifact[]}
 */
export function imageArtifacts(job) {
  return (job.artifacts || []).filter((a) => (a.mime || "").startsWith("image/") ||
    /\.(png|jpe?g|webp|gif|avif|bmp)$/i.test(a.path || ""));
}

/**
 * Counts per state with every state present.
 * @param {Record<string, number> | null | undefined} counts
 * @returns {Record<JobState, number>}
 */
export function fullCounts(counts) {
  /** @type {Record<string, number>} */
  const out = {};
  for (const s of STATES) out[s] = Number(counts?.[s] || 0);
  return /** @type {Record<JobState, number>} */ (out);
}
