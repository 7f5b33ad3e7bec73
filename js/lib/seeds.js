// Seeds for N copies, the way ComfyUI's own Queue button makes them: each widget with a "control after
// generate" mode (seed, noise_seed, or any widget a node gave one) changes between copies by its mode:
// randomize / increment / decrement / fixed. Pure functions over plain objects (testable without a browser).
//
// How N copies go to the host (one request whenever possible, so the batch is committed all-or-nothing):
//   every changing widget is a `seed`/`noise_seed` on randomize, and they are all of the prompt's seeds
//                                        -> count N, keep_seeds false: the host draws distinct seeds
//   no widget changes (all fixed)        -> count N, keep_seeds true: N identical prompts, as ComfyUI would
//   exactly one widget changes           -> its N values as one more sweep axis (count 1 keeps other seeds)
//   several change                       -> N requests of one copy each, sharing one batch id

/** @typedef {{name: string, value: any, type?: string, options?: Record<string, any>, linkedWidgets?: WidgetLike[],
 *             callback?: (value: any) => void}} WidgetLike */
/** @typedef {{id: number | string, widgets?: WidgetLike[]}} NodeLike */
/** @typedef {{nodeId: string, input: string, mode: string, target: WidgetLike}} Controlled */
/** @typedef {Record<string, {class_type: string, inputs: Record<string, any>}>} ApiPrompt */

export const MODES = ["fixed", "increment", "decrement", "randomize", "increment-wrap"];
const HOST_SEEDS = ["seed", "noise_seed"];
const LIMIT = 0x4000000000000; // ComfyUI clamps controlled numbers to +-2**50

/** A link [node_id, slot] rather than a value. @param {any} v */
export function isLink(v) {
  return Array.isArray(v) && v.length === 2 && typeof v[0] === "string" && typeof v[1] === "number";
}

/** @param {WidgetLike | undefined} w */
function isControl(w) {
  return !!w && typeof w.value === "string" && MODES.includes(w.value) &&
    (w.name === "control_after_generate" || w.name === "control_before_generate" || /control/i.test(w.name || ""));
}

/**
 * Every widget of the graph's nodes that has a control mode, with that mode.
 * @param {NodeLike[]} nodes
 * @returns {Controlled[]}
 */
export function findControlled(nodes) {
  /** @type {Controlled[]} */
  const found = [];
  for (const node of nodes || []) {
    const widgets = node.widgets || [];
    widgets.forEach((w, i) => {
      if (isControl(w)) return;
      let control = (w.linkedWidgets || []).find(isControl);
      if (!control && isControl(widgets[i + 1]) && (typeof w.value === "number")) control = widgets[i + 1];
      if (control) found.push({nodeId: String(node.id), input: w.name, mode: control.value, target: w});
    });
  }
  return found;
}

/**
 * The value after one application of a control mode (mirrors ComfyUI's applyWidgetControl).
 * @param {string} mode
 * @param {any} value
 * @param {Record<string, any>} options  the widget's options (min, max, step2; or values for a combo)
 * @param {() => number} rand
 */
export function step(mode, value, options, rand) {
  if (mode === "fixed") return value;
  const choices = options && options.values;
  if (Array.isArray(choices) && typeof value === "string") {
    const n = choices.length;
    if (!n) return value;
    let i = choices.indexOf(value);
    if (mode === "increment") i += 1;
    else if (mode === "increment-wrap") i = i + 1 >= n ? 0 : i + 1;
    else if (mode === "decrement") i -= 1;
    else if (mode === "randomize") i = Math.floor(rand() * n);
    i = Math.min(n - 1, Math.max(0, i));
    return choices[i];
  }
  if (typeof value !== "number") return value;
  const min = Math.max(-LIMIT, options?.min ?? 0);
  const max = Math.min(LIMIT, options?.max ?? 1);
  const inc = options?.step2 || 1;
  let v = value;
  if (mode === "increment" || mode === "increment-wrap") v += inc;
  else if (mode === "decrement") v -= inc;
  else if (mode === "randomize") v = Math.floor(rand() * ((max - min) / inc)) * inc + min;
  return Math.min(max, Math.max(min, v));
}

/**
 * The values of n copies and what the widget shows afterwards. "after" (ComfyUI's default): the first copy
 * uses the current value, and the control applies after each; "before": it applies before each.
 * @param {Controlled} c
 * @param {number} n
 * @param {boolean} before
 * @param {() => number} rand
 * @returns {{values: any[], next: any}}
 */
export function copyValues(c, n, before, rand) {
  const opts = c.target.options || {};
  const values = [];
  let v = c.target.value;
  for (let k = 0; k < n; k++) {
    if (before) v = step(c.mode, v, opts, rand);
    values.push(v);
    if (!before) v = step(c.mode, v, opts, rand);
  }
  return {values, next: before ? values[values.length - 1] : v};
}

/**
 * The integer seed/noise_seed inputs the host re-draws for count > 1 (as comfy_nodes/api/expand.py does).
 * @param {ApiPrompt} prompt
 * @param {Set<string>} swept  "<node_id>.<input>" keys
 */
export function hostSeedKeys(prompt, swept) {
  const keys = [];
  for (const [id, node] of Object.entries(prompt)) {
    for (const name of HOST_SEEDS) {
      const v = node && node.inputs ? node.inputs[name] : undefined;
      if (typeof v === "number" && Number.isInteger(v) && !swept.has(`${id}.${name}`)) keys.push(`${id}.${name}`);
    }
  }
  return keys;
}

/**
 * @typedef {{prompt: ApiPrompt, count: number, keep_seeds?: boolean, sweep: Record<string, any[]>}} PlannedRequest
 * @typedef {{requests: PlannedRequest[], advance: {target: WidgetLike, value: any}[], how: string}} Plan
 */

/**
 * Plans the request(s) for `count` copies of `prompt` (see the module doc).
 * @param {{prompt: ApiPrompt, controlled: Controlled[], count: number, sweep?: Record<string, any[]>,
 *          before?: boolean, rand?: () => number}} a
 * @returns {Plan}
 */
export function planCopies(a) {
  const rand = a.rand || Math.random;
  const sweep = a.sweep || {};
  const swept = new Set(Object.keys(sweep));
  const count = Math.max(1, Math.floor(a.count || 1));
  const relevant = a.controlled.filter((c) => {
    const node = a.prompt[c.nodeId];
    return node && node.inputs && c.input in node.inputs && !isLink(node.inputs[c.input]) &&
      !swept.has(`${c.nodeId}.${c.input}`);
  });
  const active = relevant.filter((c) => c.mode !== "fixed");
  const plans = active.map((c) => ({c, key: `${c.nodeId}.${c.input}`, ...copyValues(c, count, !!a.before, rand)}));
  const advance = plans.map((p) => ({target: p.c.target, value: p.next}));
  /** @param {number} k */
  const promptFor = (k) => withValues(a.prompt, plans.map((p) => [p.c.nodeId, p.c.input, p.values[k]]));

  if (count === 1) {
    return {requests: [{prompt: promptFor(0), count: 1, sweep}], advance, how: "single"};
  }
  if (!active.length) {
    return {requests: [{prompt: a.prompt, count, keep_seeds: true, sweep}], advance, how: "identical"};
  }
  const hostKeys = hostSeedKeys(a.prompt, swept);
  const allRandomSeeds = plans.every((p) => p.c.mode === "randomize" && HOST_SEEDS.includes(p.c.input) &&
    Number.isInteger(p.c.target.value));
  if (allRandomSeeds && sameSet(hostKeys, plans.map((p) => p.key))) {
    return {requests: [{prompt: a.prompt, count, keep_seeds: false, sweep}], advance, how: "host-random"};
  }
  if (plans.length === 1) {
    const p = plans[0];
    return {requests: [{prompt: a.prompt, count: 1, sweep: {...sweep, [p.key]: p.values}}], advance, how: "sweep"};
  }
  const requests = [];
  for (let k = 0; k < count; k++) requests.push({prompt: promptFor(k), count: 1, sweep});
  return {requests, advance, how: "split"};
}

/**
 * A copy of prompt with some literal inputs replaced (untouched nodes shared).
 * @param {ApiPrompt} prompt
 * @param {[string, string, any][]} changes
 * @returns {ApiPrompt}
 */
export function withValues(prompt, changes) {
  if (!changes.length) return prompt;
  const out = {...prompt};
  for (const [id, name, value] of changes) {
    out[id] = {...out[id], inputs: {...out[id].inputs, [name]: value}};
  }
  return out;
}

/** @param {string[]} a @param {string[]} b */
function sameSet(a, b) {
  if (a.length !== b.length) return false;
  const s = new Set(a);
  return b.every((x) => s.has(x));
}
