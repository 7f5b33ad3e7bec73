// The panel's pure logic, without a browser: seeds per copy, sweep values, the job list's paging and deltas,
// the toasts' batching, the views' answers that cross events (on a stand-in DOM). (Node imports the same ES
// modules ComfyUI loads.)

import {describe, it, before, after} from "node:test";
import assert from "node:assert/strict";
import {findControlled, planCopies, step, hostSeedKeys} from "../../js/lib/seeds.js";
import {parseValues, jobTotal} from "../../js/lib/sweep.js";
import {JobList} from "../../js/lib/job-list.js";
import {Notifier, waitingText} from "../../js/lib/notifier.js";
import {jobLabel, batchLabel, progressFraction, durations, shortIds, outputTitle, compactReason} from "../../js/lib/model.js";
import {batchIdFor, applyPromptValues, enqueueWorkflow} from "../../js/lib/enqueue.js";
import {userRebound} from "../../js/lib/shortcut.js";
import {QueueView} from "../../js/panel/queue-view.js";
import {MQClient, ApiError} from "../../js/lib/client.js";
import {WorkersView} from "../../js/panel/workers-view.js";
import {StatusStore, queueTarget, noQueueReason, isWorkerRole} from "../../js/lib/status.js";

const SEED_OPTS = {min: 0, max: 0xffffffffffffffff, step: 10, step2: 1, precision: 0};

/** A node as the frontend has it: a seed widget linked to its control widget. */
function samplerNode(id, seed, mode, name = "seed") {
  const control = {name: "control_after_generate", value: mode, options: {values: ["fixed", "increment", "decrement", "randomize"]}};
  const target = {name, value: seed, options: SEED_OPTS, linkedWidgets: [control]};
  return {id, widgets: [target, control, {name: "steps", value: 20, options: {}}]};
}

function prompt(...seeds) {
  const p = {};
  seeds.forEach(([id, name, v]) => {
    p[id] = {class_type: "KSampler", inputs: {[name]: v, steps: 20, model: ["4", 0]}};
  });
  p["4"] = {class_type: "CheckpointLoaderSimple", inputs: {ckpt_name: "a.safetensors"}};
  return p;
}

describe("seeds for N copies", () => {
  it("finds widgets with a control mode", () => {
    const c = findControlled([samplerNode(3, 5, "randomize"), {id: 9, widgets: [{name: "text", value: "x"}]}]);
    assert.equal(c.length, 1);
    assert.deepEqual([c[0].nodeId, c[0].input, c[0].mode], ["3", "seed", "randomize"]);
  });

  it("applies a mode like ComfyUI (clamped, step2)", () => {
    assert.equal(step("increment", 5, SEED_OPTS, Math.random), 6);
    assert.equal(step("decrement", 0, SEED_OPTS, Math.random), 0);
    assert.equal(step("fixed", 7, SEED_OPTS, Math.random), 7);
    const r = step("randomize", 7, SEED_OPTS, () => 0.5);
    assert.ok(r >= 0 && r <= 2 ** 50);
    assert.equal(step("increment", "b", {values: ["a", "b", "c"]}, Math.random), "c");
  });

  it("randomize on every seed: one request, the host draws the seeds", () => {
    const nodes = [samplerNode(3, 5, "randomize")];
    const plan = planCopies({prompt: prompt(["3", "seed", 5]), controlled: findControlled(nodes), count: 4});
    assert.equal(plan.how, "host-random");
    assert.equal(plan.requests.length, 1);
    assert.equal(plan.requests[0].count, 4);
    assert.equal(plan.requests[0].keep_seeds, false);
    assert.notEqual(plan.advance[0].value, 5, "the widget shows a new seed afterwards");
  });

  it("increment: the seeds s..s+N-1 as one sweep axis, and the widget moves to s+N", () => {
    const nodes = [samplerNode(3, 100, "increment")];
    const plan = planCopies({prompt: prompt(["3", "seed", 100]), controlled: findControlled(nodes), count: 3});
    assert.equal(plan.how, "sweep");
    assert.deepEqual(plan.requests[0].sweep, {"3.seed": [100, 101, 102]});
    assert.equal(plan.requests[0].count, 1);
    assert.equal(plan.advance[0].value, 103);
  });

  it("'before' mode: the control applies before each copy", () => {
    const nodes = [samplerNode(3, 100, "increment")];
    const plan = planCopies({prompt: prompt(["3", "seed", 100]), controlled: findControlled(nodes), count: 2, before: true});
    assert.deepEqual(plan.requests[0].sweep, {"3.seed": [101, 102]});
    assert.equal(plan.advance[0].value, 102);
  });

  it("fixed: N identical prompts (keep_seeds)", () => {
    const nodes = [samplerNode(3, 100, "fixed")];
    const plan = planCopies({prompt: prompt(["3", "seed", 100]), controlled: findControlled(nodes), count: 3});
    assert.equal(plan.how, "identical");
    assert.equal(plan.requests[0].keep_seeds, true);
  });

  it("a fixed seed next to a randomized one is not re-drawn by the host", () => {
    const nodes = [samplerNode(3, 1, "randomize"), samplerNode(5, 2, "fixed")];
    const p = prompt(["3", "seed", 1], ["5", "seed", 2]);
    const plan = planCopies({prompt: p, controlled: findControlled(nodes), count: 2, rand: () => 0.25});
    assert.equal(plan.how, "sweep");
    assert.deepEqual(Object.keys(plan.requests[0].sweep), ["3.seed"]);
    assert.deepEqual(hostSeedKeys(p, new Set()).sort(), ["3.seed", "5.seed"]);
  });

  it("several changing widgets: one request per copy", () => {
    const nodes = [samplerNode(3, 1, "increment"), samplerNode(5, 10, "decrement", "noise_seed")];
    const p = prompt(["3", "seed", 1], ["5", "noise_seed", 10]);
    const plan = planCopies({prompt: p, controlled: findControlled(nodes), count: 3});
    assert.equal(plan.how, "split");
    assert.deepEqual(plan.requests.map((r) => [r.prompt["3"].inputs.seed, r.prompt["5"].inputs.noise_seed]),
      [[1, 10], [2, 9], [3, 8]]);
    assert.equal(p["3"].inputs.seed, 1, "the canvas's prompt is not changed");
  });

  it("a swept seed is left to the sweep", () => {
    const nodes = [samplerNode(3, 1, "increment")];
    const plan = planCopies({prompt: prompt(["3", "seed", 1]), controlled: findControlled(nodes), count: 2,
      sweep: {"3.seed": [7, 8]}});
    assert.equal(plan.how, "identical");
    assert.deepEqual(plan.requests[0].sweep, {"3.seed": [7, 8]});
  });
});

describe("sweep values", () => {
  it("parses numbers, ranges, booleans, text and combo choices", () => {
    assert.deepEqual(parseValues("5, 7.5, 9", {current: 8}).values, [5, 7.5, 9]);
    assert.deepEqual(parseValues("1..4", {current: 8}).values, [1, 2, 3, 4]);
    assert.deepEqual(parseValues("0.5..1.5:0.25", {current: 1}).values, [0.5, 0.75, 1, 1.25, 1.5]);
    assert.deepEqual(parseValues("10..4:-3", {current: 1}).values, [10, 7, 4]);
    assert.deepEqual(parseValues("true, no", {current: false}).values, [true, false]);
    assert.deepEqual(parseValues("euler, dpmpp_2m", {current: "euler", choices: ["euler", "dpmpp_2m", "ddim"]}).values,
      ["euler", "dpmpp_2m"]);
    assert.deepEqual(parseValues("*", {current: "a", choices: ["a", "b"]}).values, ["a", "b"]);
    assert.deepEqual(parseValues('["a, b", "c"]', {current: "x"}).values, ["a, b", "c"]);
  });

  it("explains bad input", () => {
    assert.match(parseValues("5, x", {current: 1}).error || "", /'x' is not a number/);
    assert.match(parseValues("1.5", {current: 1, integer: true}).error || "", /whole numbers/);
    assert.match(parseValues("heun", {current: "euler", choices: ["euler"]}).error || "", /not a choice/);
    assert.match(parseValues("", {current: 1}).error || "", /enter values/);
    assert.equal(jobTotal(2, [[1, 2, 3], ["a", "b"]]), 12);
  });
});

/** A fake API with `n` jobs, ids in enqueue order. */
function fakeClient(n) {
  const jobs = [];
  for (let i = 0; i < n; i++) {
    jobs.push({id: (0x1000 + i).toString(16).padStart(16, "0"), state: "pending", priority: 1, batch_id: null,
      prompt_id: `p${i}`, enqueued_at: 1000 + i, started_at: null, finished_at: null, worker: null, progress: null,
      error: null, artifacts: []});
  }
  const calls = [];
  return {
    jobs, calls,
    /** @type {Promise<void> | null} while set, a fetch answers what the server had when asked only once it resolves */
    hold: null,
    async listJobs(q) {
      calls.push(["list", q]);
      const answer = this.listNow(q);
      if (this.hold) await this.hold;
      return answer;
    },
    /** @param {any} q */
    listNow(q) {
      let list = jobs.filter((j) => !q.states?.length || q.states.includes(j.state));
      list = [...list].sort((a, b) => (q.order === "oldest" ? (a.id < b.id ? -1 : 1) : (a.id < b.id ? 1 : -1)));
      const start = q.cursor ? list.findIndex((j) => j.id === q.cursor) + 1 : 0;
      const page = list.slice(start, start + q.limit);
      return {jobs: page.map((j) => ({...j})), next_cursor: start + q.limit < list.length ? page[page.length - 1].id : null};
    },
    async findByPromptId(pid) {
      calls.push(["find", pid]);
      const j = jobs.find((x) => x.prompt_id === pid);
      const answer = j ? {...j} : null;
      if (this.hold) await this.hold;
      return answer;
    },
    async getJob(id) {
      calls.push(["get", id]);
      const j = jobs.find((x) => x.id === id);
      if (!j) throw Object.assign(new Error("no job"), {status: 404});
      const answer = {...j, prompt: {}, workflow: null};
      if (this.hold) await this.hold;
      return answer;
    },
  };
}

describe("job list", () => {
  it("pages with the cursor and windows nothing itself", async () => {
    const c = fakeClient(250);
    const list = new JobList(c, {pageSize: 100});
    await list.reload();
    assert.equal(list.size, 100);
    assert.equal(list.ids[0], c.jobs[249].id, "newest first");
    await list.loadMore();
    await list.loadMore();
    assert.equal(list.size, 250);
    assert.equal(list.hasMore, false);
  });

  it("applies deltas in place and fetches only the changed jobs", async () => {
    const c = fakeClient(300);
    const list = new JobList(c, {pageSize: 100});
    await list.reload();
    c.calls.length = 0;
    const target = c.jobs[290];
    target.state = "running";
    target.worker = "w1";
    list.apply([{job_id: target.id, state: "running", from: "pending", worker: "w1"},
      {job_id: target.id, progress: {node: "3", value: 4, max: 20, nodes_done: 1, nodes_total: 4}}]);
    const shown = list.byId.get(target.id);
    assert.equal(shown.state, "running");
    assert.equal(shown.progress.value, 4);
    await list.flush();
    assert.deepEqual(c.calls.map((x) => x[0]), ["find"], "one light fetch, no list refetch");
    // a job beyond the loaded pages is not fetched
    list.apply([{job_id: c.jobs[5].id, state: "running", from: "pending"}]);
    await list.flush();
    assert.equal(c.calls.length, 1);
  });

  it("brings new jobs in with one request and drops jobs leaving the filter", async () => {
    const c = fakeClient(10);
    const list = new JobList(c, {pageSize: 100});
    await list.setFilter({states: ["pending"]});
    for (let i = 0; i < 20; i++) {
      c.jobs.push({...c.jobs[0], id: (0x2000 + i).toString(16).padStart(16, "0"), prompt_id: `n${i}`});
    }
    c.calls.length = 0;
    list.apply(c.jobs.slice(10).map((j) => ({job_id: j.id, state: "pending", from: "pending"})));
    await list.flush();
    assert.equal(c.calls.length, 1, "one window request for 20 new jobs");
    assert.equal(list.size, 30);
    list.apply([{job_id: c.jobs[0].id, state: "succeeded", from: "running"}]);
    assert.equal(list.size, 29, "a succeeded job leaves the pending filter");
    list.apply([{job_id: c.jobs[1].id, removed: true}]);
    assert.equal(list.size, 28);
  });

  it("a change that comes while a new job's record is on its way is fetched again, not lost", async () => {
    const c = fakeClient(10);
    const list = new JobList(c, {pageSize: 100});
    await list.reload();
    const fresh = {...c.jobs[0], id: "0000000000002000", prompt_id: "new", state: "running", worker: "w1"};
    c.jobs.push(fresh);
    list.apply([{job_id: fresh.id, state: "running", from: "pending", worker: "w1"}]);
    /** @type {() => void} */
    let release = () => {};
    c.hold = new Promise((r) => (release = r));
    const inFlight = list.flush(); // asks for the job while it runs
    fresh.state = "succeeded";
    list.apply([{job_id: fresh.id, state: "succeeded", from: "running"}]); // not loaded yet: only noted
    c.hold = null;
    release();
    await inFlight;
    assert.equal(list.byId.get(fresh.id).state, "running", "the answer that crossed the event");
    await list.flush();
    assert.equal(list.byId.get(fresh.id).state, "succeeded");
    list.close();
  });

  it("a change that comes while the list is reloading is fetched again once the reload lands", async () => {
    const c = fakeClient(10);
    const list = new JobList(c, {pageSize: 100});
    await list.reload();
    const j = c.jobs[4];
    /** @type {() => void} */
    let release = () => {};
    c.hold = new Promise((r) => (release = r)); // the answer is what the server had when asked
    const reloading = list.reload();
    j.state = "running";
    list.apply([{job_id: j.id, state: "running", from: "pending"}]);
    c.hold = null;
    release();
    await reloading;
    assert.equal(list.byId.get(j.id).state, "pending", "the reload's answer predates the event");
    await list.flush();
    assert.equal(list.byId.get(j.id).state, "running");
    list.close();
  });

  it("a change that comes while the next page is on its way is fetched again once the page lands", async () => {
    const c = fakeClient(250);
    const list = new JobList(c, {pageSize: 100});
    await list.reload();
    const j = c.jobs[120]; // on the second page
    const gone = c.jobs[110];
    /** @type {() => void} */
    let release = () => {};
    c.hold = new Promise((r) => (release = r)); // the answer is what the server had when asked
    const more = list.loadMore();
    j.state = "succeeded";
    list.apply([{job_id: j.id, state: "succeeded", from: "running"}]); // not loaded yet, nor in range
    c.jobs.splice(c.jobs.indexOf(gone), 1);
    list.apply([{job_id: gone.id, removed: true}]);
    c.hold = null;
    release();
    await more;
    assert.equal(list.byId.get(j.id).state, "pending", "the page predates the event");
    await list.flush();
    assert.equal(list.byId.get(j.id).state, "succeeded");
    assert.equal(list.byId.has(gone.id), false, "a job deleted while its page was on its way");
    list.close();
  });

  it("an action's answer older than the events it crossed does not stay", async () => {
    const c = fakeClient(10);
    const list = new JobList(c, {pageSize: 100});
    await list.reload();
    const j = c.jobs[3];
    j.state = "failed"; // retried, ran and failed again before the retry's answer arrived
    list.apply([{job_id: j.id, state: "failed", from: "running"}]);
    await list.flush();
    list.put({...j, state: "pending", prompt: {}}); // the retry's answer, from before the run
    assert.equal(list.byId.get(j.id).state, "pending");
    await list.flush();
    assert.equal(list.byId.get(j.id).state, "failed");
    list.close();
  });
});

describe("toasts", () => {
  function notifier() {
    const toasts = [];
    const client = {
      async getJob(id) {
        return {id, prompt_id: "x@abcdef", error: {type: "RuntimeError", message: "boom", node_id: "9"},
          prompt: {9: {class_type: "FailNode"}}, artifacts: [], started_at: 1, finished_at: 2};
      },
      async batch() {
        throw new Error("unused");
      },
    };
    return {n: new Notifier(() => ({add: (t) => toasts.push(t)}), client), toasts};
  }

  it("one toast for a whole batch of 100, one for its first failure", async () => {
    const {n, toasts} = notifier();
    const jobs = Array.from({length: 100}, (_, i) => ({id: `j${i}`, state: "pending"}));
    n.queued({jobs, batchId: "b.abcdef", name: "grid", total: 100, how: "host-random"});
    assert.equal(toasts.length, 1);
    n.onJob({jobs: jobs.map((j, i) => ({job_id: j.id, state: i === 7 ? "failed" : "succeeded"}))});
    n.flush();
    await new Promise((r) => setTimeout(r, 10));
    const summaries = toasts.slice(1).map((t) => t.summary);
    assert.equal(summaries.length, 2, summaries.join(" | "));
    assert.ok(summaries.some((s) => /^Batch finished: grid \(100 jobs\)/.test(s)));
    assert.ok(summaries.some((s) => /failed/.test(s)));
  });

  it("jobs that ended before their enqueue's answer came still count (one request per copy)", async () => {
    const {n, toasts} = notifier();
    // the first copy's request was answered, it ran and failed while the others were still being queued
    n.onJob({jobs: [{job_id: "s0", state: "failed", from: "running"}, {job_id: "other", state: "succeeded"}]});
    const jobs = Array.from({length: 4}, (_, i) => ({id: `s${i}`, state: "pending"}));
    n.queued({jobs, batchId: "b.abcdef", name: "split", total: 4, how: "split"});
    n.onJob({jobs: jobs.slice(1).map((j) => ({job_id: j.id, state: "succeeded"}))});
    n.flush();
    await new Promise((r) => setTimeout(r, 10));
    const summaries = toasts.slice(1).map((t) => t.summary);
    assert.ok(summaries.some((s) => /^Batch finished: split \(4 jobs\)/.test(s)), summaries.join(" | "));
    assert.ok(summaries.some((s) => /failed/.test(s)), summaries.join(" | "));
    assert.equal(n.jobs.size, 0);
  });

  it("a retry: the run before it is no news, a run that ended before its answer came is", async () => {
    const {n, toasts} = notifier();
    n.onJob({jobs: [{job_id: "r", state: "failed", from: "running"}]}); // queued elsewhere, failed
    n.retrying("r");
    n.watch({id: "r", state: "pending"}, "again");
    n.flush();
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(toasts.length, 0, "the failure before the retry");
    n.onJob({jobs: [{job_id: "r", state: "cancelled", from: "pending"}]});
    n.flush(); // cancelled: no toast, and no longer followed
    assert.equal(n.jobs.size, 0);
    n.retrying("r");
    n.onJob({jobs: [{job_id: "r", state: "failed", from: "running"}]}); // retried, ran, failed: before the answer
    n.watch({id: "r", state: "pending"}, "again");
    n.flush();
    await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(toasts.map((t) => t.summary), ["Failed: again"]);
  });

  it("after a reconnect, an end that came while the job's record was on its way stands", async () => {
    const toasts = [];
    const state = {a: "running"};
    /** @type {() => void} */
    let release = () => {};
    const held = new Promise((r) => (release = r));
    const client = {
      async getJob(id) {
        const answer = {id, state: state[id], artifacts: [], started_at: 1, finished_at: 2};
        await held;
        return answer;
      },
    };
    const n = new Notifier(() => ({add: (t) => toasts.push(t)}), client);
    n.queued({jobs: [{id: "a", state: "pending"}], batchId: null, name: "one", total: 1, how: "single"});
    n.onJob({jobs: [{job_id: "a", state: "running"}]});
    const recounting = n.recount(); // asks for "a" while it runs
    state.a = "succeeded";
    n.onJob({jobs: [{job_id: "a", state: "succeeded", from: "running"}]});
    release();
    await recounting;
    n.flush();
    await new Promise((r) => setTimeout(r, 10));
    assert.ok(toasts.some((t) => t.summary === "Finished: one"), toasts.map((t) => t.summary).join(" | "));
  });

  it("a job queued just after a resync has its state asked for (its events may have been dropped)", async () => {
    const toasts = [];
    const client = {
      async getJob(id) {
        return {id, state: "succeeded", artifacts: [], started_at: 1, finished_at: 2};
      },
    };
    const n = new Notifier(() => ({add: (t) => toasts.push(t)}), client);
    n.onJob({jobs: [], resync: true}); // a burst of events replaced by a refetch, while the answer was on its way
    n.queued({jobs: [{id: "a", state: "pending"}], batchId: null, name: "one", total: 1, how: "single"});
    await new Promise((r) => setTimeout(r, 10));
    n.flush();
    await new Promise((r) => setTimeout(r, 10));
    assert.ok(toasts.some((t) => t.summary === "Finished: one"), toasts.map((t) => t.summary).join(" | "));
  });

  it("a single job: finished toast, or the failing node and message", async () => {
    const {n, toasts} = notifier();
    n.queued({jobs: [{id: "a", state: "pending"}], batchId: null, name: "one", total: 1, how: "single"});
    n.queued({jobs: [{id: "b", state: "pending"}], batchId: null, name: "two", total: 1, how: "single"});
    n.onJob({jobs: [{job_id: "a", state: "succeeded"}, {job_id: "b", state: "failed"}]});
    n.flush();
    await new Promise((r) => setTimeout(r, 10));
    const t = toasts.slice(2);
    assert.ok(t.some((x) => x.summary === "Finished: one"));
    assert.ok(t.some((x) => x.summary === "Failed: two" && /FailNode \(#9\): boom/.test(x.detail)));
  });
});

describe("toasts for a job no worker can run", () => {
  const REASON = "worker gpu1 (gpu1-3f2a9c1e): missing checkpoint v1-5.safetensors";

  function notifier() {
    const toasts = [];
    const unrunnable = [];
    const client = {
      async getJob(id) {
        return {id, state: "pending", artifacts: []};
      },
    };
    const n = new Notifier(() => ({add: (t) => toasts.push(t)}), client, {onUnrunnable: (id) => unrunnable.push(id)});
    return {n, toasts, unrunnable};
  }

  it("a queued job no online worker can run: a warning naming why, not the green Queued; the panel is told", () => {
    const {n, toasts, unrunnable} = notifier();
    n.queued({jobs: [{id: "a", state: "pending"}], batchId: null, name: "portrait", total: 1, how: "single",
      waiting: [REASON]});
    assert.equal(toasts.length, 1);
    assert.equal(toasts[0].severity, "warn");
    assert.match(toasts[0].summary, /no worker can run it yet/);
    assert.match(toasts[0].detail, /No worker can run it yet: worker gpu1: missing checkpoint v1-5\.safetensors/);
    assert.match(toasts[0].detail, /ComfyMQ panel/);
    assert.deepEqual(unrunnable, ["a"]);
    assert.ok(n.jobs.has("a"), "still followed: it runs once a worker can");
  });

  it("an empty or absent `waiting` (some worker can run it; an older host) is the green Queued", () => {
    const {n, toasts, unrunnable} = notifier();
    n.queued({jobs: [{id: "a", state: "pending"}], batchId: null, name: "one", total: 1, how: "single", waiting: []});
    n.queued({jobs: [{id: "b", state: "pending"}], batchId: null, name: "two", total: 1, how: "single", waiting: null});
    assert.deepEqual(toasts.map((t) => t.severity), ["success", "success"]);
    assert.deepEqual(unrunnable, []);
  });

  it("names at most three reasons, without the workers' ids", () => {
    const reasons = ["worker a (a-1): x", "worker b (b-2): y", "worker c (c-3): z", "no worker is connected"];
    assert.equal(waitingText(reasons), "No worker can run it yet: worker a: x; worker b: y; worker c: z (and 1 more)");
    assert.equal(compactReason("no worker is connected"), "no worker is connected");
  });

  it("a host that refuses such jobs (409 unrunnable): an error toast with the reasons", () => {
    const {n, toasts} = notifier();
    n.queueFailed(new ApiError("no online worker can run this job", 409, "unrunnable", {waiting: [REASON]}));
    assert.equal(toasts[0].severity, "error");
    assert.match(toasts[0].summary, /Not queued/);
    assert.match(toasts[0].detail, /worker gpu1: missing checkpoint v1-5\.safetensors/);
    n.queueFailed(new ApiError("the host said no", 409, "unrunnable"));
    assert.equal(toasts[1].detail, "the host said no");
  });

  it("jobs a worker forwarded to its host are not followed here (this page gets none of their events)", () => {
    const {n, toasts} = notifier();
    n.queued({jobs: [{id: "a", state: "pending"}], batchId: null, name: "one", total: 1, how: "single", waiting: [],
      remote: "http://host.lan:8188"});
    assert.equal(n.jobs.size, 0);
    assert.equal(toasts[0].severity, "success");
    assert.match(toasts[0].summary, /on the host/);
    assert.match(toasts[0].detail, /http:\/\/host\.lan:8188/);
  });

  it("enqueueWorkflow gathers every answer's reasons once, and keeps the host's refusal as it is", async () => {
    const app = {async graphToPrompt() {
      return {output: {"9": {class_type: "SaveImage", inputs: {}}}, workflow: {}};
    }};
    const answers = [{status: "queued", jobs: [{id: "a", state: "pending"}], waiting: [REASON, REASON]}];
    const client = {async enqueue() {
      return answers.shift();
    }};
    const r = await enqueueWorkflow(app, /** @type {any} */ (client), {priority: 1, count: 1});
    assert.deepEqual(r.waiting, [REASON]);
    const old = await enqueueWorkflow(app, /** @type {any} */ ({async enqueue() {
      return {status: "queued", jobs: [{id: "b", state: "pending"}]};
    }}), {priority: 1, count: 1});
    assert.equal(old.waiting, null, "an older host says nothing");
    const refusal = new ApiError("no worker", 409, "unrunnable", {waiting: [REASON]});
    await assert.rejects(enqueueWorkflow(app, /** @type {any} */ ({async enqueue() {
      throw refusal;
    }}), {priority: 1, count: 1}), (e) => e === refusal);
  });
});

/**
 * Enough of a DOM for the views' constructors and what they draw while hidden (no layout, no events): their
 * answers and events can be played against them without a browser.
 */
function fakeDom() {
  class El {
    constructor(tag) {
      this.tagName = tag.toUpperCase();
      this.childNodes = [];
      this.style = {};
      this.dataset = {};
      this.attributes = {};
      this.className = "";
      this.textContent = "";
      this.classList = {toggle() {}, add() {}, remove() {}, contains: () => false};
    }
    setAttribute(k, v) {
      this.attributes[k] = String(v);
    }
    getAttribute(k) {
      return this.attributes[k] ?? null;
    }
    addEventListener() {}
    removeEventListener() {}
    append(...c) {
      this.childNodes.push(...c);
    }
    replaceChildren(...c) {
      this.childNodes = c;
    }
    querySelector() {
      return null;
    }
    querySelectorAll() {
      return [];
    }
  }
  const saved = {document: globalThis.document, ResizeObserver: globalThis.ResizeObserver,
    requestAnimationFrame: globalThis.requestAnimationFrame, cancelAnimationFrame: globalThis.cancelAnimationFrame};
  Object.assign(globalThis, {document: {createElement: (tag) => new El(tag)},
    ResizeObserver: class {
      observe() {}
      disconnect() {}
    },
    requestAnimationFrame: () => 0, cancelAnimationFrame: () => {}});
  return () => Object.assign(globalThis, saved);
}

describe("views", () => {
  let restore = () => {};
  before(() => {
    restore = fakeDom();
  });
  after(() => restore());

  it("a batch's counts: an older answer landing after a newer one is not shown", async () => {
    const server = {finished: 9, running: 1};
    /** @type {Promise<void> | null} */
    let hold = null;
    const client = {
      async batch(id) {
        const b = {batch_id: id, total: 10, finished: server.finished, done_fraction: server.finished / 10,
          counts: {pending: 0, running: server.running, succeeded: server.finished, failed: 0, cancelled: 0},
          enqueued_at: 1, finished_at: null, jobs: [], next_cursor: null};
        if (hold) await hold;
        return b;
      },
    };
    const view = new QueueView({client, images: {}, workerName: (id) => id});
    /** @type {() => void} */
    let release = () => {};
    hold = new Promise((r) => (release = r));
    const slow = view.loadBatch("b.abcdef"); // asked while one job still runs, answered late
    hold = null;
    server.finished = 10;
    server.running = 0;
    await view.loadBatch("b.abcdef"); // asked after the batch's last event
    assert.equal(view.batchInfo.get("b.abcdef").finished, 10);
    release();
    await slow;
    assert.equal(view.batchInfo.get("b.abcdef").finished, 10, "the finished batch stays finished");
    view.list.close();
  });

  it("a batch whose counts cannot be fetched is asked for again later, not in a loop", async () => {
    let asked = 0;
    const client = {
      async batch(id) {
        asked++;
        // refuses (as a host with another token would), but not forever: a regression fails, never hangs
        if (asked > 50) return {batch_id: id, total: 1, finished: 0, counts: {pending: 1, running: 0}};
        throw Object.assign(new Error("unauthorized"), {status: 401});
      },
    };
    const view = new QueueView({client, images: {}, workerName: (id) => id});
    view.list.filter = {states: [], batch: "b.abcdef"}; // the batch is shown
    await view.loadBatch("b.abcdef");
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(asked, 1, "one request, then a pause (the host refuses or is down)");
    assert.ok(view.batchRetry, "asked for again in a while");
    view.stop();
  });

  it("a job that leaves the state filter still refreshes its batch's counts", async () => {
    const client = {
      async queue() {
        return {paused: false, counts: {}};
      },
    };
    const view = new QueueView({client, images: {}, workerName: (id) => id});
    const job = {id: "0000000000001000", state: "running", batch_id: "b.abcdef", prompt_id: "x", enqueued_at: 1,
      started_at: 1, finished_at: null, worker: "w1", progress: null, error: null, artifacts: []};
    Object.assign(view.list, {loaded: true, filter: {states: ["running"], batch: null}, ids: [job.id],
      byId: new Map([[job.id, job]])});
    view.batchInfo.set("b.abcdef", {batch_id: "b.abcdef", total: 2, finished: 1,
      counts: {pending: 0, running: 1, succeeded: 1, failed: 0, cancelled: 0}});
    view.onJob({jobs: [{job_id: job.id, state: "succeeded", from: "running"}]});
    assert.equal(view.list.size, 0, "the job left the Running filter");
    assert.ok(view.batchDirty.has("b.abcdef"), "its batch is fetched again");
    view.stop();
  });

  it("a worker that joins has the open details of a waiting job asked for again (why it waits)", async () => {
    const client = {};
    const view = new QueueView({client, images: {}, workerName: (id) => id});
    const job = {id: "0000000000001000", state: "pending", batch_id: null, prompt_id: "x", enqueued_at: 1,
      started_at: null, finished_at: null, worker: null, progress: null, error: null, artifacts: []};
    Object.assign(view.list, {loaded: true, ids: [job.id], byId: new Map([[job.id, job]])});
    view.selected = job.id;
    view.details.id = job.id;
    view.forgetWaiting(); // what the workers view calls on joined / rejoined / left / changed
    assert.ok(view.details.timer, "the details are fetched again soon");
    view.stop();
  });

  it("workers: a list that a worker's event crossed is asked for again (the tab's count while hidden)", async () => {
    const server = [{id: "w1", name: "gpu", online: false, running: []}];
    /** @type {Promise<void> | null} */
    let hold = null;
    let asked = 0;
    const client = {
      async workers() {
        asked++;
        const answer = server.map((w) => ({...w}));
        if (hold) await hold;
        return answer;
      },
    };
    let online = -1;
    const view = new WorkersView({client, rememberWorker: () => {}, findJob: () => undefined},
      {onCount: (n) => (online = n)});
    /** @type {() => void} */
    let release = () => {};
    hold = new Promise((r) => (release = r));
    const loading = view.load(); // e.g. on a reconnect, as the workers rejoin
    hold = null;
    server[0].online = true;
    view.onWorker({event: "rejoined", worker: {...server[0]}});
    assert.equal(online, 1);
    release();
    await loading;
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(online, 1, "the rejoined worker is online");
    assert.equal(asked, 2);
  });
});

describe("API client", () => {
  it("says it sends JSON on every request but a GET, bodyless ones too (the host refuses them otherwise)", async () => {
    /** @type {{route: string, init: any}[]} */
    const sent = [];
    const api = {
      async fetchApi(/** @type {string} */ route, /** @type {any} */ init) {
        sent.push({route, init});
        return new Response("{}", {status: 200});
      },
      apiURL: (/** @type {string} */ r) => r,
    };
    const client = new MQClient(api, () => "tok-tok-tok");
    await client.setPaused(true);
    await client.cancelBatch("b1");
    await client.retry("0123456789abcdef");
    await client.remove("0123456789abcdef");
    await client.refreshWorkers();
    await client.enqueue({prompt: {}});
    await client.queue();
    const json = sent.map((s) => [s.init.method, s.init.headers["Content-Type"] || null]);
    assert.deepEqual(json, [["POST", "application/json"], ["POST", "application/json"], ["POST", "application/json"],
      ["DELETE", "application/json"], ["POST", "application/json"], ["POST", "application/json"], ["GET", null]]);
    assert.ok(sent.every((s) => s.init.headers.Authorization === "Bearer tok-tok-tok"));
  });
});

describe("API client: a refused token", () => {
  /** A host that refuses every request without the right token, counting what reaches it. */
  function host(token) {
    const seen = [];
    const api = {
      async fetchApi(/** @type {string} */ route, /** @type {any} */ init) {
        seen.push(route);
        if (init.headers.Authorization !== "Bearer " + token) {
          return new Response(JSON.stringify({error: {type: "unauthorized", message: "needs a token"}}), {status: 401});
        }
        return new Response(JSON.stringify({paused: false, counts: {}}), {status: 200});
      },
      apiURL: (/** @type {string} */ r) => r,
    };
    return {api, seen};
  }

  it("after a 401, nothing goes to the host until the token changes or resetAuth()", async () => {
    const {api, seen} = host("right-token-1");
    let entered = "";
    const client = new MQClient(api, () => entered);
    for (let i = 0; i < 20; i++) {
      await assert.rejects(client.queue(), (e) => e.status === 401 && /needs its access token/.test(e.message));
    }
    assert.equal(seen.length, 1, "one request reached the host, not 20");
    entered = "wrong-token-2";
    await assert.rejects(client.queue(), (e) => e.status === 401 && /is not this host's/.test(e.message));
    await assert.rejects(client.queue(), (e) => e.status === 401);
    assert.equal(seen.length, 2, "a new token is tried once");
    client.resetAuth();
    await assert.rejects(client.queue());
    assert.equal(seen.length, 3, "resetAuth lets one more through");
    entered = "right-token-1";
    assert.deepEqual(await client.queue(), {paused: false, counts: {}});
  });

  it("an error's reasons (409 unrunnable) come with the ApiError; status() of an older host is null", async () => {
    const api = {
      async fetchApi(/** @type {string} */ route) {
        if (route === "/comfymq/status") return new Response("404: Not Found", {status: 404});
        return new Response(JSON.stringify({error: {type: "unrunnable", message: "nobody can", waiting: ["w: x"]}}),
          {status: 409});
      },
      apiURL: (/** @type {string} */ r) => r,
    };
    const client = new MQClient(api);
    await assert.rejects(client.enqueue({prompt: {}}), (e) => e.type === "unrunnable" && e.waiting[0] === "w: x");
    assert.equal(await client.status(), null);
  });
});

describe("this ComfyUI's role (GET /comfymq/status)", () => {
  const worker = (target) => ({role: "worker", version: "0.1.0", hosts_queue: false,
    worker: {id: "w1", name: "gpu1", broker: "tcp://host.lan:5557", link: "connected", refused: null,
      comfyui: "http://127.0.0.1:8188", message: null, running: [], reconnects: 0},
    queue: {target, host_url: target === "remote" ? "http://host.lan:8188" : null}});

  it("where Queue (MQ) sends jobs, and why not", () => {
    assert.equal(queueTarget(undefined), "local");
    assert.equal(queueTarget(null), "local", "an older host hosts the queue");
    assert.equal(queueTarget({role: "both", queue: {target: "local", host_url: null}}), "local");
    assert.equal(queueTarget(worker("remote")), "remote");
    assert.equal(queueTarget(worker(null)), null);
    assert.equal(noQueueReason(worker("remote")), null);
    assert.match(noQueueReason(worker(null)) || "", /worker of the host at tcp:\/\/host\.lan:5557.*HTTP address/);
    assert.ok(isWorkerRole(worker(null)) && !isWorkerRole(null));
  });

  it("the store shares one request, and a worker stays a worker while its status cannot be read", async () => {
    let asked = 0;
    let fail = false;
    const store = new StatusStore({async status() {
      asked++;
      if (fail) throw new Error("ComfyUI did not answer");
      return worker("remote");
    }});
    const seen = [];
    store.on((s) => seen.push(s && s.role));
    await Promise.all([store.load(), store.load(), store.get()]);
    assert.equal(asked, 1);
    fail = true;
    await store.load();
    assert.equal(store.current?.role, "worker");
    assert.match(store.error || "", /did not answer/);
    assert.deepEqual(seen, ["worker", "worker"]);
  });
});

describe("helpers", () => {
  it("labels, progress, durations, batch ids, the key", () => {
    assert.deepEqual(jobLabel({id: "01", prompt_id: "portrait v2@k3j9x2-0003"}), {name: "portrait v2", index: 3});
    assert.deepEqual(jobLabel({id: "01a208aae5e50001", prompt_id: "1b4e28ba-2fa1-11d2-883f-0016d3cca427"}),
      {name: "job", index: null});
    assert.equal(batchLabel("portrait_v2.k3j9x2"), "portrait_v2");
    assert.equal(batchIdFor("My portrait (v2).json", "abcdef"), "My_portrait_v2.abcdef");
    assert.match(batchIdFor("  ...", "abcdef"), /^[A-Za-z0-9][A-Za-z0-9._:-]*$/);
    assert.equal(progressFraction({value: 10, max: 20, nodes_done: 1, nodes_total: 4}), 0.375);
    assert.deepEqual(durations({enqueued_at: 0, started_at: 1000, finished_at: 3000, state: "succeeded"}, 9999),
      {waited: 1000, ran: 2000});
    assert.equal(userRebound([{commandId: "x", combo: {key: "Enter", ctrl: true, shift: true}}]), true);
    assert.equal(userRebound([{commandId: "x", combo: {key: "Enter", ctrl: true}}]), false);
    const nodes = [{id: 3, widgets: [{name: "seed", value: 1}, {name: "cfg", value: 7}]}];
    assert.equal(applyPromptValues(nodes, {3: {inputs: {seed: 99, cfg: 7, model: ["4", 0]}}}), 1);
    assert.equal(nodes[0].widgets[0].value, 99);
  });

  it("jobs with the same name are told apart: a short id unique among the listed jobs", () => {
    // ids are (enqueue ms << 16 | counter) in hex: jobs 256 ms apart, or 65 s apart, share their last 6 or 8 digits
    const ids = ["01a2081ee0070000", "01a2081ee1070000", "01a2082ee1070000", "01a2081ee0070001", "01a2081ee0080000"];
    const s = shortIds(ids);
    assert.equal(new Set(s.values()).size, ids.length, [...s.values()].join(" "));
    for (const id of ids) assert.ok(id.endsWith(s.get(id)) && s.get(id).length >= 6);
    assert.equal(s.get("01a2081ee0080000"), "080000", "no longer than it needs");
    assert.equal(s.get("01a2081ee0070000"), "0070000");
    assert.equal(s.get("01a2082ee1070000"), "2ee1070000");
    // a job from another client (no readable prompt_id): its output node when the record has the prompt
    const prompt = {4: {class_type: "CheckpointLoaderSimple", inputs: {}},
      3: {class_type: "KSampler", inputs: {model: ["4", 0]}},
      9: {class_type: "SaveImage", inputs: {images: ["3", 0]}, _meta: {title: "Save portrait"}}};
    assert.equal(outputTitle(prompt), "Save portrait");
    assert.deepEqual(jobLabel({id: "01a2081ee0070000", prompt_id: null, prompt}), {name: "Save portrait", index: null});
    prompt[10] = {class_type: "PreviewImage", inputs: {images: ["3", 0]}};
    assert.equal(outputTitle(prompt), "Save portrait +1");
  });
});
