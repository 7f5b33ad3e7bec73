// Queueing from the panel: priority, count and sweep axes (a node's widget from the canvas and the values to
// try), then the Queue button. The form's values live in `state` (kept by the extension, so they survive the tab
// being closed and opened again); priority and count are remembered across page loads.

import {h, button} from "../lib/dom.js";
import {parseValues, jobTotal} from "../lib/sweep.js";
import {graphNodes} from "../lib/enqueue.js";
import {MODES} from "../lib/seeds.js";
import {formatCount} from "../lib/format.js";

/** @typedef {import("../lib/enqueue.js").AppLike} AppLike */
/** @typedef {import("../lib/enqueue.js").EnqueueOptions} EnqueueOptions */
/** @typedef {import("../lib/seeds.js").WidgetLike} WidgetLike */
/** @typedef {{nodeId: string, input: string, text: string}} AxisState */
/** @typedef {{priority: number, count: number, axes: AxisState[], sweepOpen: boolean}} FormState */

const STORAGE_KEY = "comfymq.form";

/** @returns {FormState} */
export function loadFormState() {
  /** @type {FormState} */
  const state = {priority: 1, count: 1, axes: [], sweepOpen: false};
  try {
    const saved = JSON.parse(localStorage.getItem(STORAGE_KEY) || "{}");
    if (Number.isInteger(saved.priority)) state.priority = saved.priority;
    if (Number.isInteger(saved.count) && saved.count >= 1) state.count = saved.count;
  } catch {
    // a damaged entry: defaults
  }
  return state;
}

/** @param {FormState} state */
function saveFormState(state) {
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify({priority: state.priority, count: state.count}));
  } catch {
    // private mode: not remembered
  }
}

/** @param {WidgetLike} w */
function sweepable(w) {
  if (!w || !w.name || w.type === "button") return false;
  if (typeof w.value === "string" && MODES.includes(w.value) && /control/.test(w.name)) return false;
  return ["number", "string", "boolean"].includes(typeof w.value);
}

/**
 * The nodes with widgets one can sweep, as [id, label, widgets].
 * @param {AppLike} app
 * @returns {{id: string, label: string, widgets: WidgetLike[]}[]}
 */
export function sweepTargets(app) {
  return graphNodes(app).map((n) => {
    const node = /** @type {any} */ (n);
    const widgets = (n.widgets || []).filter(sweepable);
    const title = node.title || node.type || "node";
    return {id: String(n.id), label: `#${n.id} ${title}`, widgets};
  }).filter((t) => t.widgets.length);
}

export class EnqueueForm {
  /**
   * @param {{app: AppLike, state: FormState, submit: (o: EnqueueOptions) => Promise<boolean>}} o
   */
  constructor(o) {
    this.o = o;
    this.state = o.state;
    this.busy = false;
    const s = this.state;
    this.priority = h("input", {type: "number", step: "1", value: String(s.priority), id: "comfymq-priority",
      title: "Higher runs first; equal priorities run in the order queued",
      oninput: () => {
        s.priority = Math.trunc(Number(this.priority.value) || 0);
        saveFormState(s);
      }});
    this.count = h("input", {type: "number", min: "1", max: "10000", step: "1", value: String(s.count), id: "comfymq-count",
      title: "Copies; seed widgets follow their 'control after generate' mode as with ComfyUI's Queue button",
      oninput: () => {
        s.count = Math.max(1, Math.min(10000, Math.trunc(Number(this.count.value) || 1)));
        saveFormState(s);
        this.updateTotal();
      }});
    this.queueBtn = button({icon: "pi-send", label: "Queue", class: "mq-primary mq-queue", action: "enqueue",
      title: "Queue the current workflow in ComfyMQ (Ctrl+Shift+Enter)", onclick: () => this.submit()});
    this.axesEl = h("div", {class: "mq-axes"});
    this.total = h("span", {class: "mq-muted", "aria-live": "polite"});
    this.summary = h("summary", null, "Sweep");
    this.sweep = h("details", {class: "mq-sweep", open: s.sweepOpen ? true : undefined},
      this.summary, this.axesEl,
      h("div", {class: "mq-sweep-foot"},
        button({icon: "pi-plus", label: "Add axis", action: "add-axis", onclick: () => this.addAxis()}),
        this.total));
    this.sweep.addEventListener("toggle", () => {
      s.sweepOpen = this.sweep.open;
      if (this.sweep.open && !s.axes.length) this.addAxis();
    });
    this.el = h("section", {class: "mq-section", "aria-label": "Queue the workflow"},
      h("div", {class: "mq-form"},
        h("span", {class: "mq-field"}, h("label", {for: "comfymq-priority"}, "Priority"), this.priority),
        h("span", {class: "mq-field"}, h("label", {for: "comfymq-count"}, "Count"), this.count),
        this.queueBtn),
      this.sweep);
    /** @type {{el: HTMLElement, values: HTMLInputElement, hint: HTMLElement, node: HTMLSelectElement,
     *          input: HTMLSelectElement}[]} */
    this.rows = [];
    this.renderAxes();
  }

  addAxis() {
    const targets = sweepTargets(this.o.app);
    const first = targets[0];
    this.state.axes.push({nodeId: first ? first.id : "", input: first ? first.widgets[0].name : "", text: ""});
    this.renderAxes();
    this.rows[this.rows.length - 1]?.node.focus();
  }

  renderAxes() {
    const s = this.state;
    this.rows = s.axes.map((axis, i) => this.axisRow(axis, i));
    this.axesEl.replaceChildren(...this.rows.map((r) => r.el));
    this.updateTotal();
  }

  /**
   * @param {AxisState} axis
   * @param {number} i
   */
  axisRow(axis, i) {
    const node = h("select", {"aria-label": `Sweep axis ${i + 1}: node`});
    const input = h("select", {"aria-label": `Sweep axis ${i + 1}: input`});
    const values = h("input", {type: "text", class: "mq-values", value: axis.text, spellcheck: "false",
      placeholder: "values: 5, 7.5, 9  or  1..10  or  *", "aria-label": `Sweep axis ${i + 1}: values`});
    const hint = h("div", {class: "mq-hint mq-muted", "aria-live": "polite"});
    const fill = () => {
      const targets = sweepTargets(this.o.app);
      if (axis.nodeId && !targets.some((t) => t.id === axis.nodeId)) {
        targets.unshift({id: axis.nodeId, label: `#${axis.nodeId} (not in the graph)`, widgets: []});
      }
      node.replaceChildren(...targets.map((t) => h("option", {value: t.id, selected: t.id === axis.nodeId}, t.label)));
      const target = targets.find((t) => t.id === axis.nodeId) || targets[0];
      if (target && !axis.nodeId) axis.nodeId = target.id;
      const widgets = target ? target.widgets : [];
      if (widgets.length && !widgets.some((w) => w.name === axis.input)) axis.input = widgets[0].name;
      input.replaceChildren(...widgets.map((w) => h("option", {value: w.name, selected: w.name === axis.input}, w.name)));
      this.check(i, values, hint);
    };
    node.addEventListener("focus", fill);
    node.addEventListener("change", () => {
      axis.nodeId = node.value;
      axis.input = "";
      fill();
    });
    input.addEventListener("change", () => {
      axis.input = input.value;
      this.check(i, values, hint);
    });
    values.addEventListener("input", () => {
      axis.text = values.value;
      this.check(i, values, hint);
    });
    const remove = button({icon: "pi-times", title: `Remove sweep axis ${i + 1}`, onclick: () => {
      this.state.axes.splice(i, 1);
      this.renderAxes();
    }});
    const el = h("div", {class: "mq-axis"}, node, input, remove, values, hint);
    fill();
    return {el, values, hint, node, input};
  }

  /** @param {string} nodeId @param {string} name */
  widget(nodeId, name) {
    const t = sweepTargets(this.o.app).find((x) => x.id === nodeId);
    return t ? t.widgets.find((w) => w.name === name) : undefined;
  }

  /**
   * Parses one axis's values, shows the hint or the error; returns the values or null.
   * @param {number} i
   * @param {HTMLInputElement} [valuesEl]
   * @param {HTMLElement} [hintEl]
   */
  check(i, valuesEl, hintEl) {
    const axis = this.state.axes[i];
    const row = this.rows[i];
    const values = valuesEl || row?.values;
    const hint = hintEl || row?.hint;
    const w = this.widget(axis.nodeId, axis.input);
    const choices = w && Array.isArray(w.options?.values) ? w.options.values : null;
    const r = axis.text.trim() ? parseValues(axis.text, {current: w?.value, choices,
      integer: w?.options?.precision === 0}) : null;
    const now = w ? `now ${JSON.stringify(w.value)}` : "";
    if (hint) {
      hint.classList.toggle("mq-error-text", !!(r && r.error));
      hint.classList.toggle("mq-muted", !(r && r.error));
      hint.textContent = r && r.error ? r.error
        : r ? `${r.values.length} value${r.values.length === 1 ? "" : "s"}${now ? ` · ${now}` : ""}`
          : [now, choices ? `${choices.length} choices ("*" = all)` : ""].filter(Boolean).join(" · ");
    }
    values?.setAttribute("aria-invalid", r && r.error ? "true" : "false");
    this.updateTotal();
    return r && !r.error ? r.values : null;
  }

  updateTotal() {
    const axes = this.state.axes.map((a) => {
      const w = this.widget(a.nodeId, a.input);
      const r = a.text.trim() ? parseValues(a.text, {current: w?.value,
        choices: w && Array.isArray(w.options?.values) ? w.options.values : null}) : null;
      return r && !r.error ? r.values : [];
    }).filter((v) => v.length);
    const n = jobTotal(this.state.count, axes);
    this.summary.textContent = axes.length ? `Sweep (${axes.length} axis${axes.length === 1 ? "" : "es"})` : "Sweep";
    this.total.textContent = `= ${formatCount(n)} job${n === 1 ? "" : "s"}`;
    this.total.classList.toggle("mq-error-text", n > 10000);
  }

  async submit() {
    if (this.busy) return;
    const sweep = [];
    for (let i = 0; i < this.state.axes.length; i++) {
      const a = this.state.axes[i];
      if (!a.text.trim()) continue; // an empty axis is ignored
      const values = this.check(i);
      if (!values) {
        this.sweep.open = true;
        this.rows[i]?.values.focus();
        return;
      }
      sweep.push({nodeId: a.nodeId, input: a.input, values});
    }
    this.busy = true;
    this.queueBtn.disabled = true;
    try {
      await this.o.submit({priority: this.state.priority, count: this.state.count, sweep});
    } finally {
      this.busy = false;
      this.queueBtn.disabled = false;
    }
  }
}

