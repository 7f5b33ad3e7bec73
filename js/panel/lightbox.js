// A full-size image viewer over the page: arrows step through a job's images, Escape or a click outside
// closes it, focus returns to where it was. "Use as input" acts on the image shown, then closes the viewer (what
// it did shows on the canvas and in a toast, which the viewer would cover).

import {h, icon, whileBusy} from "../lib/dom.js";

/** @typedef {import("../lib/images.js").ImageRef} ImageRef */
/** @typedef {import("../lib/images.js").ImageLoader} ImageLoader */

/**
 * @param {ImageRef[]} images
 * @param {number} start
 * @param {ImageLoader} loader
 * @param {string} title
 * @param {{onUse?: (ref: ImageRef) => Promise<void>}} [o]  `onUse`: "Use as input" on an image
 * @returns {() => void} closes it
 */
export function openLightbox(images, start, loader, title, o = {}) {
  if (!images.length) return () => {};
  const opener = document.activeElement instanceof HTMLElement ? document.activeElement : null;
  let index = Math.max(0, Math.min(images.length - 1, start));
  const img = h("img", {alt: ""});
  const caption = h("span");
  const link = h("a", {target: "_blank", rel: "noopener", title: "Open the file in a new tab"}, icon("pi-external-link"), " Original");
  const prev = h("button", {type: "button", "aria-label": "Previous image", onclick: () => go(-1)}, icon("pi-chevron-left"));
  const next = h("button", {type: "button", "aria-label": "Next image", onclick: () => go(1)}, icon("pi-chevron-right"));
  const close = h("button", {type: "button", "aria-label": "Close", onclick: () => done()}, icon("pi-times"), " Close");
  const use = h("button", {type: "button", "data-action": "use-as-input",
    title: "Load this image into the canvas's Load Image node", onclick: () => whileBusy(use, async () => {
      await o.onUse?.(images[index]);
      done();
    })}, icon("pi-sign-in"), " Use as input");
  const bar = h("div", {class: "mq-lb-bar"}, images.length > 1 ? prev : null, caption, images.length > 1 ? next : null,
    o.onUse ? use : null, link, close);
  const root = h("div", {class: "comfymq-lightbox", role: "dialog", "aria-modal": "true", "aria-label": title}, img, bar);

  function show() {
    const ref = images[index];
    loader.show(img, ref);
    img.alt = ref.name;
    loader.link(/** @type {HTMLAnchorElement} */ (link), ref);
    caption.textContent = `${title} · ${ref.name}` + (images.length > 1 ? ` (${index + 1}/${images.length})` : "");
  }
  /** @param {number} d */
  function go(d) {
    index = (index + d + images.length) % images.length;
    show();
  }
  /** @param {KeyboardEvent} e */
  function onKey(e) {
    if (e.key === "Escape") done();
    else if (e.key === "ArrowRight") go(1);
    else if (e.key === "ArrowLeft") go(-1);
    else if (e.key === "Tab") {
      const items = /** @type {HTMLElement[]} */ ([...root.querySelectorAll("button, a")]);
      const i = items.indexOf(/** @type {HTMLElement} */ (document.activeElement));
      const to = e.shiftKey ? (i <= 0 ? items.length - 1 : i - 1) : (i + 1) % items.length;
      items[to].focus();
    } else return;
    e.preventDefault();
    e.stopPropagation();
  }
  let closed = false;
  function done() {
    if (closed) return;
    closed = true;
    root.remove();
    document.removeEventListener("keydown", onKey, true);
    opener?.focus({preventScroll: true});
  }
  root.addEventListener("click", (e) => {
    if (e.target === root) done();
  });
  document.addEventListener("keydown", onKey, true);
  document.body.appendChild(root);
  show();
  close.focus();
  return done;
}
