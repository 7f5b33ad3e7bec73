// The "Queue (MQ)" button on frontends without extension action-bar buttons (`actionBarButtons` came in frontend
// 1.32; ComfyUI v0.3.64 pins 1.27.10), and hiding either button where Queue (MQ) cannot queue.
//
// The fallback goes into the top menu's legacy button group (app.menu.actionsGroup: kept by the frontend for
// extensions that attach buttons; in 1.27 it sits in the top bar beside the Run button). It is feature-detected,
// never decided by version numbers: added only once the frontend has had its time to render the extension's
// action-bar button (class ACTION_CLASS) and has not, and taken away if that button turns up later. So there is
// at most one Queue (MQ) button. Hiding is a rule on the document (HIDDEN_ATTR on <html>), which covers the
// action-bar button too: the frontend renders that one, and may render it again at any time.

export const ACTION_CLASS = "comfymq-queue-button";
export const FALLBACK_CLASS = "comfymq-queue-fallback";
const HIDDEN_ATTR = "data-comfymq-queue-off";
const STYLE_ID = "comfymq-queue-button-styles";
const CSS = `
html[${HIDDEN_ATTR}] .${ACTION_CLASS}, html[${HIDDEN_ATTR}] .${FALLBACK_CLASS} { display: none !important; }
.${FALLBACK_CLASS} { display: inline-flex; align-items: center; gap: 6px; white-space: nowrap; }
.${FALLBACK_CLASS} .pi { font-size: 12px; }
`;
const SETTLE_MS = 2000;   // how long the frontend gets to render the action-bar button
const WATCH_MS = 30000;   // how long a late action-bar button is watched for once the fallback is in

/**
 * The legacy button group (a ComfyButtonGroup: append() and remove() take an element too).
 * @typedef {{append(el: any): void, remove(el: any): void}} ButtonGroupLike
 */

/** @param {Document} doc */
function ensureStyles(doc) {
  if (doc.getElementById(STYLE_ID)) return;
  const style = doc.createElement("style");
  style.id = STYLE_ID;
  style.textContent = CSS;
  doc.head.append(style);
}

/**
 * Shows or hides every Queue (MQ) button (a worker that knows no host address hides it).
 * @param {Document} doc
 * @param {boolean} shown
 */
export function showQueueButtons(doc, shown) {
  ensureStyles(doc);
  doc.documentElement.toggleAttribute(HIDDEN_ATTR, !shown);
}

/**
 * Adds the fallback button when the action-bar button does not appear.
 * @param {{doc: Document, group: ButtonGroupLike | null | undefined, onClick: () => void, tooltip: string,
 *          settleMs?: number, watchMs?: number}} o
 * @returns {{dispose(): void, done: Promise<"action-bar" | "fallback" | "none">}}
 *   done: which button the page ended with ("none": neither, the frontend has no group to put one in)
 */
export function installQueueButton(o) {
  const {doc} = o;
  ensureStyles(doc);
  /** @type {HTMLButtonElement | null} */
  let fallback = null;
  /** @type {MutationObserver | null} */
  let observer = null;
  /** @type {ReturnType<typeof setTimeout> | null} */
  let timer = null;
  let disposed = false;
  const hasActionButton = () => !!doc.querySelector(`.${ACTION_CLASS}`);

  const removeFallback = () => {
    if (!fallback) return;
    try {
      o.group?.remove(fallback);
    } catch {
      // the group is the frontend's: if it cannot take it out, the element goes anyway
    }
    fallback.remove();
    fallback = null;
  };

  const stopWatching = () => {
    observer?.disconnect();
    observer = null;
    if (timer) clearTimeout(timer);
    timer = null;
  };

  const addFallback = () => {
    if (!o.group || typeof o.group.append !== "function") return false;
    const el = doc.createElement("button");
    el.type = "button";
    el.className = `comfyui-button ${FALLBACK_CLASS}`;
    el.title = o.tooltip;
    el.setAttribute("aria-label", "Queue (MQ)");
    const ic = doc.createElement("i");
    ic.className = "pi pi-send";
    ic.setAttribute("aria-hidden", "true");
    const text = doc.createElement("span");
    text.textContent = "Queue (MQ)";
    el.append(ic, text);
    el.addEventListener("click", () => o.onClick());
    o.group.append(el);
    fallback = el;
    // a frontend that renders the action-bar button late: it wins, the fallback goes
    observer = new MutationObserver(() => {
      if (hasActionButton()) {
        removeFallback();
        stopWatching();
      }
    });
    observer.observe(doc.body, {childList: true, subtree: true});
    timer = setTimeout(stopWatching, o.watchMs ?? WATCH_MS);
    return true;
  };

  const done = (async () => {
    const until = Date.now() + (o.settleMs ?? SETTLE_MS);
    while (Date.now() < until) {
      if (disposed) return "none";
      if (hasActionButton()) return "action-bar";
      await new Promise((r) => setTimeout(r, 100));
    }
    if (disposed) return "none";
    if (hasActionButton()) return "action-bar";
    return addFallback() ? "fallback" : "none";
  })();

  return {
    done: /** @type {Promise<"action-bar" | "fallback" | "none">} */ (done),
    dispose() {
      disposed = true;
      stopWatching();
      removeFallback();
    },
  };
}
