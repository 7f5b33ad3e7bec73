// "Join a farm" (a worker-role ComfyUI, or one whose role is not set): the ComfyMQ hosts found on the LAN (name,
// address, fingerprint, version: hints, nothing is trusted for being advertised) or an address typed by hand, the
// code that host's panel shows (Workers › Add a worker), and POST /comfymq/farm/join; this ComfyUI then serves that
// farm at once and the panel follows GET /comfymq/status. FarmFacts: the farm joined, and "Leave".
// Both keep their own elements across the worker card's re-renders, so typing is never lost to a poll.

import {h, button, icon, replaceChildren, whileBusy} from "../lib/dom.js";

/** @typedef {import("../lib/client.js").MQClient} MQClient */
/** @typedef {import("../lib/client.js").FoundHost} FoundHost */
/** @typedef {import("../lib/client.js").Joined} Joined */
/** @typedef {import("../lib/notifier.js").Toast} Toast */
/** @typedef {import("../lib/status.js").StatusStore} StatusStore */
/**
 * @typedef {{client: MQClient, status: StatusStore, toast: (t: Toast) => void,
 *            toastError: (summary: string, e: unknown) => void,
 *            confirm: (title: string, message: string) => Promise<boolean>}} FarmContext
 */

/** A code as typed ("123 456", "123-456") to its digits, or null when it is not 6 of them. @param {string} text */
export function codeDigits(text) {
  const digits = text.replace(/[\s-]/g, "");
  return /^\d{6}$/.test(digits) ? digits : null;
}

let seq = 0;

export class JoinFarm {
  /** @param {FarmContext} ctx */
  constructor(ctx) {
    this.ctx = ctx;
    const id = `mq-join-${++seq}`;
    /** @type {string | null} the fingerprint the chosen advertisement gave (checked against the host's, a warning) */
    this.expected = null;
    this.hostInput = h("input", {type: "url", id: `${id}-host`, name: "host_url", placeholder: "http://gpu-host.lan:8188",
      autocomplete: "off", spellcheck: "false",
      oninput: () => {
        this.expected = null;
        this.fpEl.textContent = "";
      }});
    this.codeInput = h("input", {type: "text", id: `${id}-code`, name: "code", inputmode: "numeric",
      autocomplete: "one-time-code", placeholder: "123 456", maxlength: "9"});
    this.fpEl = h("div", {class: "mq-meta mq-mono"});
    this.msgEl = h("div", {class: "mq-meta", role: "status", "aria-live": "polite"});
    this.hostsEl = h("div", {class: "mq-found", role: "list", "aria-label": "Hosts found on the LAN"});
    this.findBtn = button({icon: "pi-search", label: "Find hosts", action: "discover",
      title: "Look for ComfyMQ hosts on this network (a few seconds)",
      onclick: () => whileBusy(this.findBtn, () => this.discover())});
    this.joinBtn = h("button", {type: "submit", class: "mq-btn mq-primary", dataset: {action: "join"}},
      icon("pi-sign-in"), h("span", null, "Join"));
    this.form = h("form", {class: "mq-join-form", novalidate: true, onsubmit: (/** @type {Event} */ e) => {
      e.preventDefault();
      whileBusy(this.joinBtn, () => this.join());
    }},
    h("label", {for: this.hostInput.id}, "Host address"), this.hostInput, this.fpEl,
    h("label", {for: this.codeInput.id}, "Code the host shows"), this.codeInput,
    h("div", {class: "mq-toolbar"}, h("span", {class: "mq-grow"}), this.joinBtn));
    this.whyEl = h("div", {class: "mq-meta", role: "status"});
    this.el = h("section", {class: "mq-section mq-join", "aria-label": "Join a farm"},
      h("div", {class: "mq-toolbar", style: {marginTop: "0"}},
        h("span", {class: "mq-grow mq-strong"}, icon("pi-sitemap"), " Join a farm"), this.findBtn),
      h("p", {class: "mq-muted"}, "Pick a host found on the network, or type its address; then enter the code its " +
        "ComfyMQ panel shows under Workers › Add a worker. This ComfyUI then runs that farm's jobs."),
      this.whyEl, this.hostsEl, this.form, this.msgEl);
  }

  /** @param {string | null} why  why this ComfyUI cannot join (null: it can) */
  setAllowed(why) {
    this.whyEl.textContent = why || "";
    this.whyEl.classList.toggle("mq-error-text", !!why);
    this.form.hidden = !!why;
    this.findBtn.hidden = !!why;
  }

  async discover() {
    replaceChildren(this.hostsEl, h("div", {class: "mq-meta"}, "Looking…"));
    try {
      const {hosts} = await this.ctx.client.discover(3);
      if (!hosts.length) {
        replaceChildren(this.hostsEl, h("div", {class: "mq-meta"}, "No host answered. Type its address below " +
          "(a host on loopback only, or with discovery off, is not advertised)."));
        return;
      }
      replaceChildren(this.hostsEl, hosts.map((f) => this.found(f)));
    } catch (e) {
      replaceChildren(this.hostsEl, h("div", {class: "mq-meta mq-error-text", role: "alert"},
        `Could not look for hosts: ${e instanceof Error ? e.message : e}. Type the address below.`));
    }
  }

  /** @param {FoundHost} f */
  found(f) {
    const url = f.urls[0] || "";
    return h("div", {class: "mq-line mq-found-host", role: "listitem", dataset: {instance: f.instance || f.name}},
      icon("pi-server"),
      h("span", {class: "mq-ellipsis mq-grow", title: `${f.addresses.join(", ")} · ComfyMQ ${f.version}`},
        h("span", {class: "mq-name"}, f.name), " ", h("span", {class: "mq-muted"}, url), " ",
        h("span", {class: "mq-muted mq-mono", title: "its broker key's fingerprint: compare it with the host's panel"},
          f.fingerprint)),
      button({icon: "pi-check", label: "Use", action: "use-host", title: `Join ${f.name}`, disabled: !url,
        onclick: () => this.choose(url, f.fingerprint)}));
  }

  /** @param {string} url @param {string} fingerprint */
  choose(url, fingerprint) {
    this.hostInput.value = url;
    this.expected = fingerprint || null;
    this.fpEl.textContent = fingerprint ? `Advertised fingerprint ${fingerprint}: the host's panel shows the same` : "";
    this.codeInput.focus();
  }

  async join() {
    const url = this.hostInput.value.trim().replace(/\/+$/, "");
    const code = codeDigits(this.codeInput.value);
    this.msgEl.classList.remove("mq-error-text");
    if (!/^https?:\/\/[^\s/?#]+$/.test(url)) return this.say("The host address is like http://gpu-host.lan:8188", true);
    if (!code) return this.say("The code is the 6 digits the host's panel shows", true);
    this.say("Pairing…", false);
    try {
      const farm = await this.ctx.client.joinFarm({host_url: url, code, ...(this.expected ? {fingerprint: this.expected} : {})});
      this.codeInput.value = "";
      this.say("", false);
      this.ctx.toast({severity: "success", life: 5000, summary: "Joined the farm",
        detail: farm.joined ? `${farm.joined.host_url} (fingerprint ${farm.joined.fingerprint})` : url});
      if (farm.joined && this.expected && farm.joined.fingerprint !== this.expected) {
        this.ctx.toast({severity: "warn", life: 10000, summary: "The host's key is not the one advertised",
          detail: `advertised ${this.expected}, proved ${farm.joined.fingerprint}: the code was right, so this is the ` +
            "host that showed it; check its panel"});
      }
    } catch (e) {
      this.say(e instanceof Error ? e.message : String(e), true);
    }
    await this.ctx.status.load();
  }

  /** @param {string} text @param {boolean} bad */
  say(text, bad) {
    this.msgEl.textContent = text;
    this.msgEl.classList.toggle("mq-error-text", bad);
    this.msgEl.setAttribute("role", bad ? "alert" : "status");
  }
}

export class FarmFacts {
  /** @param {FarmContext} ctx */
  constructor(ctx) {
    this.ctx = ctx;
    this.leaveBtn = button({icon: "pi-sign-out", label: "Leave", action: "leave",
      title: "Leave this farm: the host forgets this worker's key and this ComfyUI stops serving it",
      onclick: () => whileBusy(this.leaveBtn, () => this.leave())});
    this.factsEl = h("dl", {class: "mq-kv"});
    this.el = h("section", {class: "mq-section mq-farm", "aria-label": "Farm"},
      h("div", {class: "mq-toolbar", style: {marginTop: "0"}},
        h("span", {class: "mq-grow mq-strong"}, icon("pi-sitemap"), " Farm"), this.leaveBtn), this.factsEl);
  }

  /** @param {Joined} j */
  render(j) {
    replaceChildren(this.factsEl,
      h("dt", null, "Host"), h("dd", {dataset: {row: "Farm host"}}, h("a", {href: j.host_url, target: "_blank", rel: "noopener"}, j.host_url)),
      h("dt", null, "Fingerprint"), h("dd", {class: "mq-mono", dataset: {row: "Fingerprint"}}, j.fingerprint),
      h("dt", null, "Paired"), h("dd", null, new Date(j.paired_at).toLocaleString()),
      h("dt", null, "As"), h("dd", null, j.name || "–"));
  }

  async leave() {
    if (!(await this.ctx.confirm("Leave this farm?", "The host forgets this worker's key and this ComfyUI stops " +
      "taking its jobs; a job it runs now goes back to the farm's queue. Joining again needs a new code."))) return;
    try {
      const answer = await this.ctx.client.leaveFarm();
      this.ctx.toast({severity: answer.host_told ? "success" : "warn", life: 8000, summary: "Left the farm",
        detail: answer.message});
    } catch (e) {
      this.ctx.toastError("Could not leave the farm", e);
    }
    await this.ctx.status.load();
  }
}
