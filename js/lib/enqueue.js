// Queueing the canvas's workflow: graph -> API prompt (app.graphToPrompt), seeds per copy (seeds.js), sweep
// axes, then POST /comfymq/jobs; afterwards the seed widgets move on as they do after ComfyUI's own Queue.

import {findControlled, planCopies} from "./seeds.js";
import {jobTotal} from "./sweep.js";

/** @typedef {import("./client.js").MQClient} MQClient */
/** @typedef {import("./client.js").EnqueueAnswer} EnqueueAnswer */
/** @typedef {import("./seeds.js").NodeLike} NodeLike */
/** @typedef {{nodeId: string, input: string, values: any[]}} SweepAxis */
/** @typedef {{priority: number, count: number, sweep?: SweepAxis[]}} EnqueueOptions */
/**
 * What the panel needs of ComfyUI's app (a structural subset, so this module imports nothing of ComfyUI's).
 * @typedef {{graphToPrompt(): Promise<{workflow: any, output: any}>, rootGraph?: any, graph?: any,
 *            extensionManager?: any}} AppLike
 */
/**
 * What a queueing made. `waiting`: why no online worker can run the jobs yet, from the host's answers (each reason
 * once; empty when some worker can run them), or null when the host does not say (older hosts). `remote`: the
 * host's address when this ComfyUI is a worker that forwarded the jobs there (set by the caller).
 * @typedef {{jobs: {id: string, state: string, prompt_id?: string, batch_id?: string | null, existed?: boolean}[],
 *            batchId: string | null, name: string, total: number, how: string, waiting: string[] | null,
 *            remote?: string | null}} Enqueued
 */

const TAG_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789";

/** @param {number} n */
export function randomTag(n = 6) {
  const bytes = new Uint8Array(n);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => TAG_CHARS[b % TAG_CHARS.length]).join("");
}

/**
 * A batch id from a workflow name: [A-Za-z0-9][A-Za-z0-9._:-]{0,127} as the API wants.
 * @param {string} name
 * @param {string} tag
 */
export function batchIdFor(name, tag) {
  const slug = name.replace(/\.json$/i, "").replace(/[^A-Za-z0-9._-]+/g, "_").replace(/^[^A-Za-z0-9]+/, "")
    .replace(/[._-]+$/, "").slice(0, 60);
  return `${slug || "workflow"}.${tag}`;
}

/** @param {AppLike} app */
export function graphOf(app) {
  return app.rootGraph ?? app.graph;
}

/** @param {AppLike} app @returns {NodeLike[]} */
export function graphNodes(app) {
  const g = graphOf(app);
  return (g && (g.nodes ?? g._nodes)) || [];
}

/** The open workflow's name ("Unsaved Workflow" when it has none). @param {AppLike} app */
export function workflowName(app) {
  try {
    const wf = app.extensionManager?.workflow?.activeWorkflow;
    const name = wf?.filename ?? wf?.path?.split("/").pop();
    if (typeof name === "string" && name.trim()) return name.replace(/\.json$/i, "").trim().slice(0, 80);
  } catch {
    // the workflow store is a convenience: its absence must not stop queueing
  }
  return "workflow";
}

/** @param {AppLike} app */
function controlRunsBefore(app) {
  try {
    return app.extensionManager?.setting?.get("Comfy.WidgetControlMode") === "before";
  } catch {
    return false;
  }
}

/**
 * Queues the canvas's workflow. Throws an Error whose message is fit for a toast: the client's ApiError itself
 * (its type and `waiting` kept) when nothing was queued, one that says how many were when some were.
 * @param {AppLike} app
 * @param {MQClient} client
 * @param {EnqueueOptions} opts
 * @returns {Promise<Enqueued>}
 */
export async function enqueueWorkflow(app, client, opts) {
  const count = Math.max(1, Math.floor(Number(opts.count) || 1));
  const priority = Math.floor(Number(opts.priority) || 0);
  const {output, workflow} = await app.graphToPrompt();
  if (!output || !Object.keys(output).length) {
    throw new Error("The workflow has no nodes to run (is there an output node, such as Save Image?)");
  }
  /** @type {Record<string, any[]>} */
  const sweep = {};
  for (const axis of opts.sweep || []) {
    const node = output[axis.nodeId];
    if (!node) throw new Error(`Sweep: node #${axis.nodeId} is not part of the prompt (bypassed, muted or deleted?)`);
    if (!(axis.input in (node.inputs || {}))) {
      throw new Error(`Sweep: node #${axis.nodeId} (${node.class_type}) has no input '${axis.input}' in the prompt`);
    }
    if (Array.isArray(node.inputs[axis.input])) {
      throw new Error(`Sweep: '${axis.input}' of node #${axis.nodeId} is connected to a link; sweep a widget value`);
    }
    sweep[`${axis.nodeId}.${axis.input}`] = axis.values;
  }
  const total = jobTotal(count, Object.values(sweep));
  if (total > 10000) throw new Error(`That is ${total} jobs; one request may make at most 10,000`);

  const plan = planCopies({prompt: output, controlled: findControlled(graphNodes(app)), count, sweep,
    before: controlRunsBefore(app)});
  const name = workflowName(app);
  const tag = randomTag();
  const batchId = total > 1 ? batchIdFor(name, tag) : null;
  /** @type {Enqueued["jobs"]} */
  const jobs = [];
  /** @type {Set<string> | null} */
  let waiting = null;
  for (let i = 0; i < plan.requests.length; i++) {
    const r = plan.requests[i];
    const promptId = plan.requests.length > 1 ? `${name}@${tag}.${i + 1}` : `${name}@${tag}`;
    /** @type {import("./client.js").JobRequest} */
    const body = {prompt: r.prompt, workflow, priority, metadata: {prompt_id: promptId}};
    if (r.count > 1) body.count = r.count;
    if (r.keep_seeds !== undefined && r.count > 1) body.keep_seeds = r.keep_seeds;
    if (Object.keys(r.sweep).length) body.sweep = r.sweep;
    if (batchId) body.batch_id = batchId;
    let answer;
    try {
      answer = await client.enqueue(body);
    } catch (e) {
      if (!jobs.length) throw e;
      const msg = e instanceof Error ? e.message : String(e);
      throw Object.assign(new Error(`${msg} (after ${jobs.length} of ${total} jobs were queued)`),
        {type: /** @type {any} */ (e).type, waiting: /** @type {any} */ (e).waiting ?? null});
    }
    jobs.push(...answer.jobs);
    if (Array.isArray(answer.waiting)) {
      waiting = waiting || new Set();
      for (const r of answer.waiting) waiting.add(String(r));
    }
  }
  // as after ComfyUI's own Queue: controlled widgets show the next value
  for (const a of plan.advance) {
    if (a.target.value !== a.value) {
      a.target.value = a.value;
      a.target.callback?.(a.value);
    }
  }
  try {
    graphOf(app)?.setDirtyCanvas?.(true, true);
  } catch {
    // redrawing is cosmetic
  }
  return {jobs, batchId, name, total: jobs.length, how: plan.how, waiting: waiting && [...waiting]};
}

/**
 * Puts a job's input values (seeds, swept values) onto the widgets of a graph just loaded from its workflow,
 * so "open" shows exactly what the job ran.
 * @param {NodeLike[]} nodes
 * @param {Record<string, {inputs?: Record<string, any>}> | null | undefined} prompt
 * @returns {number} widgets changed
 */
export function applyPromptValues(nodes, prompt) {
  if (!prompt) return 0;
  let changed = 0;
  for (const node of nodes) {
    const p = prompt[String(node.id)];
    if (!p || !p.inputs) continue;
    for (const w of node.widgets || []) {
      if (!(w.name in p.inputs)) continue;
      const v = p.inputs[w.name];
      if (Array.isArray(v) || (v !== null && typeof v === "object")) continue;
      if (w.value !== v) {
        w.value = v;
        changed++;
      }
    }
  }
  return changed;
}
