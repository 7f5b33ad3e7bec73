// The panel's pure logic, without a browser: seeds per copy, sweep values, the job list's paging and deltas,
// the toasts' batching. (Node imports the same ES modules ComfyUI loads.)

import {describe, it} from "node:test";
import assert from "node:assert/strict";
import {findControlled, planCopies, step, hostSeedKeys} from "../../js/lib/seeds.js";
import {parseValues, jobTotal} from "../../js/lib/sweep.js";
import {JobList} from "../../js/lib/job-list.js";
import {Notifier} from "../../js/lib/notifier.js";
import {jobLabel, batchLabel, progressFraction, durations} from "../../js/lib/model.js";
import {batchIdFor, applyPromptValues} from "../../js/lib/enqueue.js";
import {userRebound} from "../../js/lib/shortcut.js";

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
    /** @type {Promise<void> | null} while set, a fetch answers what the job was when asked only once it resolves */
    hold: null,
    async listTasks(q) {
      calls.push(["list", q]);
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
    async getTask(id) {
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
    const held = new Promise((r) => (release = r));
    const listTasks = c.listTasks.bind(c);
    c.listTasks = async (q) => {
      const page = await listTasks(q); // what the server had when asked
      await held;
      return page;
    };
    const reloading = list.reload();
    j.state = "running";
    list.apply([{job_id: j.id, state: "running", from: "pending"}]);
    c.listTasks = listTasks;
    release();
    await reloading;
    assert.equal(list.byId.get(j.id).state, "pending", "the reload's answer predates the event");
    await list.flush();
    assert.equal(list.byId.get(j.id).state, "running");
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
      async getTask(id) {
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
    n.onTask({jobs: jobs.map((j, i) => ({job_id: j.id, state: i === 7 ? "failed" : "succeeded"}))});
    n.flush();
    await new Promise((r) => setTimeout(r, 10));
    const summaries = toasts.slice(1).map((t) => t.summary);
    assert.equal(summaries.length, 2, summaries.join(" | "));
    assert.ok(summaries.some((s) => /^Batch finished: grid \(100 jobs\)/.test(s)));
    assert.ok(summaries.some((s) => /failed/.test(s)));
  });

  it("a single job: finished toast, or the failing node and message", async () => {
    const {n, toasts} = notifier();
    n.queued({jobs: [{id: "a", state: "pending"}], batchId: null, name: "one", total: 1, how: "single"});
    n.queued({jobs: [{id: "b", state: "pending"}], batchId: null, name: "two", total: 1, how: "single"});
    n.onTask({jobs: [{job_id: "a", state: "succeeded"}, {job_id: "b", state: "failed"}]});
    n.flush();
    await new Promise((r) => setTimeout(r, 10));
    const t = toasts.slice(2);
    assert.ok(t.some((x) => x.summary === "Finished: one"));
    assert.ok(t.some((x) => x.summary === "Failed: two" && /FailNode \(#9\): boom/.test(x.detail)));
  });
});

describe("helpers", () => {
  it("labels, progress, durations, batch ids, the key", () => {
    assert.deepEqual(jobLabel({id: "01", prompt_id: "portrait v2@k3j9x2-0003"}), {name: "portrait v2", index: 3});
    assert.deepEqual(jobLabel({id: "01a208aae5e50001", prompt_id: "1b4e28ba-2fa1-11d2-883f-0016d3cca427"}),
      {name: "job e50001", index: null});
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
});
