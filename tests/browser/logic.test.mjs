// The panel's pure logic, without a browser: seeds per copy, sweep values, the job list's paging and deltas,
// the toasts' batching, the views' answers that cross events (on a stand-in DOM), "Use as input" (which node, the
// upload and ComfyUI's answer, on fake LiteGraph graphs). (Node imports the same ES
// modules ComfyUI loads.)

import {describe, it, before, after} from "node:test";
import assert from "node:assert/strict";
import {findControlled, planCopies, step, hostSeedKeys} from "../../js/lib/seeds.js";
import {parseValues, jobTotal} from "../../js/lib/sweep.js";
import {JobList} from "../../js/lib/job-list.js";
import {Notifier, waitingText} from "../../js/lib/notifier.js";
import {jobLabel, batchLabel, progressFraction, durations, shortIds, outputTitle, compactReason, isOwnerLimitReason}
  from "../../js/lib/model.js";
import {batchIdFor, applyPromptValues, enqueueWorkflow} from "../../js/lib/enqueue.js";
import {userRebound} from "../../js/lib/shortcut.js";
import {QueueView} from "../../js/panel/queue-view.js";
import {MQClient, ApiError} from "../../js/lib/client.js";
import {WorkersView} from "../../js/panel/workers-view.js";
import {StatusStore, queueTarget, noQueueReason, isWorkerRole} from "../../js/lib/status.js";
import {imageWidget, chooseTarget, canvasCenter, uploadedFile, uploadRefusal, uploadToInput, uploadName, useAsInput,
  UPLOAD_SUBFOLDER} from "../../js/lib/use-as-input.js";

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

describe("waiting reasons", () => {
  it("an owner's running limit is told from a missing model, in both the host's wordings (service.waiting_reasons)", () => {
    assert.ok(isOwnerLimitReason("owner 'ana' has 1 job running, its limit (max_running 1): this one starts when it ends"));
    assert.ok(isOwnerLimitReason("owner 'a b' has 2 jobs running, its limit (max_running 2): this one starts when one of them ends"));
    assert.ok(!isOwnerLimitReason("worker gpu-1: no model 'x.safetensors' in checkpoints"));
  });
});

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

  it("a reload of many loaded jobs asks for them in pages of at most 200, in order, and keeps them all", async () => {
    const c = fakeClient(900);
    const list = new JobList(c, {pageSize: 100});
    await list.reload();
    for (let i = 0; i < 6; i++) await list.loadMore();
    assert.equal(list.size, 700);
    c.calls.length = 0;
    await list.reload();
    const asked = c.calls.filter(([k]) => k === "list").map(([, q]) => q);
    assert.deepEqual(asked.map((q) => q.limit), [200, 200, 200, 100], "no request bigger than 200");
    assert.equal(asked[0].cursor, null);
    for (let i = 1; i < asked.length; i++) assert.ok(asked[i].cursor, "each page after the one before");
    assert.equal(list.size, 700);
    assert.deepEqual(list.ids, c.jobs.slice(200).map((j) => j.id).reverse(), "the newest 700, newest first");
    assert.equal(list.hasMore, true);
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

// ---- "Use as input" ----

/** ComfyUI's inputs of LoadImage as the frontend keeps them on the node's class (its IMAGEUPLOAD input added). */
const LOAD_IMAGE_INPUT = {required: {image: [["start.png"], {image_upload: true}],
  upload: ["IMAGEUPLOAD", {image_upload: true, imageInputName: "image"}]}};

/**
 * A node as the frontend makes it: an instance of a class that carries its definition (`nodeData`), with widgets
 * built from the definition's inputs (a combo for a list, a button for IMAGEUPLOAD, a number otherwise).
 * @param {string} type
 * @param {any} input
 */
function nodeClass(type, input) {
  return class {
    static nodeData = {name: type, input};
    /** @param {number} id @param {string} [title] */
    constructor(id, title) {
      this.id = id;
      this.type = type;
      this.title = title ?? type.replace(/([a-z])([A-Z])/g, "$1 $2");
      this.size = [300, 120];
      this.pos = [0, 0];
      this.graph = null;
      /** @type {any[]} what the widgets' callbacks were called with */
      this.calls = [];
      this.widgets = Object.entries({...input.required, ...input.optional}).map(([name, spec]) => {
        if (Array.isArray(spec[0]) || spec[0] === "COMBO") {
          const values = Array.isArray(spec[0]) ? [...spec[0]] : [...spec[1].options];
          return {name, type: "combo", value: values[0], options: {values},
            callback: (/** @type {any} */ v) => this.calls.push([name, v])};
        }
        if (spec[0] === "IMAGEUPLOAD") return {name, type: "button", value: "image", options: {serialize: false}};
        return {name, type: "number", value: 0, options: {}};
      });
    }
  };
}

const LoadImage = nodeClass("LoadImage", LOAD_IMAGE_INPUT);
const LoadImageMask = nodeClass("LoadImageMask", {required: {image: [["start.png"], {image_upload: true}],
  channel: [["alpha", "red"]], upload: ["IMAGEUPLOAD", {image_upload: true, imageInputName: "image"}]}});
// a custom node: its own type name and input name, no IMAGEUPLOAD (as /object_info has it), a V3 combo
const PhotoPicker = nodeClass("PhotoPicker", {required: {strength: ["FLOAT", {}]},
  optional: {picture: ["COMBO", {options: ["p.png"], image_upload: true}]}});
const LoadVideo = nodeClass("LoadVideo", {required: {file: ["COMBO", {options: ["v.mp4"], video_upload: true}]}});
const KSampler = nodeClass("KSampler", {required: {seed: ["INT", {}], sampler_name: [["euler", "dpmpp_2m"]]}});

/**
 * A LiteGraph graph and canvas, the parts "Use as input" touches: selection in selectedItems (a Set that holds
 * groups too) and the change tracker's captureCanvasState, or, `legacy`, in selected_nodes (id -> node) and
 * checkState as older frontends have them.
 * @param {any[]} nodes
 * @param {{legacy?: boolean}} [o]
 */
function fakeCanvas(nodes, o = {}) {
  const graph = {
    nodes: [...nodes],
    dirty: 0,
    getNodeById(/** @type {any} */ id) {
      return this.nodes.find((n) => n.id === id) ?? null;
    },
    add(/** @type {any} */ node) {
      node.id = this.nodes.length + 100;
      node.graph = this;
      this.nodes.push(node);
    },
    remove(/** @type {any} */ node) {
      this.nodes = this.nodes.filter((n) => n !== node);
      node.graph = null;
    },
    setDirtyCanvas() {
      this.dirty++;
    },
  };
  for (const n of nodes) n.graph = graph;
  /** @type {any} */
  const canvas = {graph, canvas: {clientWidth: 1000, clientHeight: 800}, ds: {scale: 2, offset: [100, 50]}};
  if (o.legacy) canvas.selected_nodes = {};
  else canvas.selectedItems = new Set();
  const tracker = {checks: 0};
  /** @type {any} */ (tracker)[o.legacy ? "checkState" : "captureCanvasState"] = () => {
    tracker.checks++;
  };
  const app = {canvas, extensionManager: {workflow: {activeWorkflow: {changeTracker: tracker}}}};
  return {app, canvas, graph, tracker, select: (/** @type {any[]} */ ...sel) => {
    if (o.legacy) canvas.selected_nodes = Object.fromEntries(sel.map((n) => [n.id, n]));
    else canvas.selectedItems = new Set(sel);
  }};
}

/**
 * The host's artifact route and ComfyUI's POST /upload/image behind one fake api: the host needs `token`; the
 * upload keeps a file's name for the same bytes and numbers it for other bytes ("x (1).png"), as ComfyUI does.
 * @param {{token?: string, artifacts?: Record<string, Uint8Array>, upload?: (form: FormData) => Response | null}} [o]
 */
function fakeComfy(o = {}) {
  const token = o.token ?? "";
  /** @type {Map<string, Uint8Array>} the input folder: "subfolder/name" -> bytes */
  const input = new Map();
  /** @type {{route: string, init: any}[]} */
  const sent = [];
  const artifacts = o.artifacts ?? {"/comfymq/artifacts/0123456789abcdef/out.png": new Uint8Array([137, 80, 78, 71, 1])};
  const same = (/** @type {Uint8Array} */ a, /** @type {Uint8Array} */ b) => a.length === b.length && a.every((x, i) => x === b[i]);
  const api = {
    async fetchApi(/** @type {string} */ route, /** @type {any} */ init = {}) {
      sent.push({route, init});
      if (route === "/upload/image") {
        const form = /** @type {FormData} */ (init.body);
        const refused = o.upload?.(form);
        if (refused) return refused;
        const file = /** @type {File} */ (form.get("image"));
        const bytes = new Uint8Array(await file.arrayBuffer());
        const sub = String(form.get("subfolder") || "");
        const dot = file.name.lastIndexOf(".");
        let name = file.name;
        for (let i = 1; input.has(`${sub}/${name}`) && !same(/** @type {Uint8Array} */ (input.get(`${sub}/${name}`)), bytes); i++) {
          name = `${file.name.slice(0, dot)} (${i})${file.name.slice(dot)}`;
        }
        input.set(`${sub}/${name}`, bytes);
        return new Response(JSON.stringify({name, subfolder: sub, type: form.get("type")}), {status: 200});
      }
      if (token && init.headers?.Authorization !== "Bearer " + token) {
        return new Response(JSON.stringify({error: {type: "unauthorized", message: "needs a token"}}), {status: 401});
      }
      const bytes = artifacts[route];
      if (!bytes) {
        return new Response(JSON.stringify({error: {type: "not_found", message: `job 0123456789abcdef has no artifact`}}),
          {status: 404});
      }
      return new Response(bytes, {status: 200, headers: {"Content-Type": "image/png"}});
    },
    apiURL: (/** @type {string} */ r) => "/api" + r,
  };
  return {api, input, sent};
}

const OUT = {url: "/comfymq/artifacts/0123456789abcdef/out.png", name: "out.png", artifact: true};

/** What a canvas's image combos hold, and the callbacks they saw. @param {any[]} nodes */
const imageState = (nodes) => nodes.map((n) => [n.widgets.find((/** @type {any} */ w) => w.type === "combo")?.value,
  n.calls.length]);

describe("use as input: which node", () => {
  it("an image-loading node is one with an image upload on a combo, whatever its type is called", () => {
    assert.equal(imageWidget(new LoadImage(1))?.name, "image");
    assert.equal(imageWidget(new LoadImageMask(2))?.name, "image");
    assert.equal(imageWidget(new PhotoPicker(3))?.name, "picture", "a custom node declaring image_upload");
    assert.equal(imageWidget(new LoadVideo(4)), null, "a video upload is not an image");
    assert.equal(imageWidget(new KSampler(5)), null);
    const plain = {id: 6, type: "LoadImage", widgets: [{name: "image", type: "combo", value: "a.png", options: {values: []}}]};
    assert.equal(imageWidget(plain), null, "the type name alone does not make one (no definition with an upload)");
    // the frontend's IMAGEUPLOAD input names the combo it uploads into, whatever that is called
    const Named = nodeClass("Named", {required: {pic: [["a.png"], {}], upload: ["IMAGEUPLOAD", {imageInputName: "pic"}]}});
    assert.equal(imageWidget(new Named(7))?.name, "pic");
  });

  it("the selected one; else the only one; else a new LoadImage; else (several, none selected) ask", () => {
    const a = new LoadImage(1);
    const b = new LoadImageMask(2);
    const k = new KSampler(3);
    const picked = (/** @type {any} */ t) => t.kind === "node" ? t.node : t;
    assert.equal(picked(chooseTarget([a, b, k], [b])), b, "the selected one among several");
    assert.equal(picked(chooseTarget([a, b, k], [k, b])), b, "other selected nodes do not count");
    assert.equal(picked(chooseTarget([a, k], [])), a, "the only one");
    assert.equal(picked(chooseTarget([a, k], [k])), a, "a selection without one: the only one");
    assert.deepEqual(chooseTarget([k], []), {kind: "new"});
    assert.deepEqual(chooseTarget([], []), {kind: "new"});
    assert.deepEqual(chooseTarget([a, b, k], []), {kind: "ambiguous", count: 2, among: "canvas"});
    assert.deepEqual(chooseTarget([a, b, k], [k]), {kind: "ambiguous", count: 2, among: "canvas"});
    assert.deepEqual(chooseTarget([a, b], [a, b]), {kind: "ambiguous", count: 2, among: "selected"});
  });

  it("a new node goes to the canvas's center, in graph coordinates", () => {
    // canvas = (graph + offset) * scale: the middle (500, 400) is graph (500 / 2 - 100, 400 / 2 - 50)
    assert.deepEqual(canvasCenter({canvas: {clientWidth: 1000, clientHeight: 800}, ds: {scale: 2, offset: [100, 50]}}),
      [150, 150]);
    assert.deepEqual(canvasCenter({canvas: {clientWidth: 600, clientHeight: 400}, ds: {scale: 1, offset: [-10, 20]}}),
      [310, 180]);
  });
});

describe("use as input: the upload", () => {
  it("ComfyUI's answer is the value: subfolder/name as it answered it", () => {
    assert.deepEqual(uploadedFile({name: "out (1).png", subfolder: "comfymq", type: "input"}),
      {name: "out (1).png", subfolder: "comfymq", path: "comfymq/out (1).png"});
    assert.equal(uploadedFile({name: "out.png", subfolder: "", type: "input"}).path, "out.png");
    assert.equal(uploadedFile({name: "out.png"}).path, "out.png");
    assert.throws(() => uploadedFile({subfolder: "comfymq"}), /names no file/);
    assert.throws(() => uploadedFile(null), /names no file/);
    assert.throws(() => uploadedFile({name: "../x.png"}), /names no file/);
    assert.throws(() => uploadedFile({name: "x.png", type: "temp"}), /temp folder/);
    assert.match(uploadRefusal(413, "Request Entity Too Large"), /larger than it accepts/);
    assert.equal(uploadRefusal(400, ""), "ComfyUI refused the upload (HTTP 400)");
    assert.equal(uploadRefusal(403, "403: Forbidden"), "ComfyUI refused the upload (HTTP 403: 403: Forbidden)");
    assert.equal(uploadRefusal(500, "<html>oops</html>"), "ComfyUI refused the upload (HTTP 500)");
    assert.equal(uploadName("sub/dir/out.png"), "out.png");
    assert.equal(uploadName(".."), "image.png");
  });

  it("posts multipart to /upload/image: the file under its name, type input, subfolder comfymq, no overwrite", async () => {
    const {api, sent} = fakeComfy();
    const r = await uploadToInput(api, new Blob([new Uint8Array([1, 2, 3])], {type: "image/png"}), "out.png");
    assert.deepEqual(r, {name: "out.png", subfolder: UPLOAD_SUBFOLDER, path: "comfymq/out.png"});
    assert.equal(sent.length, 1);
    assert.equal(sent[0].init.method, "POST");
    const form = /** @type {FormData} */ (sent[0].init.body);
    assert.equal(/** @type {File} */ (form.get("image")).name, "out.png");
    assert.deepEqual(new Uint8Array(await /** @type {File} */ (form.get("image")).arrayBuffer()), new Uint8Array([1, 2, 3]));
    assert.deepEqual([form.get("type"), form.get("subfolder"), form.get("overwrite")], ["input", "comfymq", "false"]);
    assert.equal(sent[0].init.headers?.["Content-Type"], undefined, "the browser sets the multipart boundary");
  });

  it("the client fetches a file with the token, and says why not (401, 404)", async () => {
    const {api, sent} = fakeComfy({token: "tok-1"});
    let entered = "tok-1";
    const client = new MQClient(api, () => entered);
    const blob = await client.fetchFile(OUT.url);
    assert.deepEqual(new Uint8Array(await blob.arrayBuffer()), new Uint8Array([137, 80, 78, 71, 1]));
    assert.equal(sent[0].init.headers.Authorization, "Bearer tok-1");
    await assert.rejects(client.fetchFile("/comfymq/artifacts/0123456789abcdef/gone.png"),
      (e) => e instanceof ApiError && e.status === 404 && /has no artifact/.test(e.message));
    entered = "";
    await assert.rejects(client.fetchFile(OUT.url), (e) => e.status === 401 && /needs its access token/.test(e.message));
    const before = sent.length;
    await assert.rejects(client.fetchFile(OUT.url), (e) => e.status === 401 && e.local);
    assert.equal(sent.length, before, "a refused token is not sent again");
  });
});

describe("use as input: the canvas", () => {
  it("loads the image into the only LoadImage: uploaded, the combo names the upload, its preview callback runs", async () => {
    const node = new LoadImage(1, "Load Image");
    const k = new KSampler(2);
    const {app, graph, tracker} = fakeCanvas([node, k]);
    const {api, input, sent} = fakeComfy({token: "tok-1"});
    const client = new MQClient(api, () => "tok-1");
    const t = await useAsInput({app, api, client, createNode: () => null}, OUT);
    assert.equal(t.severity, "success");
    assert.equal(t.summary, "Loaded out.png into Load Image");
    assert.deepEqual([...input.keys()], ["comfymq/out.png"]);
    assert.deepEqual(input.get("comfymq/out.png"), new Uint8Array([137, 80, 78, 71, 1]), "the artifact's bytes");
    assert.equal(sent[0].route, OUT.url);
    assert.equal(sent[0].init.headers.Authorization, "Bearer tok-1");
    const w = node.widgets[0];
    assert.equal(w.value, "comfymq/out.png");
    assert.deepEqual(w.options.values, ["start.png", "comfymq/out.png"]);
    assert.deepEqual(node.calls, [["image", "comfymq/out.png"]], "the callback that shows the image on the node");
    assert.ok(graph.dirty > 0, "the canvas redraws");
    assert.equal(tracker.checks, 1, "the workflow's change tracker sees the change (undo)");
    // the same image again: ComfyUI keeps the name for the same bytes; the choices do not grow
    await useAsInput({app, api, client, createNode: () => null}, OUT);
    assert.deepEqual(w.options.values, ["start.png", "comfymq/out.png"]);
    assert.equal(input.size, 1);
  });

  it("takes ComfyUI's name for the upload: other bytes under the same name become 'out (1).png'", async () => {
    const node = new LoadImageMask(1);
    const {app} = fakeCanvas([node]);
    const {api, input} = fakeComfy();
    input.set("comfymq/out.png", new Uint8Array([9, 9, 9]));
    const t = await useAsInput({app, api, client: new MQClient(api), createNode: () => null}, OUT);
    assert.equal(node.widgets[0].value, "comfymq/out (1).png");
    assert.equal(t.summary, "Loaded out (1).png into Load Image Mask");
    assert.deepEqual(input.get("comfymq/out.png"), new Uint8Array([9, 9, 9]), "the other file is left alone");
  });

  it("the selected image-loading node among several (selectedItems with a group, or an older selected_nodes)", async () => {
    for (const legacy of [false, true]) {
      const a = new LoadImage(1);
      const b = new PhotoPicker(2, "My picker");
      const {app, select, tracker} = fakeCanvas([a, b], {legacy});
      select(b, ...(legacy ? [] : [{id: 9, title: "Group", pos: [0, 0], size: [10, 10]}]));
      const {api} = fakeComfy();
      const t = await useAsInput({app, api, client: new MQClient(api), createNode: () => null}, OUT);
      assert.equal(t.summary, "Loaded out.png into My picker");
      assert.equal(b.widgets.find((w) => w.name === "picture")?.value, "comfymq/out.png");
      assert.equal(a.widgets[0].value, "start.png");
      assert.equal(tracker.checks, 1, legacy ? "checkState" : "captureCanvasState");
    }
  });

  it("several and none selected: asks which, fetches nothing, changes nothing", async () => {
    const a = new LoadImage(1);
    const b = new LoadImageMask(2);
    const {app, graph, select, tracker} = fakeCanvas([a, b, new KSampler(3)]);
    select(graph.nodes[2]);
    const {api, sent} = fakeComfy();
    const t = await useAsInput({app, api, client: new MQClient(api), createNode: () => assert.fail("no new node")}, OUT);
    assert.equal(t.severity, "warn");
    assert.match(t.summary || "", /^Select the node to load out\.png into/);
    assert.match(t.detail, /2 nodes that load images/);
    assert.deepEqual(sent, []);
    assert.deepEqual(imageState([a, b]), [["start.png", 0], ["start.png", 0]]);
    assert.equal(graph.nodes.length, 3);
    assert.equal(tracker.checks, 0);
  });

  it("no image-loading node: a new LoadImage at the canvas's center, once the upload is done", async () => {
    const k = new KSampler(1);
    const {app, graph} = fakeCanvas([k]);
    const {api} = fakeComfy();
    /** @type {string[]} */
    const made = [];
    const createNode = (/** @type {string} */ type) => {
      made.push(type);
      return new LoadImage(0, "Load Image");
    };
    const t = await useAsInput({app, api, client: new MQClient(api), createNode}, OUT);
    assert.deepEqual(made, ["LoadImage"]);
    assert.equal(graph.nodes.length, 2);
    const node = graph.nodes[1];
    assert.equal(node.widgets[0].value, "comfymq/out.png");
    assert.deepEqual(node.pos, [150 - 150, 150 - 60], "centered on the canvas's middle (graph 150, 150)");
    assert.equal(t.summary, "Loaded out.png into Load Image");
    assert.match(t.detail, /new node/);
  });

  it("a failure (the file gone, the token refused, the upload refused, the node deleted) changes nothing", async () => {
    /** @param {any} env @param {any} ref */
    const failing = async (env, ref, /** @type {RegExp} */ why) => {
      await assert.rejects(useAsInput(env, ref), (e) => e instanceof Error && why.test(e.message));
    };
    const node = new LoadImage(1);
    const {app, graph, tracker} = fakeCanvas([node]);
    const host = fakeComfy({token: "tok-1"});
    await failing({app, api: host.api, client: new MQClient(host.api, () => "tok-1"), createNode: () => null},
      {...OUT, url: "/comfymq/artifacts/0123456789abcdef/gone.png"}, /has no artifact/);
    await failing({app, api: host.api, client: new MQClient(host.api, () => "nope"), createNode: () => null}, OUT,
      /not this host's COMFYMQ_TOKEN/);
    assert.deepEqual(host.sent.filter((s) => s.route === "/upload/image"), [], "nothing uploaded");
    const refusing = fakeComfy({upload: () => new Response("", {status: 400})});
    await failing({app, api: refusing.api, client: new MQClient(refusing.api), createNode: () => null}, OUT,
      /ComfyUI refused the upload \(HTTP 400\)/);
    const tooBig = fakeComfy({upload: () => new Response("Request Entity Too Large", {status: 413})});
    await failing({app, api: tooBig.api, client: new MQClient(tooBig.api), createNode: () => null}, OUT, /larger than/);
    // the node is deleted while the image is on its way
    const deleting = fakeComfy({upload: () => {
      graph.remove(node);
      return null;
    }});
    await failing({app, api: deleting.api, client: new MQClient(deleting.api), createNode: () => null}, OUT,
      /no longer on the canvas/);
    assert.deepEqual(imageState([node]), [["start.png", 0]]);
    assert.deepEqual(node.widgets[0].options.values, ["start.png"]);
    assert.equal(tracker.checks, 0);
    // and with no node at all, none is added when the upload fails
    const empty = fakeCanvas([]);
    await failing({app: empty.app, api: refusing.api, client: new MQClient(refusing.api),
      createNode: () => new LoadImage(0)}, OUT, /refused/);
    assert.equal(empty.graph.nodes.length, 0);
  });
});
