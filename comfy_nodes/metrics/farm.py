"""FarmMetrics: the host's metrics (see the package doc). Names (all prefixed comfymq_):

  jobs{state}                       gauge      jobs in the store per state (at scrape)
  owner_jobs{owner,state}           gauge      pending and running jobs per owner ("" for none; exact: the
                                               store counts them)
  owner_at_running_limit{owner}     gauge      1 while an owner's further jobs wait for one of its runs to end
  store_fsync_seconds               histogram  the store's log syncs (one per commit group), since it opened
  jobs_waiting                      gauge      pending jobs that wait for other jobs
  oldest_pending_age_seconds        gauge      how long the oldest ready job has waited
  queue_paused                      gauge      1 while dispatch is paused
  job_transitions_total{to}         counter    state changes seen (broker events), by the state entered
  requeues_total{worker}            counter    runs that ended without a result and went back to the queue
  dead_letters_total{worker}        counter    jobs that failed for good (out of attempts, or not retryable)
  queue_wait_seconds{worker}        histogram  enqueue (or the end of the run before) -> the run's start
  run_seconds{worker,outcome}       histogram  a run's start -> its end (succeeded, failed, cancelled, requeued)
  enqueue_seconds{api}              histogram  an enqueue request's time in the HTTP handler (jobs, v2, tasks)
  enqueued_jobs_total{api}          counter    jobs those requests made
  workers{state}                    gauge      workers online / offline / draining / busy
  worker_running_jobs{worker}       gauge      jobs each online worker runs now
  worker_heartbeat_age_seconds{worker}  gauge  since each online worker was last heard from
  broker_<counter>_total            counter    the broker's own counts (messages in/out, dispatched, results,
                                               workers lost, leases released, zap denied, ...)
  store_log_bytes, store_live_bytes, store_segments, store_docs, webhook_outbox     gauges
  disk_free_bytes                   gauge      room on the store's disk
  store_writable                    gauge      0 once a failed write made the store refuse writes

The store's fsync latency is not measured here yet.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

from .exposition import Counter, Gauge, Histogram, render
from .recent import RecentStats, graph_shape

log = logging.getLogger("comfymq.metrics")

FINISHED = ("succeeded", "failed", "cancelled")


class FarmMetrics:
    def __init__(self, service):
        self.service = service
        self.transitions = Counter("comfymq_job_transitions", "job state changes seen, by the state entered", ("to",))
        self.requeues = Counter("comfymq_requeues", "runs that went back to the queue without a result", ("worker",))
        self.dead = Counter("comfymq_dead_letters", "jobs that failed for good", ("worker",))
        self.wait = Histogram("comfymq_queue_wait_seconds", "queued -> the run's start", ("worker",))
        self.run = Histogram("comfymq_run_seconds", "a run's start -> its end", ("worker", "outcome"))
        self.enqueue = Histogram("comfymq_enqueue_seconds", "an enqueue request's time in its handler", ("api",))
        self.enqueued = Counter("comfymq_enqueued_jobs", "jobs made by enqueue requests", ("api",))
        self.jobs = Gauge("comfymq_jobs", "jobs in the store per state", ("state",))
        self.owner_jobs = Gauge("comfymq_owner_jobs", "pending and running jobs per owner", ("owner", "state"))
        self.fsync: Histogram | None = None  # made at the first scrape, with the store's own bounds
        self.owner_limited = Gauge(
            "comfymq_owner_at_running_limit", "1 while an owner's further jobs wait (max_running)", ("owner",)
        )
        self.gauges = {
            name: Gauge(f"comfymq_{name}", help_)
            for name, help_ in (
                ("jobs_waiting", "pending jobs that wait for other jobs"),
                ("oldest_pending_age_seconds", "how long the oldest ready job has waited"),
                ("queue_paused", "1 while dispatch is paused"),
                ("store_log_bytes", "bytes of log segments"),
                ("store_live_bytes", "bytes of records still referenced"),
                ("store_segments", "log segments"),
                ("store_docs", "store documents (templates, webhook records, ...)"),
                ("webhook_outbox", "job endings whose webhooks are not all delivered"),
                ("disk_free_bytes", "room on the store's disk"),
                ("store_writable", "1 while the store takes writes"),
            )
        }
        self.workers = Gauge("comfymq_workers", "workers by state", ("state",))
        self.worker_jobs = Gauge("comfymq_worker_running_jobs", "jobs each online worker runs", ("worker",))
        self.worker_age = Gauge("comfymq_worker_heartbeat_age_seconds", "since a worker was last heard", ("worker",))
        self.broker: dict[str, Gauge] = {}
        self.recent = RecentStats()  # GET /comfymq/stats: throughput, wait and run per worker and template
        self._shapes: OrderedDict[str, str] = OrderedDict()  # running job -> its template or graph shape

    # -- as things happen (the service's event thread: keep it quick) --

    def __call__(self, event: dict) -> None:
        if event.get("type") != "job" or event.get("removed"):
            return
        state, was, worker = event.get("state"), event.get("from"), event.get("worker") or ""
        if not state:
            return
        self.transitions.inc(state)
        if state in FINISHED:
            self.recent.ended(state)
        if state == "running" or (was == "running" and state in FINISHED + ("pending",)):
            try:  # (the prompt once, when a run starts: its graph's shape, for a job made from no template)
                job = self.service.store.get(event["job_id"], with_prompt=state == "running")
            except Exception:  # noqa: BLE001 - gone meanwhile: nothing to time
                job = None
            if job is not None:
                self._timed(job, state, was, worker)
        if was == "running" and state == "pending":
            self.requeues.inc(worker)
        if state == "failed":
            self.dead.inc(worker)

    def _kind_of(self, job: dict) -> str:
        """The job's template name, else its graph's shape (kept from its run's start), for per-template stats."""
        t = (job.get("labels") or {}).get("comfymq/template")
        if isinstance(t, dict) and isinstance(t.get("name"), str):
            return "template " + t["name"]
        return self._shapes.get(job["id"]) or graph_shape(job.get("prompt")) or ""

    def _timed(self, job: dict, state: str, was: str | None, worker: str) -> None:
        history = job.get("history") or []
        if state == "running":
            started = job.get("started_at")
            kind = self._kind_of(job)
            self._shapes[job["id"]] = kind
            while len(self._shapes) > 100_000:
                self._shapes.popitem(last=False)
            # queued since the job was made, or since its last run ended (a requeue)
            since = history[-1].get("ended_ms") if history else job.get("enqueued_at")
            if started and since:
                seconds = max(0, started - since) / 1000
                who = worker or job.get("worker_id") or ""
                self.wait.observe(seconds, who)
                self.recent.sample("worker", who, "wait", seconds)
                self.recent.sample("template", kind, "wait", seconds)
            return
        last = history[-1] if history else {}
        start, end = last.get("started_ms"), last.get("ended_ms")
        kind = self._shapes.pop(job["id"], None) or self._kind_of(job)
        if start and end:
            outcome = "requeued" if state == "pending" else state
            seconds = max(0, end - start) / 1000
            who = worker or last.get("worker") or ""
            self.run.observe(seconds, who, outcome)
            if state == "succeeded":  # run times of what finished its work
                self.recent.sample("worker", who, "run", seconds)
                self.recent.sample("template", kind, "run", seconds)

    def stats(self) -> dict:
        """What GET /comfymq/stats adds (since this host started): throughput, and wait and run times per worker
        and per template (or graph shape)."""
        return {
            "throughput": self.recent.throughput(),
            "per_worker": self.recent.times("worker"),
            "per_template": self.recent.times("template"),
        }

    def observe_enqueue(self, api: str, seconds: float, jobs: int) -> None:
        self.enqueue.observe(seconds, api)
        self.enqueued.inc(api, by=jobs)

    # -- at scrape --

    def scrape(self) -> str:
        """The text of GET /comfymq/metrics (blocking reads: call it on the service's pool)."""
        svc = self.service
        st = svc.store.stats()
        self.jobs.set_all(dict(st["counts"].items()))
        per_owner: dict[tuple, int] = {}
        limited: dict[tuple, int] = {}
        for o in svc.store.owner_stats():
            for state in ("pending", "running"):
                if o[state]:
                    per_owner[(o["owner"], state)] = o[state]
            if o["at_running_limit"]:
                limited[(o["owner"],)] = 1
        self.owner_jobs.set_all(per_owner)
        self.owner_limited.set_all(limited)
        sync = st.get("sync")
        if sync:
            if self.fsync is None:
                self.fsync = Histogram(
                    "comfymq_store_fsync_seconds",
                    "how long the store's log syncs took (one per commit group)",
                    buckets=tuple(sync["bounds"]),
                )
            self.fsync.set_series(sync["counts"], sync["seconds"])
        g = self.gauges
        g["jobs_waiting"].set(st.get("waiting", 0))
        g["oldest_pending_age_seconds"].set(float(st.get("oldest_pending_age", 0.0)))
        g["queue_paused"].set(1 if st.get("paused") else 0)
        for k in ("log_bytes", "live_bytes", "segments", "docs"):
            g[f"store_{k}"].set(st.get(k, 0))
        g["webhook_outbox"].set(st.get("outbox", 0))
        h = svc.health()
        g["store_writable"].set(1 if h["writable"] else 0)
        if h.get("free_bytes") is not None:
            g["disk_free_bytes"].set(h["free_bytes"])
        broker = [self.transitions, self.requeues, self.dead, self.wait, self.run, self.enqueue, self.enqueued]
        broker += [
            self.jobs,
            self.owner_jobs,
            self.owner_limited,
            *([self.fsync] if self.fsync is not None else []),
            *g.values(),
            self.workers,
            self.worker_jobs,
            self.worker_age,
        ]
        if svc.broker is not None:
            now = time.time() * 1000
            ws = svc.broker.workers()
            counts = {"online": 0, "offline": 0, "draining": 0, "busy": 0}
            running, ages = {}, {}
            for w in ws:
                counts["online" if w.get("online") else "offline"] += 1
                if w.get("online"):
                    counts["draining"] += 1 if w.get("draining") else 0
                    counts["busy"] += 1 if w.get("running") else 0
                    running[w["id"]] = len(w.get("running") or [])
                    if w.get("last_seen"):
                        ages[w["id"]] = max(0.0, (now - w["last_seen"]) / 1000)
            self.workers.set_all(counts)
            self.worker_jobs.set_all(running)
            self.worker_age.set_all(ages)
            for name, value in svc.broker.counters().items():
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    continue
                m = self.broker.get(name)
                if m is None:
                    m = self.broker[name] = _CounterValue(f"comfymq_broker_{name}", f"the broker's {name} count")
                m.value = value
            broker += list(self.broker.values())
        return render(broker)


class _CounterValue:
    """A counter kept elsewhere (the broker's): rendered as it is read."""

    def __init__(self, name: str, help_: str):
        self.name, self.help, self.value = name, help_, 0

    def render(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter", f"{self.name}_total {self.value}"]
