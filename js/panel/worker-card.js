// The panel of a ComfyUI in role "worker" (no queue here): whose worker it is (the host's broker address, its
// HTTP address when known), the link (connecting, connected, refused with the host's reason, disconnected),
// the ComfyUI it drives, the job(s) it runs, and where Queue (MQ) sends jobs; then the farm it joined by pairing
// with "Leave", or "Join a farm" (join-farm.js). It asks for GET /comfymq/status every few seconds while it is
// shown (the panel exists only while its tab is open; a hidden page is not asked).

import {h, button, icon, replaceChildren} from "../lib/dom.js";
import {LINK_TEXT, queueTarget} from "../lib/status.js";
import {FarmFacts, JoinFarm} from "./join-farm.js";

/** @typedef {import("../lib/status.js").StatusStore} StatusStore */
/** @typedef {import("../lib/client.js").Status} Status */
/** @typedef {import("./join-farm.js").FarmContext} FarmContext */

export const POLL_MS = 3000;

/** @type {Record<string, string>} */
const COMFY_HEALTH = {ok: "answering", starting: "starting", unreachable: "not answering", unknown: "not asked yet"};
const LINK_DOT = {connecting: "mq-draining", connected: "mq-online", refused: "mq-refused", disconnected: "mq-offline-dot"};

export class WorkerCard {
  /** @param {{status: StatusStore, doc?: Document, farm?: FarmContext}} o  farm: for Join a farm / Leave */
  constructor(o) {
    this.status = o.status;
    this.doc = o.doc || document;
    this.infoEl = h("div");
    /** @type {JoinFarm | null} */
    this.join = o.farm ? new JoinFarm(o.farm) : null;
    /** @type {FarmFacts | null} */
    this.facts = o.farm ? new FarmFacts(o.farm) : null;
    this.farmEl = h("div");
    this.el = h("div", {class: "mq-view mq-worker-role", role: "region", "aria-label": "This worker"}, this.infoEl,
      this.farmEl);
    /** @type {ReturnType<typeof setInterval> | null} */
    this.poller = null;
  }

  start() {
    this.poller = setInterval(() => {
      if (this.doc.visibilityState !== "hidden") this.status.load();
    }, POLL_MS);
  }

  stop() {
    if (this.poller) clearInterval(this.poller);
    this.poller = null;
  }

  /** @param {Status} s  a status whose role is "worker" */
  render(s) {
    const w = s.worker;
    const q = s.queue || {target: null, host_url: null};
    const link = w ? w.link : "disconnected";
    const dot = LINK_DOT[link] || "mq-offline-dot";
    const head = h("div", {class: "mq-worker-head"},
      h("span", {class: `mq-dot ${dot}`, "aria-hidden": "true"}),
      h("span", {class: "mq-name", title: w ? w.id : ""}, w ? `Worker ${w.name || w.id}` : "Worker"),
      h("span", {class: `mq-pill ${dot}`, "data-link": link}, LINK_TEXT[link] || link));

    /** @type {any[]} */
    const lines = [];
    if (w && link === "refused") {
      lines.push(h("div", {class: "mq-waitbox mq-refusal", role: "alert"}, icon("pi-ban"), " ",
        w.refused || "The host refused this worker (no reason given)"));
    }
    if (w && w.message && link !== "refused") lines.push(h("div", {class: "mq-meta", role: "status"}, w.message));

    /** @type {[string, ...any[]][]} */
    const rows = [];
    rows.push(["Broker", w && w.broker ? h("span", {class: "mq-mono", title: "the host's broker, where this worker connects"},
      w.broker) : "–"]);
    if (q.host_url) rows.push(["Host", h("a", {href: q.host_url, target: "_blank", rel: "noopener"}, q.host_url)]);
    if (w) {
      // `comfyui` is the driven ComfyUI's address in the route's first description, and how it answers (ok,
      // starting, unreachable, unknown) in the host's code: either is shown for what it is
      const url = w.comfyui && /^https?:\/\//.test(w.comfyui) ? w.comfyui : null;
      const health = w.comfyui && !url ? COMFY_HEALTH[w.comfyui] || w.comfyui : null;
      rows.push(["Drives", `ComfyUI${w.comfyui_version ? ` ${w.comfyui_version}` : ""}`,
        url ? [" at ", h("span", {class: "mq-mono"}, url)] : null,
        health ? h("span", {class: w.comfyui === "unreachable" ? "mq-error-text" : "mq-muted"}, `: ${health}`) : null]);
    }
    const running = w ? w.running || [] : [];
    rows.push(["Running", running.length
      ? h("span", {class: "mq-running"}, running.map((id, i) => [i ? ", " : "", icon("pi-spin pi-spinner"), " ",
        h("span", {class: "mq-mono", title: `job ${id}`, dataset: {job: id}}, id)]))
      : link === "connected" ? "nothing: waiting for a job" : "nothing"]);
    if (w && w.reconnects) rows.push(["Reconnects", String(w.reconnects)]);
    rows.push(["ComfyMQ", s.version || "?"]);
    const target = queueTarget(s);
    rows.push(["Queue (MQ)", target === "remote"
      ? `sends jobs to the host${q.host_url ? ` at ${q.host_url}` : ""}; its panel follows them`
      : "off: this worker does not know the host's HTTP address (docs/configuration.md)"]);

    this.renderFarm(s);
    const err = this.status.error;
    replaceChildren(this.infoEl,
      h("section", {class: "mq-section"},
        h("p", {class: "mq-muted mq-worker-intro"}, "This ComfyUI runs jobs from another ComfyUI's ComfyMQ queue; the " +
          "queue and its panel are on that host."),
        h("div", {class: "mq-worker", dataset: {link}}, head, lines,
          h("dl", {class: "mq-kv"}, rows.map(([k, ...v]) => [h("dt", null, k), h("dd", {dataset: {row: k}}, v)]))),
        err ? h("div", {class: "mq-error-text mq-meta", role: "alert"}, `Could not ask for the status: ${err}`) : null,
        h("div", {class: "mq-toolbar"}, h("span", {class: "mq-grow"}),
          button({icon: "pi-refresh", title: "Ask again", action: "reload", onclick: () => this.status.load()}))));
  }

  /**
   * The farm joined by pairing (with Leave), or Join a farm; their elements stay in place while nothing about the
   * farm changes, so a poll never takes what is being typed or the focus.
   * @param {Status} s
   */
  renderFarm(s) {
    const farm = s.farm;
    /** @type {HTMLElement | null} */
    let show = null;
    if (farm && farm.joined && this.facts) {
      this.facts.render(farm.joined);
      show = this.facts.el;
    } else if (farm && this.join) {
      this.join.setAllowed(farm.can_join ? null : farm.why_not);
      show = this.join.el;
    }
    if (this.farmEl.firstChild !== show || this.farmEl.childNodes.length > 1) replaceChildren(this.farmEl, show);
  }
}
