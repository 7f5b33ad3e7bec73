// The sidebar tab's content: header (connection), then what this ComfyUI's role calls for, decided by GET
// /comfymq/status (lib/status.js): a ComfyUI that hosts the queue (or an older host without that route) gets the
// tabs Queue / Workers / Templates, the queue form and the three views; a worker gets its worker card (worker-card.js), with
// the queue form when it can forward jobs to its host. Nothing asks the host for the queue before the role is
// known (a worker refuses every queue route). Built by the tab's render() and torn down by its destroy(): every
// listener and timer lives between the two.

import {h, icon} from "../lib/dom.js";
import {ImageLoader} from "../lib/images.js";
import {RECONNECTED, RECONNECTING} from "../lib/events.js";
import {isWorkerRole, queueTarget} from "../lib/status.js";
import {ensureStyles} from "./styles.js";
import {EnqueueForm} from "./enqueue-form.js";
import {QueueView} from "./queue-view.js";
import {WorkersView} from "./workers-view.js";
import {TemplatesView} from "./templates-view.js";
import {WorkerCard} from "./worker-card.js";

/** @typedef {import("../lib/client.js").MQClient} MQClient */
/** @typedef {import("../lib/client.js").Status} Status */
/** @typedef {import("../lib/events.js").EventHub} EventHub */
/** @typedef {import("../lib/notifier.js").Notifier} Notifier */
/** @typedef {import("../lib/notifier.js").Toast} Toast */
/** @typedef {import("../lib/status.js").StatusStore} StatusStore */
/** @typedef {import("../lib/enqueue.js").AppLike} AppLike */
/** @typedef {import("../lib/enqueue.js").EnqueueOptions} EnqueueOptions */
/** @typedef {import("../lib/model.js").Worker} Worker */
/** @typedef {import("../lib/model.js").Job} Job */
/** @typedef {import("../lib/images.js").ImageRef} ImageRef */
/** @typedef {import("./enqueue-form.js").FormState} FormState */

/**
 * What the extension shares with the panel (lives as long as the page). `takeFocus` hands over, once, the job a
 * toast pointed the user to (no worker can run it yet), or null. `useAsInput` loads a job's image into the
 * canvas's image-loading node (lib/use-as-input.js) and toasts how it went; it never rejects.
 * @typedef {{app: AppLike, client: MQClient, hub: EventHub, notifier: Notifier, status: StatusStore,
 *            formState: FormState, enqueue: (o: EnqueueOptions) => Promise<boolean>,
 *            openJob: (id: string) => Promise<void>, useAsInput: (ref: ImageRef) => Promise<void>,
 *            toast: (t: Toast) => void,
 *            toastError: (summary: string, e: unknown) => void, confirm: (title: string, message: string) => Promise<boolean>,
 *            workerName: (id: string) => string, rememberWorker: (w: Worker) => void,
 *            takeFocus: () => string | null}} SharedContext
 */
/**
 * What the panel's views get: the shared context plus what lives as long as the tab is open.
 * @typedef {SharedContext & {images: ImageLoader, findJob: (id: string) => Job | undefined}} PanelContext
 */

export class Panel {
  /**
   * @param {SharedContext} shared
   * @param {HTMLElement} container  the sidebar tab's element
   */
  constructor(shared, container) {
    ensureStyles(container.ownerDocument);
    this.container = container;
    const images = new ImageLoader(shared.client);
    /** @type {PanelContext} */
    const ctx = {...shared, images, findJob: (id) => this.queue?.list.byId.get(id)};
    this.ctx = ctx;
    /** @type {"queue" | "worker" | null} what the body shows (null: the role is not known yet) */
    this.mode = null;
    /** @type {QueueView | null} */
    this.queue = null;
    /** @type {WorkersView | null} */
    this.workers = null;
    /** @type {EnqueueForm | null} */
    this.form = null;
    /** @type {WorkerCard | null} */
    this.card = null;
    /** @type {HTMLButtonElement | null} */
    this.tabQueue = null;
    /** @type {HTMLButtonElement | null} */
    this.tabWorkers = null;
    /** @type {TemplatesView | null} */
    this.templates = null;
    /** @type {HTMLButtonElement | null} */
    this.tabTemplates = null;

    this.conn = h("span", {class: "mq-conn", role: "img", "aria-label": "connected", title: "Connected to ComfyUI"});
    this.header = h("div", {class: "mq-header"}, h("div", {class: "mq-title"}, this.conn, "ComfyMQ"));
    this.root = h("div", {class: "comfymq-panel", "data-testid": "comfymq-panel"}, this.header,
      h("div", {class: "mq-empty", role: "status"}, "Loading…"));
    /** @type {(() => void)[]} */
    this.offs = [
      shared.hub.on(RECONNECTING, () => this.setConnected(false)),
      shared.hub.on(RECONNECTED, () => this.setConnected(true)),
      shared.status.on((s) => this.applyStatus(s)),
    ];
    // the tab's element has no height of its own; the list needs one to scroll (and to window its rows)
    container.style.height = "100%";
    container.replaceChildren(this.root);
    this.setConnected(shared.hub.connected);
    if (shared.status.current !== undefined) this.applyStatus(shared.status.current);
    else shared.status.load();
  }

  /**
   * Shows what the role calls for; a change of role (known late: a token entered, a restart) rebuilds the body.
   * @param {Status | null} s
   */
  applyStatus(s) {
    const mode = isWorkerRole(s) ? "worker" : "queue";
    if (mode !== this.mode) {
      this.stopBody();
      this.mode = mode;
      if (mode === "queue") this.startQueue();
      else this.startWorker();
    }
    if (mode === "worker" && s) {
      /** @type {WorkerCard} */ (this.card).render(s);
      /** @type {EnqueueForm} */ (this.form).el.hidden = queueTarget(s) !== "remote";
    }
  }

  startQueue() {
    const ctx = this.ctx;
    const queue = new QueueView(ctx);
    this.queue = queue;
    const workersCount = h("span", {class: "mq-tag"}, "…");
    this.workers = new WorkersView(ctx, {
      onCapabilities: () => queue.forgetWaiting(),
      onCount: (online) => {
        workersCount.textContent = String(online);
      },
    });
    this.form = new EnqueueForm({app: ctx.app, state: ctx.formState, submit: (o) => ctx.enqueue(o)});
    this.tabQueue = h("button", {type: "button", class: "mq-tab", role: "tab", id: "comfymq-tab-queue",
      "aria-selected": "true", onclick: () => this.show("queue")}, icon("pi-list"), "Queue");
    this.tabWorkers = h("button", {type: "button", class: "mq-tab", role: "tab", id: "comfymq-tab-workers",
      "aria-selected": "false", tabindex: "-1", onclick: () => this.show("workers")}, icon("pi-server"), "Workers",
    workersCount);
    this.templates = new TemplatesView(ctx, {onJob: (id) => this.focusJob(id)});
    this.tabTemplates = h("button", {type: "button", class: "mq-tab", role: "tab", id: "comfymq-tab-templates",
      "aria-selected": "false", tabindex: "-1", onclick: () => this.show("templates")}, icon("pi-clone"), "Templates");
    const tabs = h("div", {class: "mq-tabs", role: "tablist", "aria-label": "ComfyMQ views"}, this.tabQueue, this.tabWorkers,
      this.tabTemplates);
    /** @type {("queue" | "workers" | "templates")[]} */
    const order = ["queue", "workers", "templates"];
    tabs.addEventListener("keydown", (e) => {
      if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
        e.preventDefault();
        const tabsNow = [this.tabQueue, this.tabWorkers, this.tabTemplates];
        const at = Math.max(0, tabsNow.findIndex((t) => t?.getAttribute("aria-selected") === "true"));
        const next = (at + (e.key === "ArrowRight" ? 1 : order.length - 1)) % order.length;
        this.show(order[next]);
        tabsNow[next]?.focus();
      }
    });
    this.root.replaceChildren(this.header, tabs, this.form.el, queue.el, this.workers.el, this.templates.el);
    queue.start();
    this.workers.start();
    const focus = ctx.takeFocus();
    if (focus) queue.focus(focus);
  }

  startWorker() {
    const shared = this.ctx;
    this.card = new WorkerCard({status: shared.status, doc: this.container.ownerDocument, farm: shared});
    this.form = new EnqueueForm({app: shared.app, state: shared.formState, submit: (o) => shared.enqueue(o)});
    this.form.el.hidden = true;
    this.root.replaceChildren(this.header, this.form.el, this.card.el);
    this.card.start();
  }

  /** Stops the views of the body shown now. */
  stopBody() {
    this.queue?.stop();
    this.workers?.stop();
    this.templates?.stop();
    this.card?.stop();
    this.queue = null;
    this.workers = null;
    this.card = null;
    this.form = null;
    this.tabQueue = null;
    this.tabWorkers = null;
    this.templates = null;
    this.tabTemplates = null;
  }

  /**
   * Points the panel at a job (a toast's "no worker can run it yet"): shown selected in the queue.
   * @param {string} id
   * @returns {boolean} whether the panel could (it shows the queue)
   */
  focusJob(id) {
    if (!this.queue) return false;
    this.show("queue");
    this.queue.focus(id);
    return true;
  }

  /** @param {boolean} ok */
  setConnected(ok) {
    this.conn.classList.toggle("mq-off", !ok);
    this.conn.setAttribute("aria-label", ok ? "connected" : "reconnecting");
    this.conn.title = ok ? "Connected to ComfyUI" : "Connection to ComfyUI lost: reconnecting…";
  }

  /** @param {"queue" | "workers" | "templates"} which */
  show(which) {
    if (!this.queue || !this.workers || !this.templates || !this.form || !this.tabQueue || !this.tabWorkers ||
        !this.tabTemplates) return;
    const q = which === "queue";
    for (const [tab, mine] of /** @type {[HTMLButtonElement, boolean][]} */ ([[this.tabQueue, q],
      [this.tabWorkers, which === "workers"], [this.tabTemplates, which === "templates"]])) {
      tab.setAttribute("aria-selected", String(mine));
      tab.tabIndex = mine ? 0 : -1;
    }
    this.queue.el.hidden = !q;
    this.form.el.hidden = !q;
    this.workers.setVisible(which === "workers");
    this.templates.setVisible(which === "templates");
    if (q) this.queue.vlist.schedule();
  }

  destroy() {
    for (const off of this.offs) off();
    this.offs = [];
    this.stopBody();
    this.ctx.images.dispose();
    this.root.remove();
  }
}
