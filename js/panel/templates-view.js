// The Templates tab: the host's templates (GET /comfymq/templates); one selected shows a form drawn from its
// schema (lib/template-form.js), queues it (POST /comfymq/templates/{name}/jobs) and lists its recent jobs (each
// opens in the Queue tab); "Save canvas as template" turns the canvas's workflow into one, the user ticking which
// widget values become parameters (named from the node's title and input) and naming them.

import {h, button, icon, replaceChildren, whileBusy} from "../lib/dom.js";
import {JOB} from "../lib/events.js";
import {formatTime} from "../lib/format.js";
import {candidates, formFields, readParams, templateBody, validTemplateName} from "../lib/template-form.js";
import {STATE_TEXT} from "./job-row.js";

/** @typedef {import("./panel.js").PanelContext} PanelContext */
/** @typedef {import("../lib/client.js").TemplateSummary} TemplateSummary */
/** @typedef {import("../lib/template-form.js").Field} Field */
/** @typedef {import("../lib/template-form.js").Candidate} Candidate */

export class TemplatesView {
  /** @param {PanelContext} ctx @param {{onJob: (id: string) => void}} o */
  constructor(ctx, o) {
    this.ctx = ctx;
    this.o = o;
    this.list = h("div", {class: "mq-tpl-list", role: "list", "aria-label": "Templates"});
    this.detail = h("div", {class: "mq-tpl-detail"});
    this.el = h("div", {class: "mq-view mq-templates", role: "tabpanel", "aria-labelledby": "comfymq-tab-templates",
      hidden: true},
    h("div", {class: "mq-section mq-toolbar"},
      button({icon: "pi-save", label: "Save canvas as template", action: "save-template", class: "mq-primary",
        onclick: () => this.showSave()}),
      h("span", {class: "mq-grow"}),
      button({icon: "pi-refresh", title: "Reload the templates", action: "reload-templates", onclick: () => this.load()})),
    this.list, this.detail);
    /** @type {string | null} */
    this.selected = null;
    this.seq = 0;
    /** @type {Set<string>} the jobs its recent-jobs list shows (a change to one reloads the list, once a second) */
    this.shown = new Set();
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.timer = null;
    this.off = ctx.hub.on(JOB, (/** @type {any} */ d) => {
      if (!this.el.hidden && this.selected && d && this.shown.has(String(d.job_id)) && !this.timer) {
        const name = this.selected;
        this.timer = setTimeout(() => {
          this.timer = null;
          this.loadJobs(name);
        }, 1000);
      }
    });
  }

  /** @param {boolean} visible */
  setVisible(visible) {
    this.el.hidden = !visible;
    if (visible) this.load();
  }

  stop() {
    this.seq++;
    this.off();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  async load() {
    const seq = ++this.seq;
    try {
      const {templates} = await this.ctx.client.templates();
      if (seq !== this.seq) return;
      this.renderList(templates);
    } catch (e) {
      if (seq !== this.seq) return;
      replaceChildren(this.list, h("div", {class: "mq-error-text"}, `Could not load the templates: ${message(e)}`));
    }
  }

  /** @param {TemplateSummary[]} templates */
  renderList(templates) {
    if (!templates.length) {
      replaceChildren(this.list, h("div", {class: "mq-empty"},
        "No templates yet: build a workflow on the canvas, then “Save canvas as template”."));
      return;
    }
    replaceChildren(this.list, templates.map((t) => h("button", {type: "button", class: "mq-tpl", role: "listitem",
      "data-template": t.name, "aria-pressed": String(t.name === this.selected), onclick: () => this.open(t.name)},
    h("span", {class: "mq-name"}, t.name), h("span", {class: "mq-tag"}, `v${t.version}`),
    h("span", {class: "mq-muted mq-grow"}, t.description || (t.category ? t.category : "")),
    h("span", {class: "mq-muted"}, `${Object.keys(t.parameters).length} parameters`))));
  }

  /** Shows a template's form and its recent jobs. @param {string} name */
  async open(name) {
    this.selected = name;
    for (const b of this.list.querySelectorAll(".mq-tpl")) {
      b.setAttribute("aria-pressed", String(b.getAttribute("data-template") === name));
    }
    const seq = ++this.seq;
    replaceChildren(this.detail, h("div", {class: "mq-muted mq-section"}, "Loading…"));
    try {
      const [{template}, schema] = await Promise.all([this.ctx.client.template(name), this.ctx.client.templateSchema(name)]);
      if (seq !== this.seq) return;
      this.renderForm(template.name, template.version, template.description, formFields(schema));
      this.loadJobs(name);
    } catch (e) {
      if (seq !== this.seq) return;
      replaceChildren(this.detail, h("div", {class: "mq-error-text mq-section"}, `Could not load ${name}: ${message(e)}`));
    }
  }

  /**
   * @param {string} name @param {number} version @param {string} description @param {Field[]} fields
   */
  renderForm(name, version, description, fields) {
    /** @type {Map<string, HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement>} */
    const inputs = new Map();
    /** @type {Map<string, HTMLElement>} */
    const notes = new Map();
    const rows = fields.map((f) => {
      const id = `mq-tpl-${name}-${f.name}`;
      /** @type {HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement} */
      let input;
      const shown = f.default === undefined ? "" : String(f.default);
      if (f.kind === "choice") {
        input = h("select", {id, name: f.name}, (f.choices || []).map((c) =>
          h("option", {value: String(c), selected: String(c) === shown}, String(c))));
      } else if (f.kind === "boolean") {
        input = h("input", {id, name: f.name, type: "checkbox", checked: f.default === true});
      } else if (f.kind === "string" && f.multiline) {
        input = h("textarea", {id, name: f.name, rows: 3, value: shown});
      } else {
        const numeric = f.kind === "integer" || f.kind === "number";
        input = h("input", {id, name: f.name, type: numeric ? "number" : "text", value: shown,
          min: f.min, max: f.max, step: numeric ? (f.step ?? (f.kind === "integer" ? 1 : "any")) : undefined,
          placeholder: f.kind === "media" ? "file name, input sha256 or asset" : undefined,
          required: f.required || undefined});
      }
      inputs.set(f.name, input);
      const note = h("span", {class: "mq-hint mq-muted", id: id + "-note"},
        f.description || limitsText(f));
      notes.set(f.name, note);
      input.setAttribute("aria-describedby", id + "-note");
      return h("div", {class: "mq-tpl-field"}, h("label", {for: id}, f.title), input, note);
    });
    const count = h("input", {type: "number", min: 1, max: 10000, value: "1", "aria-label": "count",
      class: "mq-tpl-count"});
    const queue = button({icon: "pi-play", label: "Queue", action: "queue-template", class: "mq-primary",
      onclick: () => whileBusy(queue, async () => {
        /** @type {Record<string, string | boolean>} */
        const raw = {};
        for (const [k, el] of inputs) raw[k] = el instanceof HTMLInputElement && el.type === "checkbox" ? el.checked : el.value;
        const {params, errors} = readParams(fields, raw);
        for (const f of fields) {
          const bad = errors[f.name];
          inputs.get(f.name)?.setAttribute("aria-invalid", String(!!bad));
          const note = notes.get(f.name);
          if (note) note.textContent = bad ? bad : (f.description || limitsText(f));
        }
        if (Object.keys(errors).length) return;
        const n = Math.max(1, Math.min(10000, Math.floor(Number(count.value) || 1)));
        try {
          const answer = await this.ctx.client.templateJobs(name, {params, count: n});
          this.ctx.toast({severity: "success", summary: `Queued ${answer.count ?? answer.jobs.length} job` +
            `${(answer.count ?? answer.jobs.length) === 1 ? "" : "s"} from ${name}`, life: 3000});
          this.loadJobs(name);
        } catch (e) {
          this.ctx.toastError(`Could not queue ${name}`, e);
        }
      })});
    this.jobs = h("ul", {class: "mq-files mq-tpl-jobs", "aria-label": `Jobs of ${name}`});
    replaceChildren(this.detail,
      h("section", {class: "mq-section mq-tpl-form", "aria-label": `Template ${name}`, "data-template": name},
        h("h3", null, `${name} `, h("span", {class: "mq-tag"}, `v${version}`)),
        description ? h("div", {class: "mq-muted"}, description) : null,
        rows.length ? rows : h("div", {class: "mq-muted"}, "This template has no parameters."),
        h("div", {class: "mq-form"}, h("label", null, "Count"), count, queue)),
      h("section", {class: "mq-section"}, h("h4", null, "Recent jobs"), this.jobs));
  }

  /** @param {string} name */
  async loadJobs(name) {
    const ul = this.jobs;
    if (!ul) return;
    try {
      const {jobs} = await this.ctx.client.templateJobList(name);
      if (this.selected !== name) return;
      this.shown = new Set(jobs.map((j) => j.id));
      replaceChildren(ul, jobs.length ? jobs.map((j) => h("li", {"data-job": j.id},
        h("button", {type: "button", class: "mq-btn mq-chip", title: `Open job ${j.id} in the queue`,
          onclick: () => this.o.onJob(j.id)},
        h("span", {class: `mq-pill mq-state-${j.state}`}, STATE_TEXT[j.state] || j.state),
        h("span", {class: "mq-mono"}, j.id.slice(-8))),
        h("span", {class: "mq-muted"}, ` ${formatTime(j.enqueued_at, Date.now())}` +
          (j.template && j.template.params ? ` · ${paramsText(j.template.params)}` : "")))) :
        h("li", {class: "mq-muted"}, "No jobs from this template yet."));
    } catch (e) {
      replaceChildren(ul, h("li", {class: "mq-error-text"}, `Could not load its jobs: ${message(e)}`));
    }
  }

  /** "Save canvas as template": the canvas's widget values, to tick and name. */
  async showSave() {
    const seq = ++this.seq;
    /** @type {Record<string, any>} */
    let prompt;
    try {
      prompt = (await this.ctx.app.graphToPrompt()).output;
    } catch (e) {
      this.ctx.toastError("Could not read the canvas's workflow", e);
      return;
    }
    if (seq !== this.seq) return;
    const found = candidates(prompt);
    const name = h("input", {type: "text", name: "template-name", placeholder: "my_template", "aria-label": "Template name",
      pattern: "[A-Za-z0-9][A-Za-z0-9_.\\-]{0,63}"});
    const description = h("input", {type: "text", name: "template-description", placeholder: "what it makes",
      "aria-label": "Description"});
    /** @type {{c: Candidate, tick: HTMLInputElement, pname: HTMLInputElement}[]} */
    const rows = found.map((c) => ({c,
      tick: h("input", {type: "checkbox", "aria-label": `${c.title} · ${c.input} becomes a parameter`,
        "data-target": `${c.node}.${c.input}`}),
      pname: h("input", {type: "text", value: c.name, "aria-label": `Parameter name for ${c.title} · ${c.input}`}),
    }));
    const error = h("div", {class: "mq-error-text", role: "alert"});
    const save = button({icon: "pi-save", label: "Save template", action: "save-template-confirm", class: "mq-primary",
      onclick: () => whileBusy(save, async () => {
        error.textContent = "";
        const tname = name.value.trim();
        if (!validTemplateName(tname)) {
          name.setAttribute("aria-invalid", "true");
          error.textContent = "A template name is 1 to 64 letters, digits, _ . - (starting with a letter or digit).";
          return;
        }
        name.setAttribute("aria-invalid", "false");
        const chosen = rows.filter((r) => r.tick.checked).map((r) => ({...r.c, name: r.pname.value.trim()}));
        let objectInfo = null;
        try {
          const res = await this.ctx.client.api.fetchApi("/object_info");
          if (res && res.ok) objectInfo = await res.json();
        } catch {
          objectInfo = null;  // the host then knows only the workflow's own values
        }
        const body = templateBody({name: tname, description: description.value.trim(), prompt, chosen, objectInfo});
        try {
          let answer;
          try {
            answer = await this.ctx.client.saveTemplate(body, false);
          } catch (e) {
            if (!(e && /** @type {any} */ (e).status === 409)) throw e;
            if (!(await this.ctx.confirm("Replace the template?",
              `A template named ${tname} exists. Save this as its next version?`))) return;
            answer = await this.ctx.client.saveTemplate(body, true);
          }
          this.ctx.toast({severity: "success", summary: `Saved template ${tname} (v${answer.template.version})`,
            life: 3000});
          await this.load();
          await this.open(tname);
        } catch (e) {
          error.textContent = message(e);
        }
      })});
    replaceChildren(this.detail, h("section", {class: "mq-section mq-tpl-save", "aria-label": "Save canvas as template"},
      h("h3", null, icon("pi-save"), " Save canvas as template"),
      h("div", {class: "mq-tpl-field"}, h("label", null, "Name"), name),
      h("div", {class: "mq-tpl-field"}, h("label", null, "Description"), description),
      h("h4", null, "Parameters: tick the values a user sets"),
      rows.length ? h("ul", {class: "mq-files mq-tpl-candidates"}, rows.map((r) => h("li", null,
        h("label", {class: "mq-line"}, r.tick, `${r.c.title} · ${r.c.input}`,
          h("span", {class: "mq-muted"}, ` = ${short(r.c.value)}`)), r.pname)))
        : h("div", {class: "mq-muted"}, "The canvas's workflow has no widget values."),
      error,
      h("div", {class: "mq-actions"}, save,
        button({icon: "pi-times", label: "Cancel", action: "cancel-save", onclick: () => replaceChildren(this.detail)}))));
    name.focus();
  }
}

/** @param {Field} f */
function limitsText(f) {
  if (f.kind === "integer" || f.kind === "number") {
    if (f.min != null && f.max != null) return `${f.min} … ${f.max}`;
    if (f.min != null) return `at least ${f.min}`;
    if (f.max != null) return `at most ${f.max}`;
  }
  if (f.kind === "media") return "a file name, an input's sha256, or an asset";
  return "";
}

/** @param {Record<string, any>} params */
function paramsText(params) {
  return Object.entries(params).map(([k, v]) => `${k}=${short(v)}`).join(", ");
}

/** @param {any} v */
function short(v) {
  const s = typeof v === "string" ? v : JSON.stringify(v);
  return s.length > 40 ? s.slice(0, 39) + "…" : s;
}

/** @param {unknown} e */
function message(e) {
  return e instanceof Error ? e.message : String(e);
}
