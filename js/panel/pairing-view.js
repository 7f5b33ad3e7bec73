// The host's side of pairing, in the Workers tab: "Add a worker" shows a one-time code (6 digits, valid 10
// minutes, a few tries) with this host's fingerprint, to type into the worker's "Join a farm"; the paired worker
// keys with their names (and whether a worker with that key is online), each with "Remove" (at once: its
// connection is closed and it cannot connect again); the refusals of pairing attempts, newest first. All of it is
// GET /comfymq/pairing, an admin's: a token that is not one sees none of it. The code itself is shown only in the
// answer that made it; the host never sends it again.

import {h, button, icon, replaceChildren, whileBusy} from "../lib/dom.js";
import {ApiError} from "../lib/client.js";
import {formatAge} from "../lib/format.js";

/** @typedef {import("./panel.js").PanelContext} PanelContext */
/** @typedef {import("../lib/client.js").PairingOverview} PairingOverview */
/** @typedef {import("../lib/client.js").PairedKey} PairedKey */

const POLL_MS = 3000; // while a code is shown: when it is used, the new worker appears
const REFUSALS_SHOWN = 20;

/** "123456" as "123 456", easier to read out. @param {string} code */
export function spacedCode(code) {
  return code.length === 6 ? `${code.slice(0, 3)} ${code.slice(3)}` : code;
}

/** Minutes and seconds left, "9:05". @param {number} ms */
export function timeLeft(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

export class PairingSection {
  /**
   * @param {PanelContext} ctx
   * @param {{onlineKeys: () => Map<string, string>}} o  the online workers' keys, with their names
   */
  constructor(ctx, o) {
    this.ctx = ctx;
    this.onlineKeys = o.onlineKeys;
    /** @type {PairingOverview | null} */
    this.overview = null;
    /** @type {{code: string, expires_at: number, fingerprint: string} | null} the code this panel made */
    this.code = null;
    this.pairedBefore = 0;
    this.visible = false;
    this.seq = 0;
    /** @type {boolean | undefined} whether this panel's token is an admin's (GET /comfymq/whoami; undefined: not known) */
    this.admin = undefined;
    this.codeEl = h("div", {class: "mq-pair-code", "aria-live": "polite"});
    this.keysEl = h("div", {class: "mq-paired", role: "list", "aria-label": "Paired worker keys"});
    this.refusalsEl = h("details", {class: "mq-refusals"});
    this.problemEl = h("div", {class: "mq-meta", role: "status"});
    this.addBtn = button({icon: "pi-plus", label: "Add a worker", action: "add-worker",
      title: "Show a one-time code that pairs a worker with this host (valid 10 minutes)",
      onclick: () => whileBusy(this.addBtn, () => this.addWorker())});
    this.el = h("section", {class: "mq-section mq-pairing", hidden: true, "aria-label": "Pairing"},
      h("div", {class: "mq-toolbar", style: {marginTop: "0"}},
        h("span", {class: "mq-grow mq-strong"}, icon("pi-link"), " Pairing"), this.addBtn),
      this.problemEl, this.codeEl, this.keysEl, this.refusalsEl);
  }

  start() {
    this.ticker = setInterval(() => this.tick(), 1000);
    this.poller = setInterval(() => {
      if (this.visible && this.code) this.load();
    }, POLL_MS);
    this.load();
  }

  stop() {
    clearInterval(this.ticker);
    clearInterval(this.poller);
  }

  /** @param {boolean} v */
  setVisible(v) {
    this.visible = v;
    if (v) this.load();
  }

  async load() {
    const seq = ++this.seq;
    if (this.admin === undefined) {
      // asked first: a token that is not an admin's would be refused GET /comfymq/pairing (a 403 in the console)
      try {
        const me = await this.ctx.client.whoami();
        this.admin = !me || me.role === "admin";
      } catch {
        return; // (not known yet: asked again at the next load)
      }
      if (seq !== this.seq) return;
    }
    if (!this.admin) {
      this.el.hidden = true;
      return;
    }
    try {
      const o = await this.ctx.client.pairing();
      if (seq !== this.seq) return;
      this.overview = o;
    } catch (e) {
      if (seq !== this.seq) return;
      // not an admin, or a host without pairing: the section is not this user's
      if (e instanceof ApiError && [401, 403, 404, 409].includes(e.status)) {
        this.overview = null;
        this.el.hidden = true;
        return;
      }
      this.problemEl.textContent = `Could not read the pairing state: ${e instanceof Error ? e.message : e}`;
      this.el.hidden = false;
      return;
    }
    this.render();
  }

  async addWorker() {
    try {
      const made = await this.ctx.client.pairingCode();
      this.code = made;
      this.pairedBefore = this.overview ? this.overview.workers.length : 0;
    } catch (e) {
      this.ctx.toastError("Could not make a pairing code", e);
      return;
    }
    await this.load();
  }

  render() {
    const o = this.overview;
    if (!o) return;
    this.el.hidden = false;
    this.addBtn.hidden = !o.enabled;
    this.problemEl.textContent = o.enabled ? "" : `Workers cannot pair with this host: ${o.problem}`;
    this.problemEl.classList.toggle("mq-error-text", !o.enabled);
    // the code this panel made, while the host still holds it (null once used, void, replaced or expired)
    if (this.code && !o.code) {
      const paired = o.workers.length > this.pairedBefore;
      this.code = null;
      this.ctx.toast({severity: paired ? "success" : "info", life: 5000,
        summary: paired ? "A worker paired with this host" : "The pairing code is no longer valid"});
    }
    this.renderCode();
    this.renderKeys(o.workers);
    this.renderRefusals(o);
  }

  renderCode() {
    const c = this.code;
    const o = this.overview;
    if (!c || !o || !o.code) {
      replaceChildren(this.codeEl);
      return;
    }
    replaceChildren(this.codeEl, h("div", {class: "mq-waitbox mq-code-box"},
      h("div", {class: "mq-muted"}, "On the worker: ComfyMQ panel › Join a farm, pick this host, enter"),
      h("div", {class: "mq-code", "data-testid": "pairing-code", "aria-label": `pairing code ${c.code.split("").join(" ")}`},
        spacedCode(c.code)),
      h("dl", {class: "mq-kv"},
        h("dt", null, "Valid"), h("dd", {dataset: {left: String(o.code.expires_at)}},
          `${timeLeft(o.code.expires_at - Date.now())} more`),
        h("dt", null, "Tries left"), h("dd", null, String(o.code.tries_left)),
        h("dt", null, "Fingerprint"), h("dd", {class: "mq-mono", title: "the worker shows the same after it pairs"},
          c.fingerprint || o.fingerprint || "–"))));
  }

  /** @param {PairedKey[]} keys */
  renderKeys(keys) {
    if (!keys.length) {
      replaceChildren(this.keysEl, h("div", {class: "mq-meta"}, "No worker has paired with this host yet."));
      return;
    }
    const online = this.onlineKeys();
    const now = Date.now();
    replaceChildren(this.keysEl, h("div", {class: "mq-meta"}, `Paired workers (${keys.length})`), keys.map((k) => {
      const on = online.get(k.public_key);
      return h("div", {class: "mq-line mq-paired-key", role: "listitem", dataset: {key: k.public_key}},
        h("span", {class: `mq-dot ${on !== undefined ? "mq-online" : "mq-offline-dot"}`, "aria-hidden": "true"}),
        h("span", {class: "mq-ellipsis mq-grow", title: k.public_key},
          h("span", {class: "mq-name"}, k.name || "(no name)"), " ",
          h("span", {class: "mq-muted mq-mono"}, k.public_key.slice(0, 8) + "…"), " ",
          h("span", {class: "mq-muted"}, `paired ${formatAge(k.paired_at, now)} from ${k.source || "?"}`),
          on !== undefined ? h("span", {class: "mq-muted"}, ` · online as ${on}`) : null,
          k.configured ? h("span", {class: "mq-muted", title: "also in allowed_worker_keys: Remove does not shut it out"},
            " · configured") : null),
        button({icon: "pi-trash", label: "Remove", action: "unpair",
          title: "Unpair: its connection is closed at once and it cannot connect again",
          onclick: (e) => whileBusy(/** @type {HTMLButtonElement} */ (e.currentTarget), () => this.remove(k))}));
    }));
  }

  /** @param {PairingOverview} o */
  renderRefusals(o) {
    const list = o.refusals.slice(0, REFUSALS_SHOWN);
    this.refusalsEl.hidden = !list.length;
    if (!list.length) return;
    const now = Date.now();
    const open = this.refusalsEl.open;
    replaceChildren(this.refusalsEl,
      h("summary", {class: "mq-meta"}, icon("pi-shield"), ` Refused pairing attempts (${o.refusals.length})`),
      h("ul", {class: "mq-refusal-list"}, list.map((r) => h("li", {class: "mq-meta"},
        `${formatAge(r.at, now)} · ${r.source} · ${r.step}: ${r.reason}`))));
    this.refusalsEl.open = open;
  }

  /** @param {PairedKey} k */
  async remove(k) {
    const who = k.name || k.public_key.slice(0, 8) + "…";
    if (!(await this.ctx.confirm("Remove this worker?", `${who} is disconnected at once and cannot connect again ` +
      "until it pairs anew. A job it runs goes back to the queue."))) return;
    try {
      const answer = await this.ctx.client.unpair(k.public_key);
      this.ctx.toast({severity: "success", life: 4000, summary: `Removed ${who}`,
        detail: answer && answer.still_allowed ? "It stays allowed: the host's configuration lists its key" : undefined});
    } catch (e) {
      this.ctx.toastError(`Could not remove ${who}`, e);
    }
    await this.load();
  }

  tick() {
    if (!this.visible) return;
    const now = Date.now();
    for (const el of this.codeEl.querySelectorAll("[data-left]")) {
      const left = Number(/** @type {HTMLElement} */ (el).dataset.left) - now;
      el.textContent = left > 0 ? `${timeLeft(left)} more` : "expired";
    }
  }
}
