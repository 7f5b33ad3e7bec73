// The selected job in full (GET /comfymq/jobs/{id}): times, the jobs it waits for (each opens that job), the
// executing node, the whole error with ComfyUI's per-node validation errors and the traceback, why a pending job
// waits (for other jobs, or per worker), every result file (images with "Use as input"), its inputs (files, and
// outputs of the jobs it waits for), the attempts, and the actions.

import {h, button, icon, replaceChildren, whileBusy} from "../lib/dom.js";
import {jobLabel, batchLabel, progressFraction, durations, nodeName, isDependencyReason, isOwnerLimitReason} from "../lib/model.js";
import {formatDuration, formatTime, formatBytes} from "../lib/format.js";
import {jobImages} from "../lib/images.js";
import {STATE_TEXT} from "./job-row.js";

/** @typedef {import("../lib/model.js").Job} Job */
/** @typedef {import("../lib/client.js").MQClient} MQClient */
/** @typedef {import("../lib/images.js").ImageLoader} ImageLoader */
/** @typedef {import("../lib/images.js").ImageRef} ImageRef */
/**
 * `onUseImage`: "Use as input" on a result image (it says how it went itself; the button waits for it). `onJob`:
 * opens another job (one this one waits for).
 * @typedef {{client: MQClient, images: ImageLoader, workerName: (id: string) => string, paused: () => boolean,
 *            onAction: (action: string, job: Job) => void, onClose: () => void, onBatch: (id: string) => void,
 *            onJob: (id: string) => void,
 *            onImage: (job: Job, index: number) => void, onUseImage: (ref: ImageRef) => Promise<void>,
 *            onLoaded: (job: Job) => void}} DetailsOptions
 */

/**
 * How an input that is another job's output names its file: "x.png", "node 9's file #2", "file #1".
 * @param {{index?: number, filename?: string, node?: string}} o
 */
export function outputName(o) {
  if (o.filename != null) return String(o.filename);
  if (o.node != null) return `node ${o.node}'s file` + (o.index ? ` #${o.index + 1}` : "");
  return `file #${(o.index || 0) + 1}`;
}

/** A URL's host (and port), for a short label; the URL itself when it does not parse. @param {string} url */
export function hostOf(url) {
  try {
    return new URL(url).host || url;
  } catch {
    return url;
  }
}

export class JobDetails {
  /** @param {DetailsOptions} o */
  constructor(o) {
    this.o = o;
    this.el = h("section", {class: "mq-details", "aria-label": "Job details", hidden: true});
    /** @type {string | null} */
    this.id = null;
    /** @type {Job | null} */
    this.job = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.timer = null;
    this.seq = 0;
  }

  destroy() {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.id = null;
  }

  /** @param {string} id */
  async show(id) {
    this.id = id;
    this.el.hidden = false;
    if (!this.job || this.job.id !== id) replaceChildren(this.el, h("div", {class: "mq-muted"}, "Loading…"));
    await this.load();
  }

  hide() {
    this.id = null;
    this.job = null;
    this.el.hidden = true;
    this.el.replaceChildren();
  }

  /** Fetches the job again soon (after events about it). */
  refreshSoon() {
    if (!this.id || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.load();
    }, 300);
  }

  async load() {
    const id = this.id;
    if (!id) return;
    const seq = ++this.seq;
    try {
      const job = await this.o.client.getJob(id);
      if (seq !== this.seq || this.id !== id) return;
      this.job = job;
      this.render();
      this.o.onLoaded(job);
    } catch (e) {
      if (seq !== this.seq || this.id !== id) return;
      const msg = e instanceof Error ? e.message : String(e);
      replaceChildren(this.el, h("div", {class: "mq-error-text"}, `Could not load job ${id}: ${msg}`),
        h("div", {class: "mq-actions"}, button({icon: "pi-times", label: "Close", onclick: () => this.o.onClose()})));
    }
  }

  /** Applies live progress of the shown job without a fetch. @param {Job["progress"]} progress */
  progress(progress) {
    if (!this.job || this.job.state !== "running") return;
    this.job = {...this.job, progress};
    const box = this.el.querySelector(".mq-live");
    if (box) box.replaceWith(this.liveProgress(this.job));
  }

  render() {
    const job = this.job;
    if (!job) return;
    const o = this.o;
    const label = jobLabel(job);
    const now = Date.now();
    const d = durations(job, now);
    const head = h("div", {class: "mq-line", style: {justifyContent: "space-between"}},
      h("h3", {class: `mq-state-${job.state}`},
        h("span", {class: "mq-pill"}, STATE_TEXT[job.state] || job.state),
        h("span", {class: "mq-name"}, label.name + (label.index != null ? ` #${label.index}` : ""))),
      button({icon: "pi-times", title: "Close the details", action: "close", onclick: () => o.onClose()}));

    /** @type {[string, any][]} */
    const rows = [
      ["Job", h("span", {class: "mq-mono"}, job.id)],
      ["Prompt id", h("span", {class: "mq-mono"}, job.prompt_id || "–")],
    ];
    if (job.batch_id) {
      const id = job.batch_id;
      rows.push(["Batch", h("button", {type: "button", class: "mq-btn mq-chip", title: "Show only this batch",
        onclick: () => o.onBatch(id)}, icon("pi-filter"), batchLabel(id))]);
    }
    if (Array.isArray(job.after) && job.after.length) rows.push(["Waits for", this.jobChips(job.after)]);
    if (job.owner) rows.push(["Owner", job.owner]);
    rows.push(["Priority", String(job.priority)]);
    rows.push(["Attempts", `${job.attempts || 0} of ${job.max_attempts || "?"}`]);
    if (job.worker) rows.push(["Worker", `${o.workerName(job.worker)} (${job.worker})`]);
    rows.push(["Queued", formatTime(job.enqueued_at, now)]);
    if (job.started_at) rows.push(["Started", formatTime(job.started_at, now)]);
    if (job.finished_at) rows.push(["Ended", formatTime(job.finished_at, now)]);
    rows.push(["Waited", formatDuration(d.waited)]);
    if (d.ran != null) rows.push(["Ran", formatDuration(d.ran)]);
    if (job.timeout) rows.push(["Timeout", formatDuration(job.timeout * 1000)]);
    const kv = h("dl", {class: "mq-kv"}, rows.map(([k, v]) => [h("dt", null, k), h("dd", null, v)]));

    const body = [];
    if (job.state === "running") body.push(this.liveProgress(job));
    if (job.state === "pending") body.push(this.waiting(job));
    if (job.error && (job.state === "failed" || job.state === "cancelled" || job.state === "pending")) {
      body.push(this.error(job));
    }
    const images = jobImages(job);
    if (images.length) {
      body.push(h("h4", null, `Results (${images.length})`), h("div", {class: "mq-gallery"}, images.map((ref, i) => {
        const img = h("img", {alt: ref.name, loading: "lazy"});
        o.images.show(img, ref);
        const use = button({icon: "pi-sign-in", label: "Use as input", action: "use-as-input", class: "mq-use-input",
          title: `Load ${ref.name} into the canvas's Load Image node`, onclick: () => whileBusy(use, () => o.onUseImage(ref))});
        return h("div", {class: "mq-result"},
          h("button", {type: "button", class: "mq-thumb", title: ref.name, "aria-label": `View ${ref.name} full size`,
            onclick: () => o.onImage(job, i)}, img),
          use);
      })));
    }
    const others = (job.artifacts || []).filter((a) => !images.some((i) => i.url === a.url));
    if (others.length) {
      body.push(h("h4", null, "Files"), h("ul", {class: "mq-files"}, others.map((a) =>
        h("li", null, h("a", {href: o.client.resolve(a.url), target: "_blank", rel: "noopener"}, a.path.split("/").pop()),
          h("span", {class: "mq-muted"}, ` ${formatBytes(a.size)}`)))));
    }
    if (Array.isArray(job.inputs) && job.inputs.length) {
      // the files the job reads, as the host keeps them (they travel to whichever worker runs it)
      body.push(h("h4", null, `Inputs (${job.inputs.length})`), h("ul", {class: "mq-files mq-inputs"},
        job.inputs.map((i) => i.output_of
          // the output of a job it waits for: it becomes a stored input when this job is sent
          ? h("li", {title: `the output of job ${i.output_of.job}`},
            h("span", null, outputName(i.output_of), " of "), this.jobChips([i.output_of.job]),
            h("span", {class: "mq-muted"}, ` · node ${i.node}.${i.input}`))
          : h("li", {title: `sha256 ${i.sha256}`},
            h("span", null, String(i.name)),
            h("span", {class: "mq-muted"}, ` ${formatBytes(Number(i.size) || 0)} · node ${i.node}.${i.input}`)))));
    }
    if (job.history && job.history.length) {
      body.push(h("h4", null, "Attempts"), h("dl", {class: "mq-kv"}, job.history.map((a) => [
        h("dt", null, `#${a.attempt ?? "?"}`),
        h("dd", null, `${a.outcome || "running"}` + (a.worker ? ` on ${o.workerName(a.worker)}` : "") +
          (a.started_ms && a.ended_ms ? ` · ${formatDuration(a.ended_ms - a.started_ms)}` : "") +
          (a.reason ? ` · ${a.reason}` : "")),
      ])));
    }

    if (Array.isArray(job.webhooks) && job.webhooks.length) {
      // each delivery of its endings: delivered, retrying (with the last answer), failed for good
      body.push(h("h4", null, "Webhooks"), h("ul", {class: "mq-files mq-webhooks"}, job.webhooks.map((d) =>
        h("li", {"data-state": d.state, title: d.url},
          h("span", {class: `mq-pill mq-wh-${d.state}`}, d.state), ` ${d.event} → ${hostOf(d.url)}`,
          h("span", {class: "mq-muted"}, ` · ${d.attempts} attempt${d.attempts === 1 ? "" : "s"}` +
            (d.last_status ? ` · HTTP ${d.last_status}` : d.last_error ? ` · ${d.last_error}` : ""))))));
    }
    if (job.template) {
      kv.append(h("dt", null, "Template"), h("dd", null, `${job.template.name} v${job.template.version}`));
    }
    const act = (/** @type {string} */ a) => () => o.onAction(a, job);
    const actions = h("div", {class: "mq-actions"},
      button({icon: "pi-folder-open", label: "Open workflow", action: "open", onclick: act("open")}),
      job.state === "pending" || job.state === "running"
        ? button({icon: "pi-times", label: "Cancel", action: "cancel", class: "mq-danger", onclick: act("cancel")}) : null,
      job.state === "failed" || job.state === "cancelled"
        ? button({icon: "pi-refresh", label: "Retry", action: "retry", onclick: act("retry")}) : null,
      job.state !== "pending" && job.state !== "running"
        ? button({icon: "pi-trash", label: "Delete", action: "delete", class: "mq-danger", onclick: act("delete")}) : null,
      job.batch_id ? button({icon: "pi-ban", label: "Cancel batch", action: "cancel-batch", class: "mq-danger",
        onclick: act("cancel-batch")}) : null,
    );
    replaceChildren(this.el, head, kv, body, actions);
  }

  /** @param {Job} job */
  liveProgress(job) {
    const p = job.progress;
    const frac = progressFraction(p);
    const what = p ? (p.title || p.class_type || "") + (p.node ? ` (#${p.node})` : "") : "starting…";
    return h("div", {class: "mq-live"},
      h("h4", null, "Progress"),
      h("div", {class: "mq-progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
        "aria-valuenow": String(Math.round(frac * 100)), "aria-label": "job progress"},
      h("span", {style: {width: `${(frac * 100).toFixed(1)}%`}})),
      h("div", {class: "mq-meta", style: {marginTop: "3px"}}, what,
        p && p.max && p.max > 1 ? ` · step ${p.value || 0}/${p.max}` : "",
        p && p.nodes_total ? ` · node ${Math.min((p.nodes_done || 0) + 1, p.nodes_total)} of ${p.nodes_total}` : ""));
  }

  /** Buttons that open the jobs of `ids`. @param {string[]} ids */
  jobChips(ids) {
    return h("span", {class: "mq-line"}, ids.map((id) => h("button", {type: "button", class: "mq-btn mq-chip mq-mono",
      title: `Open job ${id}`, "data-action": "open-job", onclick: () => this.o.onJob(String(id))},
    icon("pi-link"), String(id))));
  }

  /** @param {Job} job */
  waiting(job) {
    const reasons = job.waiting || [];
    if (reasons.length && reasons.every(isDependencyReason)) {
      return h("div", {class: "mq-meta mq-waitdeps", role: "status"},
        h("strong", null, icon("pi-link"), " Waiting for other jobs to succeed"),
        h("ul", null, reasons.map((r) => h("li", null, r))));
    }
    const limits = reasons.filter(isOwnerLimitReason);
    const missing = reasons.filter((r) => !isOwnerLimitReason(r));
    if (missing.length) {
      return h("div", {class: "mq-waitbox", role: "status"},
        h("strong", null, icon("pi-exclamation-circle"), " No connected worker can run this job"),
        h("ul", null, missing.map((r) => h("li", null, r))));
    }
    if (limits.length) {
      return h("div", {class: "mq-meta mq-waitlimit", role: "status"},
        h("strong", null, icon("pi-hourglass"), " Waiting for its owner's running jobs"),
        h("ul", null, limits.map((r) => h("li", null, r))), this.estimate(job));
    }
    return h("div", {class: "mq-meta", role: "status"}, this.o.paused() ? "The queue is paused: nothing starts until it resumes."
      : "Waiting for a free worker.", this.estimate(job));
  }

  /** When a pending job is expected to start and end (the host's estimate from measured run times), or nothing.
   * @param {Job} job */
  estimate(job) {
    const e = job.estimate;
    if (!e || this.o.paused()) return null;
    const now = Date.now();
    return h("div", {class: "mq-estimate", "data-role": "estimate",
      title: `${e.ahead} job(s) ahead; expected run ${formatDuration(e.run_seconds * 1000)}`},
    `Expected to start in about ${formatDuration(e.start - now)}, done in about ${formatDuration(e.end - now)}`
      + (e.ahead ? ` (${e.ahead} ahead)` : ""));
  }

  /** @param {Job} job */
  error(job) {
    const e = job.error || {};
    const box = h("div", {class: "mq-errbox", role: "alert"});
    const where = e.node_id ? nodeName(job, e.node_id) : "";
    box.append(h("strong", null, `${e.type || "error"}` + (where ? ` in ${where}` : "")));
    const nodeErrors = e.details && e.details.node_errors;
    const top = e.details && e.details.error;
    if (nodeErrors && Object.keys(nodeErrors).length) {
      if (top && top.message) box.append(h("div", null, top.message));
      box.append(h("ul", null, Object.entries(nodeErrors).map(([id, ne]) => h("li", null,
        h("strong", null, nodeName(job, id) || `${ne.class_type || "node"} (#${id})`), ": ",
        (ne.errors || []).map((x) => [x.message || x.type, x.details ? ` — ${x.details}` : ""]).flat().join("; ") || "invalid"))));
    } else if (e.message) {
      box.append(h("div", {style: {whiteSpace: "pre-wrap"}}, e.message));
    }
    if (e.traceback) {
      box.append(h("details", null, h("summary", null, "Traceback"), h("pre", {class: "mq-mono"}, e.traceback)));
    }
    return box;
  }
}
