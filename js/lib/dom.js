// A tiny element builder: h("button", {class: "x", onclick: fn, "aria-label": "Cancel"}, "text", child).
// Text always goes in as text nodes: job data (names, errors) never becomes markup.

/** @typedef {Node | string | number | null | undefined | false} Child */
/** @typedef {Child | Array<Child | Child[] | Child[][]>} Children */

const PROPS = new Set(["value", "checked", "disabled", "hidden", "selected", "indeterminate", "tabIndex"]);

/**
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, any> | null} [props]
 * @param {...Children} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) {
    for (const [key, value] of Object.entries(props)) {
      if (value == null || value === false) continue;
      if (key === "class") el.className = String(value);
      else if (key === "style" && typeof value === "object") Object.assign(el.style, value);
      else if (key === "dataset") Object.assign(el.dataset, value);
      else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
      else if (PROPS.has(key)) /** @type {any} */ (el)[key] = value;
      else el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

/**
 * @param {Element} el
 * @param {Children[]} children
 */
export function append(el, children) {
  for (const c of /** @type {Child[]} */ (children.flat(Infinity))) {
    if (c == null || c === false) continue;
    el.append(typeof c === "object" ? /** @type {Node} */ (c) : String(c));
  }
}

/**
 * Replaces an element's children.
 * @param {Element} el
 * @param {...Children} children
 */
export function replaceChildren(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/**
 * A PrimeIcons icon (shipped with ComfyUI's frontend), hidden from screen readers.
 * @param {string} name e.g. "pi-refresh"
 */
export function icon(name) {
  return h("i", {class: `pi ${name}`, "aria-hidden": "true"});
}

/**
 * A button with an icon and a text or an aria-label (icon-only buttons get a tooltip too).
 * @param {{icon?: string, label?: string, title?: string, class?: string, onclick?: (e: MouseEvent) => void,
 *          action?: string, disabled?: boolean}} o
 */
export function button(o) {
  const iconOnly = !o.label;
  return h("button", {
    type: "button",
    class: "mq-btn" + (iconOnly ? " mq-icon-btn" : "") + (o.class ? " " + o.class : ""),
    title: o.title || undefined,
    "aria-label": iconOnly ? o.title : undefined,
    dataset: o.action ? {action: o.action} : undefined,
    disabled: o.disabled,
    onclick: o.onclick,
  }, o.icon ? icon(o.icon) : null, o.label ? h("span", null, o.label) : null);
}

/**
 * Runs a button's action: the button stays disabled, and its icon spins, until the action settles (a second
 * click meanwhile does nothing).
 * @param {HTMLButtonElement} btn
 * @param {() => Promise<unknown>} run
 */
export async function whileBusy(btn, run) {
  if (btn.disabled) return;
  const ic = btn.querySelector("i.pi");
  const was = ic ? ic.className : "";
  btn.disabled = true;
  btn.setAttribute("aria-busy", "true");
  if (ic) ic.className = "pi pi-spin pi-spinner";
  try {
    await run();
  } finally {
    btn.disabled = false;
    btn.removeAttribute("aria-busy");
    if (ic) ic.className = was;
  }
}
