// A windowed list of fixed-height rows: only the rows in view (plus a margin) are in the DOM, so 10,000 jobs
// cost what 20 do. Rows are keyed (a job id): a row is rebuilt only when its version changes, and focus inside
// a rebuilt row moves to the same control in the new one. One row at a time is in the tab order (roving
// tabindex); arrows, Page Up/Down, Home/End move between rows, Enter/Space activate.

import {h} from "../lib/dom.js";

/**
 * @typedef {{rowHeight: number, label: string, count: () => number, key: (i: number) => string,
 *            version: (i: number) => unknown, render: (i: number) => HTMLElement,
 *            onEndReached?: () => void, onActivate?: (i: number) => void, empty?: () => Node | string,
 *            footer?: () => Node | null}} VirtualListOptions
 */

const OVERSCAN = 6;

export class VirtualList {
  /** @param {VirtualListOptions} o */
  constructor(o) {
    this.o = o;
    this.spacer = h("div", {class: "mq-spacer", role: "presentation"});
    this.el = h("div", {class: "mq-list", role: "list", "aria-label": o.label, tabindex: "0"}, this.spacer);
    /** @type {Map<string, {el: HTMLElement, version: unknown, index: number}>} */
    this.rows = new Map();
    /** @type {string | null} */
    this.activeKey = null;
    this.frame = 0;
    /** @type {HTMLElement | null} */
    this.emptyEl = null;
    /** @type {HTMLElement | null} */
    this.footerEl = null;
    this.onScroll = () => this.schedule();
    this.el.addEventListener("scroll", this.onScroll, {passive: true});
    this.el.addEventListener("keydown", (e) => this.onKey(e));
    this.el.addEventListener("focusin", (e) => {
      const row = /** @type {HTMLElement} */ (e.target).closest?.(".mq-row");
      if (row instanceof HTMLElement && row.dataset.key) this.setActive(row.dataset.key);
    });
    this.resize = new ResizeObserver(() => this.schedule());
    this.resize.observe(this.el);
  }

  destroy() {
    cancelAnimationFrame(this.frame);
    this.resize.disconnect();
    this.el.removeEventListener("scroll", this.onScroll);
    this.rows.clear();
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  /** Renders now (tests and callers that need the DOM current). */
  render() {
    const o = this.o;
    const n = o.count();
    const rh = o.rowHeight;
    const view = this.el.clientHeight || 400;
    const top = this.el.scrollTop;
    const first = Math.max(0, Math.floor(top / rh) - OVERSCAN);
    const last = Math.min(n - 1, Math.ceil((top + view) / rh) + OVERSCAN);
    const footer = o.footer ? o.footer() : null;
    this.spacer.style.height = `${n * rh + (footer ? 40 : 0)}px`;
    this.el.setAttribute("tabindex", n ? "-1" : "0");

    /** @type {Set<string>} */
    const keep = new Set();
    const focused = document.activeElement;
    for (let i = first; i <= last; i++) keep.add(o.key(i));
    // the active row stays even when scrolled away, so focus is never dropped
    const activeIndex = this.activeIndex(n);
    if (activeIndex >= 0) keep.add(o.key(activeIndex));
    else this.activeKey = n ? o.key(Math.min(Math.max(first, 0), n - 1)) : null;

    for (const [key, row] of this.rows) {
      if (!keep.has(key)) {
        if (focused && row.el.contains(focused)) continue;
        row.el.remove();
        this.rows.delete(key);
      }
    }
    for (const key of keep) {
      const i = key === this.activeKey && activeIndex >= 0 ? activeIndex : this.indexOfKeyInWindow(key, first, last);
      if (i < 0) continue;
      const version = o.version(i);
      let row = this.rows.get(key);
      if (!row || row.version !== version) {
        const el = o.render(i);
        el.classList.add("mq-row");
        el.dataset.key = key;
        el.setAttribute("role", "listitem");
        // focusable before it takes the old row's place: restoreFocus must be able to focus it (a div without
        // a tabindex is not, and focus would fall to the body at each update of the focused row's job)
        el.tabIndex = key === this.activeKey ? 0 : -1;
        if (row) {
          const had = focused && row.el.contains(focused) ? /** @type {HTMLElement} */ (focused) : null;
          row.el.replaceWith(el);
          if (had) restoreFocus(had, row.el, el);
        } else {
          this.spacer.appendChild(el);
        }
        row = {el, version, index: -1};
        this.rows.set(key, row);
      }
      if (row.index !== i) {
        row.el.style.top = `${i * rh}px`;
        row.el.setAttribute("aria-posinset", String(i + 1));
        row.index = i;
      }
      row.el.setAttribute("aria-setsize", String(n));
      row.el.tabIndex = key === this.activeKey ? 0 : -1;
    }

    if (!n) {
      if (!this.emptyEl) {
        this.emptyEl = h("div", {class: "mq-empty"});
        this.spacer.appendChild(this.emptyEl);
      }
      this.emptyEl.replaceChildren(o.empty ? o.empty() : "Nothing here");
    } else if (this.emptyEl) {
      this.emptyEl.remove();
      this.emptyEl = null;
    }
    if (footer) {
      if (!this.footerEl) {
        this.footerEl = h("div", {class: "mq-more"});
        this.spacer.appendChild(this.footerEl);
      }
      this.footerEl.style.top = `${n * rh}px`;
      this.footerEl.replaceChildren(footer);
    } else if (this.footerEl) {
      this.footerEl.remove();
      this.footerEl = null;
    }
    if (o.onEndReached && n && last >= n - 1 - OVERSCAN * 2) o.onEndReached();
  }

  /** @param {string} key @param {number} first @param {number} last */
  indexOfKeyInWindow(key, first, last) {
    for (let i = first; i <= last; i++) if (this.o.key(i) === key) return i;
    return -1;
  }

  /** @param {number} n */
  activeIndex(n) {
    if (this.activeKey == null) return -1;
    const row = this.rows.get(this.activeKey);
    if (row && row.index >= 0 && row.index < n && this.o.key(row.index) === this.activeKey) return row.index;
    for (let i = 0; i < n; i++) if (this.o.key(i) === this.activeKey) return i;
    return -1;
  }

  /** @param {string} key */
  setActive(key) {
    if (this.activeKey === key) return;
    const prev = this.activeKey != null ? this.rows.get(this.activeKey) : null;
    if (prev) prev.el.tabIndex = -1;
    this.activeKey = key;
    const row = this.rows.get(key);
    if (row) row.el.tabIndex = 0;
  }

  /** Scrolls row i into view, makes it the active row and focuses it. @param {number} i */
  focusIndex(i) {
    const n = this.o.count();
    if (!n) return;
    i = Math.max(0, Math.min(n - 1, i));
    const rh = this.o.rowHeight;
    const view = this.el.clientHeight || 400;
    if (i * rh < this.el.scrollTop) this.el.scrollTop = i * rh;
    else if ((i + 1) * rh > this.el.scrollTop + view) this.el.scrollTop = (i + 1) * rh - view;
    this.setActive(this.o.key(i));
    this.render();
    this.rows.get(this.o.key(i))?.el.focus({preventScroll: true});
  }

  /** @param {KeyboardEvent} e */
  onKey(e) {
    const n = this.o.count();
    if (!n) return;
    const target = /** @type {HTMLElement} */ (e.target);
    const onRow = target.classList.contains("mq-row") || target === this.el;
    const cur = Math.max(0, this.activeIndex(n));
    const page = Math.max(1, Math.floor((this.el.clientHeight || 400) / this.o.rowHeight) - 1);
    /** @type {number | null} */
    let next = null;
    switch (e.key) {
      case "ArrowDown": next = cur + 1; break;
      case "ArrowUp": next = cur - 1; break;
      case "PageDown": next = cur + page; break;
      case "PageUp": next = cur - page; break;
      case "Home": if (onRow) next = 0; break;
      case "End": if (onRow) next = n - 1; break;
      case "Enter":
      case " ":
        if (onRow && target !== this.el) {
          e.preventDefault();
          this.o.onActivate?.(cur);
        }
        return;
      default:
        return;
    }
    if (next == null) return;
    e.preventDefault();
    e.stopPropagation();
    this.focusIndex(next);
  }
}

/**
 * After a row was rebuilt: focus the control of the new row that matches the one focused in the old row.
 * @param {HTMLElement} had
 * @param {HTMLElement} oldRow
 * @param {HTMLElement} newRow
 */
function restoreFocus(had, oldRow, newRow) {
  if (had === oldRow) {
    newRow.focus({preventScroll: true});
    return;
  }
  const action = had.dataset.action;
  const match = action ? newRow.querySelector(`[data-action="${CSS.escape(action)}"]`) : null;
  (match instanceof HTMLElement && !(/** @type {any} */ (match).disabled) ? match : newRow).focus({preventScroll: true});
}
