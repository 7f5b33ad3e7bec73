// One job as a list row: result thumbnail (or state icon), name, state, priority, batch; then the node progress
// bar with the executing node's title, or the error summary, or why it waits (the job it waits for first); then the short id, worker and
// durations; and the row's actions. Rows are rebuilt, never patched, except for the ticking durations (data-since).

import {h, button, icon} from "../lib/dom.js";
import {jobLabel, batchLabel, progressFraction, durations, isDependencyReason} from "../lib/model.js";
import {formatDuration} from "../lib/format.js";
import {jobImages} from "../lib/images.js";

/** @typedef {import("../lib/model.js").Job} Job */
/** @typedef {import("../lib/images.js").ImageLoader} ImageLoader */
/**
 * `shortId`: the tail of the job's id that tells it apart from the other jobs shown (model.js shortIds).
 * @typedef {{now: number, selected: boolean, images: ImageLoader, waiting: string[] | undefined, shortId: string,
 *            workerName: (id: string) => string, onAction: (action: string, job: Job) => void,
 *            onImage: (job: Job, index: number) => void}} RowContext
 */

export const STATE_ICONS = {
  pending: "pi-clock", running: "pi-spin pi-spinner", succeeded: "pi-check", failed: "pi-exclamation-triangle",
  cancelled: "pi-ban",
};
export const STATE_TEXT = {pending: "pending", running: "running", succeeded: "done", failed: "failed",
  cancelled: "cancelled"};

/**
 * @param {Job} job
 * @param {RowContext} ctx
 */
export function renderJobRow(job, ctx) {
  const label = jobLabel(job);
  const images = job.state === "succeeded" ? jobImages(job) : [];
  const name = label.name + (label.index != null ? ` #${label.index}` : "");
  const row = h("div", {
    class: `mq-job mq-state-${job.state}` + (ctx.selected ? " mq-selected" : ""),
    "aria-label": `${name} (${ctx.shortId}), ${job.state}`,
    "aria-current": ctx.selected ? "true" : undefined,
    dataset: {job: job.id, state: job.state},
  });

  /** @type {HTMLElement} */
  let thumb;
  if (images.length) {
    const img = h("img", {alt: "", loading: "lazy", decoding: "async", draggable: "false"});
    img.addEventListener("error", () => img.replaceWith(icon("pi-image")), {once: true});
    ctx.images.show(img, images[0]);
    thumb = h("button", {type: "button", class: "mq-thumb", "data-action": "image",
      title: images.length > 1 ? `${images.length} images: view full size` : "View full size",
      "aria-label": `View the result of ${name} full size`,
      onclick: (/** @type {MouseEvent} */ e) => {
        e.stopPropagation();
        ctx.onImage(job, 0);
      }}, img);
  } else {
    thumb = h("div", {class: "mq-thumb", "aria-hidden": "true"}, icon(STATE_ICONS[job.state] || "pi-circle"));
  }

  const line1 = h("div", {class: "mq-line"},
    h("span", {class: "mq-pill"}, STATE_TEXT[job.state] || job.state),
    h("span", {class: "mq-name", title: `${job.prompt_id || ""}\nid ${job.id}`}, label.name),
    label.index != null ? h("span", {class: "mq-index", title: "copy / combination in its batch"}, `#${label.index}`) : null,
    job.priority !== 1 ? h("span", {class: "mq-tag", title: "priority (higher runs first)"}, `p${job.priority}`) : null,
    job.owner ? h("span", {class: "mq-tag mq-owner", title: `owner: ${job.owner}`}, icon("pi-user"), " ", job.owner) : null,
    // the batch's tag only when it says more than the name (the panel names batches after the workflow)
    job.batch_id && batchLabel(job.batch_id) !== label.name.replace(/[^A-Za-z0-9._-]+/g, "_")
      ? h("span", {class: "mq-tag", title: `batch ${job.batch_id}`}, batchLabel(job.batch_id)) : null,
  );

  const line2 = h("div", {class: "mq-line"});
  if (job.state === "running") {
    const p = job.progress;
    const frac = progressFraction(p);
    const bar = h("div", {class: "mq-progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
      "aria-valuenow": String(Math.round(frac * 100)), "aria-label": "progress"},
    h("span", {style: {width: `${(frac * 100).toFixed(1)}%`}}));
    const what = p && (p.title || p.class_type);
    const steps = p && p.max && p.max > 1 ? ` ${p.value || 0}/${p.max}` : "";
    const nodes = p && p.nodes_total ? ` · node ${Math.min((p.nodes_done || 0) + 1, p.nodes_total)}/${p.nodes_total}` : "";
    line2.append(bar, h("span", {class: "mq-meta mq-ellipsis", title: what ? `${what}${steps}${nodes}` : ""},
      what ? `${what}${steps}` : "starting…"));
  } else if (job.state === "failed" && job.error) {
    const e = job.error;
    const where = e.node_id ? `#${e.node_id}: ` : "";
    let text = firstLine(e.message || e.type || "failed");
    // ComfyUI's validation summary starts with "Prompt outputs failed validation"; the node part says more
    const nodePart = e.type === "validation_error" ? /;\s*(node .*)$/.exec(text) : null;
    if (nodePart) text = nodePart[1];
    line2.append(h("span", {class: "mq-error-text mq-ellipsis", title: `${e.type || "error"}: ${e.message || ""}`},
      `${where}${text}`));
  } else if (job.state === "pending") {
    const reasons = ctx.waiting;
    const after = Array.isArray(job.after) ? job.after : [];
    if (reasons && reasons.length && isDependencyReason(reasons[0])) {
      line2.append(h("span", {class: "mq-meta mq-ellipsis mq-waits-for", title: reasons.join("\n")},
        icon("pi-link"), " ", reasons[0]));
    } else if (reasons && reasons.length) {
      line2.append(h("span", {class: "mq-meta mq-ellipsis", style: {color: "var(--mq-amber)"}, title: reasons.join("\n")},
        icon("pi-exclamation-circle"), " ", shortReason(reasons[0])));
    } else if (after.length && !reasons) {  // (its reasons are not read yet: it may wait for these)
      line2.append(h("span", {class: "mq-meta mq-ellipsis mq-waits-for", title: after.join("\n")}, icon("pi-link"),
        ` after ${after.length === 1 ? `job ${after[0]}` : `${after.length} jobs`}`));
    } else {
      line2.append(h("span", {class: "mq-meta"}, "waiting for a worker"));
    }
  } else if (job.state === "succeeded") {
    const n = (job.artifacts || []).length;
    line2.append(h("span", {class: "mq-meta"}, n ? `${n} file${n === 1 ? "" : "s"}` : "no files"));
  } else if (job.state === "cancelled") {
    line2.append(h("span", {class: "mq-meta mq-ellipsis"}, job.error?.message ? firstLine(job.error.message) : "cancelled"));
  }

  const d = durations(job, ctx.now);
  const live = job.state === "pending" || job.state === "running";
  const line3 = h("div", {class: "mq-line mq-meta"},
    // first on its line, so a narrow panel still shows it: it tells jobs of the same name apart
    h("span", {class: "mq-short-id mq-mono", title: `job ${job.id} (its last characters tell it apart)`}, ctx.shortId),
    job.worker ? h("span", {class: "mq-ellipsis mq-worker-name", title: `worker ${ctx.workerName(job.worker)} (${job.worker})`},
      ctx.workerName(job.worker)) : null,
    h("span", {title: "waited in the queue", dataset: live && job.state === "pending" ? {since: String(job.enqueued_at), kind: "waited"} : {}},
      `waited ${formatDuration(d.waited)}`),
    d.ran != null ? h("span", {title: "ran", dataset: job.state === "running" && job.started_at ? {since: String(job.started_at), kind: "ran"} : {}},
      `ran ${formatDuration(d.ran)}`) : null,
    (job.attempts || 0) > 1 ? h("span", {title: "attempts"}, `try ${job.attempts}/${job.max_attempts}`) : null,
  );

  const actions = h("div", {class: "mq-row-actions"});
  /** @param {string} action */
  const act = (action) => (/** @type {MouseEvent} */ e) => {
    e.stopPropagation();
    ctx.onAction(action, job);
  };
  actions.append(button({icon: "pi-folder-open", title: "Open this job's workflow in the canvas", action: "open",
    onclick: act("open")}));
  if (job.state === "pending" || job.state === "running") {
    actions.append(button({icon: "pi-times", title: "Cancel", action: "cancel", class: "mq-danger", onclick: act("cancel")}));
  } else {
    if (job.state === "failed" || job.state === "cancelled") {
      actions.append(button({icon: "pi-refresh", title: "Retry", action: "retry", onclick: act("retry")}));
    }
    actions.append(button({icon: "pi-trash", title: "Delete this record", action: "delete", class: "mq-danger",
      onclick: act("delete")}));
  }
  row.append(thumb, h("div", {class: "mq-row-main"}, line1, line2, line3), actions);
  return row;
}

/** @param {string} s */
function firstLine(s) {
  const line = String(s).split("\n")[0];
  return line.length > 200 ? line.slice(0, 199) + "…" : line;
}

/**
 * "worker gpu-1 (id): missing checkpoint x.safetensors" -> the part after the worker.
 * @param {string} reason
 */
export function shortReason(reason) {
  const m = /^worker .*?\): (.*)$/.exec(reason);
  return m ? m[1] : reason;
}

/**
 * Updates the ticking durations of rendered rows (once a second, without rebuilding them).
 * @param {HTMLElement} root
 * @param {number} now
 */
export function tickDurations(root, now) {
  for (const el of root.querySelectorAll("[data-since]")) {
    const since = Number(/** @type {HTMLElement} */ (el).dataset.since);
    const kind = /** @type {HTMLElement} */ (el).dataset.kind;
    if (since) el.textContent = `${kind} ${formatDuration(now - since)}`;
  }
}
