// The sidebar tab's content: header (connection, tabs Queue / Workers), the queue form, and the two views.
// Built by the tab's render() and torn down by its destroy(): every listener and timer lives between the two.

import {h, icon} from "../lib/dom.js";
import {ImageLoader} from "../lib/images.js";
import {RECONNECTED, RECONNECTING} from "../lib/events.js";
import {ensureStyles} from "./styles.js";
import {EnqueueForm} from "./enqueue-form.js";
import {QueueView} from "./queue-view.js";
import {WorkersView} from "./workers-view.js";

/** @typedef {import("../lib/client.js").MQClient} MQClient */
/** @typedef {import("../lib/events.js").EventHub} EventHub */
/** @typedef {import("../lib/notifier.js").Notifier} Notifier */
/** @typedef {import("../lib/notifier.js").Toast} Toast */
/** @typedef {import("../lib/enqueue.js").AppLike} AppLike */
/** @typedef {import("../lib/enqueue.js").EnqueueOptions} EnqueueOptions */
/** @typedef {import("../lib/model.js").Worker} Worker */
/** @typedef {import("../lib/model.js").Job} Job */
/** @typedef {import("./enqueue-form.js").FormState} FormState */

/**
 * What the extension shares with the panel (lives as long as the page).
 * @typedef {{app: AppLike, client: MQClient, hub: EventHub, notifier: Notifier, formState: FormState,
 *            enqueue: (o: EnqueueOptions) => Promise<boolean>, openJob: (id: string) => Promise<void>,
 *            toast: (t: Toast) => void, toastError: (summary: string, e: unknown) => void,
 *            confirm: (title: string, message: string) => Promise<boolean>, workerName: (id: string) => string,
 *            rememberWorker: (w: Worker) => void}} SharedContext
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
    const ctx = {...shared, images, findJob: (id) => this.queue.list.byId.get(id)};
    this.ctx = ctx;
    this.queue = new QueueView(ctx);
    this.workers = new WorkersView(ctx, {
      onCapabilities: () => this.queue.forgetWaiting(),
      onCount: (online) => {
        this.workersCount.textContent = String(online);
      },
    });
    this.form = new EnqueueForm({app: shared.app, state: shared.formState, submit: (o) => shared.enqueue(o)});

    this.conn = h("span", {class: "mq-conn", role: "img", "aria-label": "connected", title: "Connected to ComfyUI"});
    this.workersCount = h("span", {class: "mq-tag"}, "…");
    this.tabQueue = h("button", {type: "button", class: "mq-tab", role: "tab", id: "comfymq-tab-queue",
      "aria-selected": "true", onclick: () => this.show("queue")}, icon("pi-list"), "Queue");
    this.tabWorkers = h("button", {type: "button", class: "mq-tab", role: "tab", id: "comfymq-tab-workers",
      "aria-selected": "false", tabindex: "-1", onclick: () => this.show("workers")}, icon("pi-server"), "Workers",
    this.workersCount);
    const tabs = h("div", {class: "mq-tabs", role: "tablist", "aria-label": "ComfyMQ views"}, this.tabQueue, this.tabWorkers);
    tabs.addEventListener("keydown", (e) => {
      if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
        e.preventDefault();
        const next = this.tabQueue.getAttribute("aria-selected") === "true" ? "workers" : "queue";
        this.show(next);
        (next === "queue" ? this.tabQueue : this.tabWorkers).focus();
      }
    });
    this.root = h("div", {class: "comfymq-panel", "data-testid": "comfymq-panel"},
      h("div", {class: "mq-header"}, h("div", {class: "mq-title"}, this.conn, "ComfyMQ")),
      tabs,
      this.form.el,
      this.queue.el,
      this.workers.el);
    /** @type {(() => void)[]} */
    this.offs = [
      shared.hub.on(RECONNECTING, () => this.setConnected(false)),
      shared.hub.on(RECONNECTED, () => this.setConnected(true)),
    ];
    // the tab's element has no height of its own; the list needs one to scroll (and to window its rows)
    container.style.height = "100%";
    container.replaceChildren(this.root);
    this.setConnected(shared.hub.connected);
    this.queue.start();
    this.workers.start();
  }

  /** @param {boolean} ok */
  setConnected(ok) {
    this.conn.classList.toggle("mq-off", !ok);
    this.conn.setAttribute("aria-label", ok ? "connected" : "reconnecting");
    this.conn.title = ok ? "Connected to ComfyUI" : "Connection to ComfyUI lost: reconnecting…";
  }

  /** @param {"queue" | "workers"} which */
  show(which) {
    const q = which === "queue";
    this.tabQueue.setAttribute("aria-selected", String(q));
    this.tabWorkers.setAttribute("aria-selected", String(!q));
    this.tabQueue.tabIndex = q ? 0 : -1;
    this.tabWorkers.tabIndex = q ? -1 : 0;
    this.queue.el.hidden = !q;
    this.form.el.hidden = !q;
    this.workers.setVisible(!q);
    if (q) this.queue.vlist.schedule();
  }

  destroy() {
    for (const off of this.offs) off();
    this.offs = [];
    this.queue.stop();
    this.workers.stop();
    this.ctx.images.dispose();
    this.root.remove();
  }
}
