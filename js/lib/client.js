// The /comfymq HTTP API, through ComfyUI's api.fetchApi (so requests carry ComfyUI's user header and go to
// /api/comfymq/..., which ComfyUI serves for every route a plugin registers).

/** @typedef {import("./model.js").Job} Job */
/** @typedef {import("./model.js").Worker} Worker */

/** An answer other than 2xx, with the API's {"error": {type, message}} when it sent one. */
export class ApiError extends Error {
  /**
   * @param {string} message
   * @param {number} status
   * @param {string} type
   */
  constructor(message, status, type) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.type = type;
  }
}

/**
 * @typedef {{fetchApi(route: string, options?: RequestInit): Promise<Response>, apiURL(route: string): string}} ApiLike
 */

/**
 * @typedef {{prompt: Record<string, any>, workflow?: any, priority?: number, count?: number, keep_seeds?: boolean,
 *            sweep?: Record<string, any[]>, batch_id?: string, metadata?: {prompt_id?: string},
 *            max_attempts?: number, owner?: string}} JobRequest
 */

/**
 * @typedef {{status: string, jobs: {id: string, state: string, prompt_id?: string, batch_id?: string | null,
 *            existed?: boolean}[], batch_id?: string, count?: number, existed?: boolean}} EnqueueAnswer
 */

/**
 * @typedef {{batch_id: string, total: number, counts: Record<string, number>, finished: number,
 *            done_fraction: number, enqueued_at: number, finished_at: number | null, jobs: any[],
 *            next_cursor: string | null}} Batch
 */

export class MQClient {
  /**
   * @param {ApiLike} api  ComfyUI's api object
   * @param {() => string} [token]  the COMFYMQ_TOKEN the user entered in the settings, if any
   */
  constructor(api, token) {
    this.api = api;
    this.token = token || (() => "");
  }

  /**
   * @param {string} method
   * @param {string} route  below /comfymq
   * @param {any} [body]
   * @returns {Promise<any>}
   */
  async request(method, route, body) {
    /** @type {Record<string, string>} */
    const headers = {};
    const token = this.token();
    if (token) headers.Authorization = "Bearer " + token;
    // Every request but a GET says it is JSON, also without a body: the host refuses any other state-changing
    // request (a web page on another site could send it without asking).
    if (method !== "GET") headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await this.api.fetchApi("/comfymq" + route, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store",
      });
    } catch (e) {
      throw new ApiError(`ComfyUI did not answer (${e instanceof Error ? e.message : e})`, 0, "network");
    }
    let data = null;
    const text = await res.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!res.ok) {
      const err = data && data.error;
      let message = err && err.message ? err.message : `${method} /comfymq${route}: HTTP ${res.status}`;
      if (res.status === 404 && !err) message = "ComfyMQ's routes are not there: is the plugin installed and loaded?";
      if (res.status === 401) {
        message = token
          ? "The access token in Settings > ComfyMQ > Access token is not this host's COMFYMQ_TOKEN"
          : "This ComfyMQ host needs its access token: enter its COMFYMQ_TOKEN in Settings > ComfyMQ > Access token";
      }
      throw new ApiError(message, res.status, (err && err.type) || "http");
    }
    return data;
  }

  /**
   * @param {{states?: string[], batch?: string | null, cursor?: string | null, limit?: number,
   *          order?: "newest" | "oldest"}} q
   * @returns {Promise<{jobs: Job[], next_cursor: string | null}>}
   */
  listJobs(q) {
    const p = new URLSearchParams();
    if (q.states && q.states.length) p.set("state", q.states.join(","));
    if (q.batch) p.set("batch", q.batch);
    if (q.cursor) p.set("cursor", q.cursor);
    p.set("limit", String(q.limit || 100));
    p.set("order", q.order || "newest");
    return this.request("GET", "/jobs?" + p.toString());
  }

  /**
   * The summary view of one job found by its prompt_id (light: no prompt, no workflow), or null.
   * @param {string} promptId
   * @returns {Promise<Job | null>}
   */
  async findByPromptId(promptId) {
    const data = await this.request("GET", "/jobs?prompt_id=" + encodeURIComponent(promptId));
    return (data.jobs && data.jobs[0]) || null;
  }

  /** @param {string} id @returns {Promise<Job>} */
  async getJob(id) {
    return (await this.request("GET", "/jobs/" + encodeURIComponent(id))).job;
  }

  /** @param {JobRequest} body @returns {Promise<EnqueueAnswer>} */
  enqueue(body) {
    return this.request("POST", "/jobs", body);
  }

  /** @param {string} id @returns {Promise<Job>} */
  async cancel(id) {
    return (await this.request("POST", `/jobs/${encodeURIComponent(id)}/cancel`, {reason: "cancelled in the panel"})).job;
  }

  /** @param {string} id @returns {Promise<Job>} */
  async retry(id) {
    return (await this.request("POST", `/jobs/${encodeURIComponent(id)}/retry`)).job;
  }

  /** @param {string} id */
  remove(id) {
    return this.request("DELETE", "/jobs/" + encodeURIComponent(id));
  }

  /** @returns {Promise<{paused: boolean, counts: Record<string, number>}>} */
  queue() {
    return this.request("GET", "/queue");
  }

  /** @param {boolean} paused @returns {Promise<{paused: boolean, counts: Record<string, number>}>} */
  setPaused(paused) {
    return this.request("POST", paused ? "/queue/pause" : "/queue/resume");
  }

  /** @param {string} id @returns {Promise<Batch>} */
  batch(id) {
    return this.request("GET", `/batches/${encodeURIComponent(id)}?limit=1`);
  }

  /** @param {string} id @returns {Promise<{batch_id: string, cancelled: number, jobs: string[]}>} */
  cancelBatch(id) {
    return this.request("POST", `/batches/${encodeURIComponent(id)}/cancel`);
  }

  /** @returns {Promise<Worker[]>} */
  workers() {
    return this.request("GET", "/workers");
  }

  /** @param {string} id @param {boolean} drain */
  drain(id, drain) {
    return this.request("POST", `/workers/${encodeURIComponent(id)}/drain`, {drain});
  }

  /** @param {string} [id] */
  refreshWorkers(id) {
    return this.request("POST", "/workers/refresh", id ? {worker_id: id} : undefined);
  }

  /** @returns {Promise<Record<string, any>>} */
  stats() {
    return this.request("GET", "/stats");
  }

  /**
   * Where the browser can load a URL the API gave (an artifact's `url`, relative to the server root).
   * @param {string} url
   */
  resolve(url) {
    return this.api.apiURL(url);
  }
}
