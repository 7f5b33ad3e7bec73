// ComfyMQ's ComfyUI extension: the sidebar panel, the "Queue (MQ)" action-bar button (or, on frontends without
// action-bar buttons for extensions, the same button in the top menu: lib/queue-button.js), the queue command
// with its key (Ctrl+Shift+Enter, see lib/shortcut.js) and menu entry, toasts, and the websocket listeners
// behind them. What this ComfyUI's ComfyMQ is (GET /comfymq/status: lib/status.js) decides where Queue (MQ)
// sends jobs: this ComfyUI's queue, the host's (a worker that knows its host's address forwards them), or
// nowhere (a worker that does not: the buttons are hidden and the command says why).
//
// Only ComfyUI's public surface is used: app, api and app.extensionManager (sidebar tab, toasts, settings,
// commands, dialogs), app.menu's legacy button group for the fallback button, and the LiteGraph global to add a
// Load Image node for "Use as input" (lib/use-as-input.js) when the canvas has none. This is the one module that
// imports ComfyUI's scripts; everything in lib/ and panel/ gets what it needs passed in, and does nothing when
// merely imported (ComfyUI loads every .js file here).

import {app} from "../../scripts/app.js";
import {api} from "../../scripts/api.js";
import {MQClient} from "./lib/client.js";
import {EventHub, JOB, RECONNECTED} from "./lib/events.js";
import {Notifier} from "./lib/notifier.js";
import {enqueueWorkflow, applyPromptValues, graphNodes, graphOf} from "./lib/enqueue.js";
import {jobLabel} from "./lib/model.js";
import {installQueueShortcut} from "./lib/shortcut.js";
import {StatusStore, noQueueReason, queueTarget} from "./lib/status.js";
import {ACTION_CLASS, installQueueButton, showQueueButtons} from "./lib/queue-button.js";
import {useAsInput} from "./lib/use-as-input.js";
import {loadFormState} from "./panel/enqueue-form.js";
import {Panel} from "./panel/panel.js";

/** @typedef {import("./panel/panel.js").SharedContext} SharedContext */
/** @typedef {import("./lib/notifier.js").Toast} Toast */
/** @typedef {import("./lib/images.js").ImageRef} ImageRef */

const TAB_ID = "comfymq";
const QUEUE_COMMAND = "ComfyMQ.QueueWorkflow";
const PANEL_COMMAND = "ComfyMQ.TogglePanel";
const TOKEN_SETTING = "ComfyMQ.Token";
const FINISH_SETTING = "ComfyMQ.FinishToasts";

/** @param {string} id */
function setting(id) {
  try {
    return app.extensionManager?.setting?.get(id);
  } catch {
    return undefined;
  }
}

const QUEUE_TOOLTIP = "Queue in ComfyMQ (Ctrl+Shift+Enter), with the panel's priority and count";

const client = new MQClient(api, () => String(setting(TOKEN_SETTING) || "").trim());
const hub = new EventHub(/** @type {EventTarget} */ (/** @type {unknown} */ (api)));
const status = new StatusStore(client);
/** @type {string | null} the job a toast pointed to, for the panel to select when it next shows the queue */
let focusJob = null;
const notifier = new Notifier(() => app.extensionManager?.toast ?? null, client,
  {finishToasts: () => setting(FINISH_SETTING) !== false, onUnrunnable: (id) => {
    focusJob = panel?.focusJob(id) ? null : id;
  }});
/** @type {Map<string, string>} worker id -> name */
const workerNames = new Map();

/** @param {Toast} t */
function toast(t) {
  try {
    app.extensionManager?.toast?.add(t);
  } catch (e) {
    console.warn("[ComfyMQ]", t.summary, t.detail, e);
  }
}

/** @param {string} summary @param {unknown} e */
function toastError(summary, e) {
  toast({severity: "error", summary, detail: e instanceof Error ? e.message : String(e), life: 8000});
}

/** @param {string} title @param {string} message */
async function confirmDialog(title, message) {
  const dialog = /** @type {any} */ (app.extensionManager)?.dialog;
  if (dialog && typeof dialog.confirm === "function") {
    return (await dialog.confirm({title, message, type: "default"})) === true;
  }
  return window.confirm(message);
}

/**
 * Queues the canvas's workflow where this ComfyUI's Queue (MQ) sends jobs (see the top of this file).
 * @param {import("./lib/enqueue.js").EnqueueOptions} opts
 */
async function enqueue(opts) {
  const s = await status.get();
  const why = noQueueReason(s);
  if (why) {
    toast({severity: "warn", summary: "Queue (MQ) is off on this ComfyUI", detail: why, life: 10000});
    return false;
  }
  try {
    const r = await enqueueWorkflow(app, client, opts);
    notifier.queued(queueTarget(s) === "remote" ? {...r, remote: s?.queue?.host_url || "the host"} : r);
    return true;
  } catch (e) {
    notifier.queueFailed(e);
    return false;
  }
}

/** Loads a job's workflow into a new workflow tab, with the job's own input values (seeds, swept values). */
async function openJob(/** @type {string} */ id) {
  const job = await client.getJob(id);
  const label = jobLabel(job);
  // the id's tail the panel shows for it (it tells the job apart from the listed ones)
  const short = panel?.queue?.shortId(id) || id.slice(-8);
  const name = `${label.name}${label.index != null ? ` #${label.index}` : ""} (job ${short})`;
  let workflow = job.workflow;
  if (typeof workflow === "string") workflow = JSON.parse(workflow);
  if (workflow && typeof workflow === "object") {
    await app.loadGraphData(structuredClone(workflow), true, true, name);
    const changed = applyPromptValues(graphNodes(app), job.prompt);
    if (changed) graphOf(app)?.setDirtyCanvas?.(true, true);
  } else if (job.prompt) {
    app.loadApiJson(/** @type {any} */ (job.prompt), name);
  } else {
    throw new Error("this job has neither a workflow nor a prompt to open");
  }
  toast({severity: "info", summary: `Opened ${name}`, detail: job.workflow ? "" : "rebuilt from its API prompt (no UI workflow was saved)",
    life: 3000});
}

/**
 * "Use as input": a job's image into the canvas's image-loading node, with a toast either way.
 * @param {ImageRef} ref
 */
async function useImageAsInput(ref) {
  const createNode = (/** @type {string} */ type) => /** @type {any} */ (globalThis).LiteGraph?.createNode(type) ?? null;
  try {
    toast(await useAsInput({app, api, client, createNode}, ref));
  } catch (e) {
    toastError(`Could not load ${ref.name} as input`, e);
  }
}

/** @type {SharedContext} */
const shared = {
  app, client, hub, notifier, status, formState: loadFormState(), enqueue, openJob, useAsInput: useImageAsInput,
  toast, toastError,
  confirm: confirmDialog,
  takeFocus: () => {
    const id = focusJob;
    focusJob = null;
    return id;
  },
  workerName: (id) => workerNames.get(id) || id,
  rememberWorker: (w) => {
    if (w && w.id) workerNames.set(w.id, w.name || w.id);
  },
};

/** The command, the key binding and the action-bar button: the panel's priority and count, no sweep. */
function queueFromCommand() {
  return enqueue({priority: shared.formState.priority, count: shared.formState.count}).then(() => {});
}

function togglePanel() {
  return app.extensionManager.command.execute(`Workspace.ToggleSidebarTab.${TAB_ID}`);
}

/** @type {Panel | null} */
let panel = null;

app.registerExtension({
  name: "comfymq.panel",
  commands: [
    {id: QUEUE_COMMAND, label: "Queue workflow in ComfyMQ", menubarLabel: "Queue (MQ)", icon: "pi pi-send",
      tooltip: "Queue the current workflow in ComfyMQ's durable queue", function: queueFromCommand},
    {id: PANEL_COMMAND, label: "Show or hide the ComfyMQ panel", menubarLabel: "Queue panel", icon: "pi pi-server",
      function: togglePanel},
  ],
  menuCommands: [{path: ["Extensions", "ComfyMQ"], commands: [QUEUE_COMMAND, PANEL_COMMAND]}],
  // frontends before 1.32 ignore this: lib/queue-button.js then puts the same button in the top menu
  actionBarButtons: [{icon: "pi pi-send", label: "Queue (MQ)", tooltip: QUEUE_TOOLTIP, class: ACTION_CLASS,
    onClick: () => {
      queueFromCommand();
    }}],
  settings: [
    {id: /** @type {any} */ (TOKEN_SETTING), category: ["ComfyMQ", "Connection", "Token"], name: "Access token",
      tooltip: "The host's COMFYMQ_TOKEN, when it has one: sent with every ComfyMQ request", type: "text",
      defaultValue: "", onChange: () => {
        client.resetAuth();
        hub.resync();
      }},
    {id: /** @type {any} */ (FINISH_SETTING), category: ["ComfyMQ", "Notifications", "Finished"], name: "Toast when a job or batch finishes",
      tooltip: "Failures are always shown; a batch gets one toast when all of it has finished", type: "boolean",
      defaultValue: true},
  ],
  async setup() {
    hub.start();
    // first among the RECONNECTED listeners (they run in the order they subscribed): requests refused for the
    // token may go to the host again before anything reloads (a restarted host may have another token)
    hub.on(RECONNECTED, () => client.resetAuth());
    hub.on(RECONNECTED, () => status.load());
    hub.on(JOB, (d) => notifier.onJob(d));
    hub.on(RECONNECTED, () => notifier.recount());
    status.on((s) => showQueueButtons(document, queueTarget(s) !== null));
    status.load();
    installQueueButton({doc: document, group: /** @type {any} */ (app).menu?.actionsGroup, tooltip: QUEUE_TOOLTIP,
      onClick: () => {
        queueFromCommand();
      }});
    installQueueShortcut(window, {run: () => {
      queueFromCommand();
    }, userBindings: () => setting("Comfy.Keybinding.NewBindings")});
    app.extensionManager.registerSidebarTab({
      id: TAB_ID,
      icon: "pi pi-server",
      title: "ComfyMQ",
      tooltip: "ComfyMQ queue and workers",
      label: "MQ",
      type: "custom",
      render: (el) => {
        panel?.destroy();
        panel = new Panel(shared, el);
      },
      destroy: () => {
        panel?.destroy();
        panel = null;
      },
    });
  },
});
