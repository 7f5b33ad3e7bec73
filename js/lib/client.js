// The /comfymq HTTP API, through ComfyUI's api.fetchApi (so requests carry ComfyUI's user header and go to
// /api/comfymq/..., which ComfyUI serves for every route a plugin registers).

/** @typedef {import("./model.js").Job} Job */
/** @typedef {import("./model.js").Worker} Worker */

/**
 * An answer other than 2xx, with the API's {"error": {type, message}} when it sent one. `waiting` is the error's
 * list of reasons when it has one (409 `unrunnable`: why no online worker can run the job); `local` marks a
 * refusal made here without asking the host (see MQClient.request).
 */
export class ApiError extends Error {
  /**
   * @param {string} message
   * @param {number} status
   * @param {string} type
   * @param {{waiting?: string[] | null, local?: boolean}} [more]
   */
  constructor(message, status, type, more = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.type = type;
    /** @type {string[] | null} */
    this.waiting = more.waiting || null;
    this.local = !!more.local;
  }
}

/**
 * GET /comfymq/status: what this ComfyUI's ComfyMQ is, in every role. `worker`: the worker this ComfyUI runs (its
 * link to the host's broker, with the host's words when it refused it; the ComfyUI it drives, `comfyui` being how
 * that answers: ok, starting, unreachable, unknown; the jobs it runs).
 * @typedef {{id: string, name: string, broker: string, link: "connecting" | "connected" | "refused" | "disconnected",
 *            refused: string | null, comfyui: string | null, comfyui_version?: string | null, message: string | null,
 *            running: string[], reconnects: number}} WorkerStatus
 * @typedef {{role: "both" | "host" | "worker", version: string, hosts_queue: boolean, worker: WorkerStatus | null,
 *            queue: {target: "local" | "remote" | null, host_url: string | null}, farm?: Farm | null}} Status
 */

/**
 * Pairing (comfy_nodes/pairing/). `Farm`: this ComfyUI's side (GET /comfymq/farm, and `farm` in the status): the
 * farm it joined from its panel, or whether it can join one and why not. `PairingOverview`: the host's side (GET
 * /comfymq/pairing, admin): whether it can pair, its fingerprint, the code in force (never the code itself), the
 * paired keys and the refusals, newest first. `FoundHost`: a host advertised on the LAN (a hint).
 * @typedef {{host_url: string, broker: string, fingerprint: string, name: string, paired_at: number,
 *            worker_public_key: string}} Joined
 * @typedef {{joined: Joined | null, can_join: boolean, why_not: string | null}} Farm
 * @typedef {{public_key: string, name: string, paired_at: number, source: string, configured: boolean}} PairedKey
 * @typedef {{at: number, source: string, step: string, type: string, reason: string}} Refusal
 * @typedef {{enabled: boolean, problem: string | null, fingerprint: string | null,
 *            code: {expires_at: number, tries_left: number} | null, workers: PairedKey[],
 *            refusals: Refusal[]}} PairingOverview
 * @typedef {{name: string, addresses: string[], port: number, urls: string[], fingerprint: string, instance: string,
 *            version: string}} FoundHost
 */

/**
 * @typedef {{fetchApi(route: string, options?: RequestInit): Promise<Response>, apiURL(route: string): string}} ApiLike
 */

/**
 * @typedef {{prompt: Record<string, any>, workflow?: any, priority?: number, count?: number, keep_seeds?: boolean,
 *            sweep?: Record<string, any[]>, batch_id?: string, metadata?: {prompt_id?: string},
 *            max_attempts?: number, owner?: string}} JobRequest
 */

/**
 * `waiting`: why no online worker can run the jobs right now (empty when some worker can; absent from older hosts).
 * @typedef {{status: string, jobs: {id: string, state: string, prompt_id?: string, batch_id?: string | null,
 *            existed?: boolean}[], batch_id?: string, count?: number, existed?: boolean,
 *            waiting?: string[]}} EnqueueAnswer
 */

/**
 * @typedef {{batch_id: string, total: number, counts: Record<string, number>, finished: number,
 *            done_fraction: number, enqueued_at: number, finished_at: number | null, jobs: any[],
 *            next_cursor: string | null}} Batch
 */

/**
 * A stored template (GET /comfymq/templates): its latest version; `parameters` maps names to {type, title} in lists
 * and to the whole parameter (targets, default, limits) in GET /comfymq/templates/{name}.
 * @typedef {{name: string, version: number, description: string, category: string,
 *            parameters: Record<string, {type: string, title?: string}>, created_at: number | null,
 *            source: string | null}} TemplateSummary
 * @typedef {TemplateSummary & {workflow: Record<string, any>, webhooks: any[]}} Template
 */

/** @param {string} text @returns {any} the JSON in it, or null */
function parseJson(text) {
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

export class MQClient {
  /**
   * @param {ApiLike} api  ComfyUI's api object
   * @param {() => string} [token]  the COMFYMQ_TOKEN the user entered in the settings, if any
   */
  constructor(api, token) {
    this.api = api;
    this.token = token || (() => "");
    /**
     * The token (or "" for none) the host refused with a 401. While the settings still hold it, requests are
     * refused here without asking the host: the views poll and follow events, and would otherwise send a
     * refused request a few times a second. resetAuth() lifts it (a token entered, a reconnect, "Try again").
     * @type {string | null}
     */
    this.refusedToken = null;
  }

  /** Lets requests go to the host again after a 401 (see refusedToken). */
  resetAuth() {
    this.refusedToken = null;
  }

  /** @param {string} token @param {boolean} local */
  unauthorized(token, local) {
    const message = token
      ? "The access token in Settings > ComfyMQ > Access token is not this host's COMFYMQ_TOKEN"
      : "This ComfyMQ host needs its access token: enter its COMFYMQ_TOKEN in Settings > ComfyMQ > Access token";
    return new ApiError(message, 401, "unauthorized", {local});
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
    if (this.refusedToken !== null && this.refusedToken === token) throw this.unauthorized(token, true);
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
    const text = await res.text();
    const data = parseJson(text);
    if (!res.ok) {
      throw this.failure(res.status, data, token, `${method} /comfymq${route}: HTTP ${res.status}`,
        "ComfyMQ's routes are not there: is the plugin installed and loaded?");
    }
    return data;
  }

  /**
   * The ApiError for an answer other than 2xx: the API's {"error": {...}} when it sent one, else `otherwise` (or,
   * for a bare 404, `notFound`). A 401 marks the token refused (see refusedToken).
   * @param {number} status
   * @param {any} data  the answer's JSON, or null
   * @param {string} token  the token the request carried
   * @param {string} otherwise
   * @param {string} notFound
   */
  failure(status, data, token, otherwise, notFound) {
    if (status === 401) {
      this.refusedToken = token;
      return this.unauthorized(token, false);
    }
    const err = data && data.error;
    let message = err && err.message ? err.message : otherwise;
    if (status === 404 && !err) message = notFound;
    const waiting = err && Array.isArray(err.waiting) ? err.waiting.map(String) : null;
    return new ApiError(message, status, (err && err.type) || "http", {waiting});
  }

  /**
   * The bytes of a file the API gave the URL of (an artifact's `url`, relative to the server root), fetched with
   * the token like every request here; refused the same ways (ApiError: 401 for the token, 404 for a file the
   * host no longer has).
   * @param {string} url
   * @returns {Promise<Blob>}
   */
  async fetchFile(url) {
    const token = this.token();
    if (this.refusedToken !== null && this.refusedToken === token) throw this.unauthorized(token, true);
    /** @type {Record<string, string>} */
    const headers = {};
    if (token) headers.Authorization = "Bearer " + token;
    let res;
    try {
      res = await this.api.fetchApi(url, {headers});
      if (res.ok) return await res.blob();
    } catch (e) {
      throw new ApiError(`ComfyUI did not answer (${e instanceof Error ? e.message : e})`, 0, "network");
    }
    const data = parseJson(await res.text().catch(() => ""));
    throw this.failure(res.status, data, token, `GET ${url}: HTTP ${res.status}`,
      `the file is not there any more (HTTP 404 for ${url})`);
  }

  /**
   * What this ComfyUI's ComfyMQ is (its role, its worker's link, where jobs queued here go); null from a host
   * older than the route (404), which is then a host in role "both" or "host" as before.
   * @returns {Promise<Status | null>}
   */
  async status() {
    try {
      return await this.request("GET", "/status");
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return null;
      throw e;
    }
  }

  /**
   * @param {{states?: string[], batch?: string | null, owner?: string | null, cursor?: string | null,
   *          limit?: number, order?: "newest" | "oldest"}} q
   * @returns {Promise<{jobs: Job[], next_cursor: string | null}>}
   */
  listJobs(q) {
    const p = new URLSearchParams();
    if (q.states && q.states.length) p.set("state", q.states.join(","));
    if (q.batch) p.set("batch", q.batch);
    if (q.owner) p.set("owner", q.owner);
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

  /** The host's pairing state (admin). @returns {Promise<PairingOverview>} */
  pairing() {
    return this.request("GET", "/pairing");
  }

  /** A new one-time code (the one before is void). @returns {Promise<{code: string, expires_at: number, fingerprint: string}>} */
  pairingCode() {
    return this.request("POST", "/pairing/code", {});
  }

  /** Unpairs a worker key at once. @param {string} key */
  unpair(key) {
    return this.request("DELETE", "/pairing/workers/" + encodeURIComponent(key));
  }

  /** The hosts advertised on the LAN (hints). @param {number} [timeout] seconds @returns {Promise<{hosts: FoundHost[]}>} */
  discover(timeout = 3) {
    return this.request("GET", `/pairing/discover?timeout=${timeout}`);
  }

  /** @returns {Promise<Farm>} */
  farm() {
    return this.request("GET", "/farm");
  }

  /**
   * Pairs this ComfyUI with a host and serves its farm at once.
   * @param {{host_url: string, code: string, name?: string, fingerprint?: string}} body
   * @returns {Promise<Farm>}
   */
  joinFarm(body) {
    return this.request("POST", "/farm/join", body);
  }

  /** @returns {Promise<{left: Joined, host_told: boolean, message: string}>} */
  leaveFarm() {
    return this.request("POST", "/farm/leave", {});
  }

  /** @returns {Promise<Record<string, any>>} */
  stats() {
    return this.request("GET", "/stats");
  }

  /**
   * Who this panel's token is, and whose jobs it queues (`owner`: null for an open API without a ComfyUI user);
   * null from a host older than the route.
   * @returns {Promise<{name: string | null, role: string, open: boolean, owner: string | null} | null>}
   */
  async whoami() {
    try {
      return await this.request("GET", "/whoami");
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return null;
      throw e;
    }
  }

  // -- templates (GET/POST/PUT/DELETE /comfymq/templates...) --

  /** @returns {Promise<{templates: TemplateSummary[]}>} */
  templates() {
    return this.request("GET", "/templates");
  }

  /** @param {string} name @returns {Promise<{template: Template}>} */
  template(name) {
    return this.request("GET", "/templates/" + encodeURIComponent(name));
  }

  /** @param {string} name @returns {Promise<Record<string, any>>} a JSON Schema of its parameters */
  templateSchema(name) {
    return this.request("GET", `/templates/${encodeURIComponent(name)}/schema`);
  }

  /**
   * Stores a template: a new one (POST), or a new version of `name` (PUT).
   * @param {Record<string, any>} body @param {boolean} update
   * @returns {Promise<{template: Template, result: "created" | "updated" | "unchanged"}>}
   */
  saveTemplate(body, update) {
    return update ? this.request("PUT", "/templates/" + encodeURIComponent(body.name), body)
      : this.request("POST", "/templates", body);
  }

  /** @param {string} name @param {Record<string, any>} body @returns {Promise<EnqueueAnswer>} */
  templateJobs(name, body) {
    return this.request("POST", `/templates/${encodeURIComponent(name)}/jobs`, body);
  }

  /** @param {string} name @returns {Promise<{jobs: Job[], next_cursor: string | null}>} */
  templateJobList(name) {
    return this.request("GET", `/templates/${encodeURIComponent(name)}/jobs?limit=20`);
  }

  /**
   * Where the browser can load a URL the API gave (an artifact's `url`, relative to the server root).
   * @param {string} url
   */
  resolve(url) {
    return this.api.apiURL(url);
  }
}
