// One set of listeners on ComfyUI's api for ComfyMQ's websocket events, fanned out to subscribers that come
// and go (the panel subscribes while its tab is open). Listening early also keeps ComfyUI from warning about
// unknown message types.

export const JOB = "comfymq.job";
export const WORKER = "comfymq.worker";
export const STATS = "comfymq.stats";
export const QUEUE = "comfymq.queue";
export const RECONNECTED = "reconnected";
export const RECONNECTING = "reconnecting";
const TYPES = [JOB, WORKER, STATS, QUEUE, RECONNECTED, RECONNECTING];

/** @typedef {(detail: any) => void} Handler */

export class EventHub {
  /** @param {EventTarget} api  ComfyUI's api (an EventTarget that dispatches CustomEvents) */
  constructor(api) {
    this.api = api;
    /** @type {Map<string, Set<Handler>>} */
    this.handlers = new Map();
    /** @type {((e: Event) => void) | null} */
    this.listener = null;
    this.connected = true;
  }

  start() {
    if (this.listener) return;
    this.listener = (e) => {
      if (e.type === RECONNECTING) this.connected = false;
      if (e.type === RECONNECTED) this.connected = true;
      this.fire(e.type, /** @type {CustomEvent} */ (e).detail);
    };
    for (const t of TYPES) this.api.addEventListener(t, this.listener);
  }

  /**
   * Tells every listener of RECONNECTED to reload, without a websocket event: what changed is how we reach the
   * host (e.g. the access token in the settings).
   */
  resync() {
    this.fire(RECONNECTED, undefined);
  }

  /** @param {string} type @param {unknown} detail */
  fire(type, detail) {
    for (const fn of [...(this.handlers.get(type) || [])]) {
      try {
        fn(detail);
      } catch (err) {
        console.error(`[ComfyMQ] ${type} handler failed`, err);
      }
    }
  }

  stop() {
    if (!this.listener) return;
    for (const t of TYPES) this.api.removeEventListener(t, this.listener);
    this.listener = null;
  }

  /**
   * @param {string} type
   * @param {Handler} fn
   * @returns {() => void} unsubscribes
   */
  on(type, fn) {
    let set = this.handlers.get(type);
    if (!set) this.handlers.set(type, (set = new Set()));
    set.add(fn);
    return () => {
      set.delete(fn);
    };
  }
}
