// What this ComfyUI's ComfyMQ is (GET /comfymq/status): its role, its worker's link to the host, and where
// "Queue (MQ)" sends jobs. One store for the page: the button, the command and the panel read it; the panel's
// worker card asks for it again every few seconds while it is shown.

/** @typedef {import("./client.js").MQClient} MQClient */
/** @typedef {import("./client.js").Status} Status */

/**
 * What is known: undefined until the first answer; null when the host is older than the route (it then hosts the
 * queue, as before) or the question failed (refused, unavailable: the queue view says why); else the answer.
 * @typedef {Status | null | undefined} Known
 */

export class StatusStore {
  /** @param {Pick<MQClient, "status">} client */
  constructor(client) {
    this.client = client;
    /** @type {Known} */
    this.current = undefined;
    /** @type {string | null} why the last question failed, when it did */
    this.error = null;
    /** @type {Set<(s: Status | null) => void>} */
    this.listeners = new Set();
    /** @type {Promise<Status | null> | null} */
    this.inFlight = null;
  }

  /**
   * Asks the host again; concurrent callers share one request. Never rejects.
   * @returns {Promise<Status | null>}
   */
  load() {
    if (this.inFlight) return this.inFlight;
    this.inFlight = (async () => {
      /** @type {Status | null} */
      let s = null;
      try {
        s = await this.client.status();
        this.error = null;
      } catch (e) {
        this.error = e instanceof Error ? e.message : String(e);
        // a worker stays a worker while its status cannot be read for a moment (the card says why)
        if (this.current && this.current.role === "worker") s = this.current;
      } finally {
        this.inFlight = null;
      }
      this.current = s;
      for (const fn of [...this.listeners]) {
        try {
          fn(s);
        } catch (err) {
          console.error("[ComfyMQ] status listener failed", err);
        }
      }
      return s;
    })();
    return this.inFlight;
  }

  /** The status, asked for once if it is not known yet. @returns {Promise<Status | null>} */
  async get() {
    return this.current !== undefined ? this.current : this.load();
  }

  /**
   * Calls fn after every answer (not with what is known now).
   * @param {(s: Status | null) => void} fn
   * @returns {() => void} unsubscribes
   */
  on(fn) {
    this.listeners.add(fn);
    return () => {
      this.listeners.delete(fn);
    };
  }
}

/** Whether this ComfyUI runs ComfyMQ as a worker only (no queue here). @param {Known} s */
export function isWorkerRole(s) {
  return !!s && s.role === "worker";
}

/**
 * Where "Queue (MQ)" sends jobs: "local" (this ComfyUI hosts the queue; also an older host, or one whose status
 * could not be read), "remote" (a worker that forwards to its host) or null (a worker that knows no host address).
 * @param {Known} s
 * @returns {"local" | "remote" | null}
 */
export function queueTarget(s) {
  if (!s || !s.queue) return "local";
  if (s.queue.target === "remote" || s.queue.target === null) return s.queue.target;
  return "local";
}

/**
 * Why "Queue (MQ)" cannot queue here, or null when it can.
 * @param {Known} s
 */
export function noQueueReason(s) {
  if (queueTarget(s) !== null) return null;
  const broker = s && s.worker && s.worker.broker ? ` of the host at ${s.worker.broker}` : "";
  return `This ComfyUI is a ComfyMQ worker${broker} and does not know the host's HTTP address: queue in the ` +
    "host's ComfyUI, or give this worker the host's address (docs/configuration.md)";
}

/** The link states of a worker, as the card names them. */
export const LINK_TEXT = {
  connecting: "connecting to the host…",
  connected: "connected",
  refused: "refused by the host",
  disconnected: "not connected (retrying)",
};
