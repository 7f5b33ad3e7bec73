"""The Python face of the native Store (comfy_nodes._native.Store), checked against comfy_nodes/_native.pyi."""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
import uuid

import pytest
from conftest import graph, now_ms, wait_until_clock_passes

JOB_ID = re.compile(r"^[0-9a-f]{16}$")


def take_job(store, job_id, worker="w1", **kw):
    """Takes the next job and checks it is `job_id`."""
    lease = store.take(worker, **kw)
    assert lease is not None, f"expected to take {job_id}, the queue gave nothing"
    assert lease["job_id"] == job_id
    return lease


# ---- enqueue and get -----------------------------------------------------------------------------------


def test_enqueue_dict_and_json_string_round_trip_to_same_dict(store):
    g = graph(7)
    a = store.enqueue(g)
    b = store.enqueue(json.dumps(g))
    assert JOB_ID.match(a["id"]) and JOB_ID.match(b["id"])
    assert a["id"] != b["id"]
    assert a["existed"] is False and b["existed"] is False
    ja, jb = store.get(a["id"]), store.get(b["id"])
    assert ja["prompt"] == g
    assert jb["prompt"] == g
    assert ja["state"] == jb["state"] == "pending"
    assert ja["workflow"] is None


def test_enqueue_keeps_workflow_priority_and_options(store):
    wf = {"nodes": [{"id": 3, "type": "KSampler"}], "links": []}
    r = store.enqueue(graph(), workflow=wf, priority=7, batch_id="b1", max_attempts=5, timeout=12.5, owner="alice")
    j = store.get(r["id"])
    assert j["workflow"] == wf
    assert j["priority"] == 7
    assert j["batch_id"] == "b1"
    assert j["max_attempts"] == 5
    assert j["timeout"] == pytest.approx(12.5)
    assert j["owner"] == "alice"
    assert j["attempts"] == 0
    # The workflow as JSON text round-trips the same way.
    r2 = store.enqueue(graph(), workflow=json.dumps(wf))
    assert store.get(r2["id"])["workflow"] == wf


def test_get_without_prompt_omits_prompt_and_workflow(store):
    r = store.enqueue(graph(), workflow={"nodes": []})
    j = store.get(r["id"], with_prompt=False)
    assert "prompt" not in j and "workflow" not in j
    assert j["id"] == r["id"]


def test_metadata_filled_in_when_missing(store):
    before = now_ms()
    r = store.enqueue(graph())
    after = now_ms()
    j = store.get(r["id"])
    pid = j["prompt_id"]
    assert isinstance(pid, str)
    parsed = uuid.UUID(pid)
    assert parsed.version == 4 and str(parsed) == pid
    assert isinstance(j["create_time"], int)
    # create_time is "now" in milliseconds (a little slack for clock granularity, not a speed check).
    assert before - 1000 <= j["create_time"] <= after + 1000
    assert before - 1000 <= j["enqueued_at"] <= after + 1000
    # A second job gets its own prompt_id.
    assert store.get(store.enqueue(graph())["id"])["prompt_id"] != pid


def test_metadata_given_is_kept(store):
    r = store.enqueue(graph(), metadata={"prompt_id": "p-given", "create_time": 1234567890123})
    j = store.get(r["id"])
    assert j["prompt_id"] == "p-given"
    assert j["create_time"] == 1234567890123
    # The keyword forms do the same.
    r2 = store.enqueue(graph(), prompt_id="p-kw", create_time=42)
    j2 = store.get_by_prompt_id("p-kw")
    assert j2["id"] == r2["id"] and j2["create_time"] == 42


def test_enqueue_is_idempotent_on_prompt_id(store):
    first = store.enqueue(graph(1), metadata={"prompt_id": "same"})
    again = store.enqueue(graph(2), metadata={"prompt_id": "same"}, priority=9)
    assert first["existed"] is False
    assert again == {"id": first["id"], "existed": True}
    j = store.get(first["id"])
    assert j["prompt"] == graph(1)  # the first job is kept unchanged
    assert j["priority"] == 1
    assert store.stats()["total"] == 1
    assert store.get_by_prompt_id("same")["id"] == first["id"]


def test_enqueue_many_adds_all(store):
    out = store.enqueue_many(
        [
            {"prompt": graph(1)},
            {"prompt": json.dumps(graph(2)), "priority": 3, "metadata": {"prompt_id": "m2"}},
            {"prompt": graph(3), "batch_id": "bb"},
        ]
    )
    assert [o["existed"] for o in out] == [False, False, False]
    ids = [o["id"] for o in out]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert store.get(ids[1])["prompt"] == graph(2)
    assert store.get(ids[1])["priority"] == 3
    assert store.get(ids[1])["prompt_id"] == "m2"
    assert store.get(ids[2])["batch_id"] == "bb"
    assert store.stats()["total"] == 3


@pytest.mark.parametrize(
    "bad_job",
    [
        {"prompt": [1]},
        {"prompt": "{}"},
        {"prompt": graph(), "max_attempts": 0},
        {"prompt": graph(), "unknown": 1},
        {"workflow": {}},
    ],
)
def test_enqueue_many_is_all_or_none(store, bad_job):
    with pytest.raises(ValueError, match="job 1"):
        store.enqueue_many([{"prompt": graph(1), "metadata": {"prompt_id": "good"}}, bad_job, {"prompt": graph(3)}])
    assert store.stats()["total"] == 0
    assert store.list()["jobs"] == []
    with pytest.raises(KeyError):
        store.get_by_prompt_id("good")


def test_enqueue_many_bad_metadata_adds_nothing(store):
    with pytest.raises(ValueError, match="'user'"):
        store.enqueue_many([{"prompt": graph(1)}, {"prompt": graph(2), "metadata": {"user": "x"}}])
    assert store.stats()["total"] == 0


def test_enqueue_many_bad_metadata_names_the_job(store):
    with pytest.raises(ValueError, match="job 1"):
        store.enqueue_many([{"prompt": graph(1)}, {"prompt": graph(2), "metadata": {"user": "x"}}])


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.enqueue_many([{"prompt": graph(1)}, {"prompt": graph(2), "priority": "high"}]),
        lambda s: s.enqueue(graph(), create_time="yesterday"),
        lambda s: s.enqueue(graph(), timeout="soon"),
        lambda s: s.enqueue("\ud800"),
    ],
    ids=["many-priority", "create_time", "timeout", "surrogate"],
)
def test_unconvertible_values_are_value_error(store, call):
    with pytest.raises(ValueError):
        call(store)
    assert store.stats()["total"] == 0


def test_enqueue_many_rejects_empty_list(store):
    with pytest.raises(ValueError):
        store.enqueue_many([])


@pytest.mark.parametrize(
    "prompt, needle",
    [
        ([1], "list"),
        (1, "int"),
        ("[1]", "array"),
        ("{}", "no nodes"),
        ({"1": {"inputs": {}}}, "class_type"),
        ({"1": {"class_type": "X", "inputs": 3}}, "inputs"),
        ({"1": {"class_type": "X"}}, "inputs"),
        ("{not json", "not valid JSON"),
        ("", "empty"),
        (None, "required"),
    ],
)
def test_enqueue_rejects_non_graph_prompts(store, prompt, needle):
    with pytest.raises(ValueError) as ei:
        store.enqueue(prompt)
    assert needle in str(ei.value)
    assert store.stats()["total"] == 0


def test_node_errors_name_the_node(store):
    with pytest.raises(ValueError, match="'17'"):
        store.enqueue({"3": {"class_type": "A", "inputs": {}}, "17": {"inputs": {}}})


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"metadata": {"user": "bob"}}, "'user'"),
        ({"metadata": {"prompt_id": 5}}, "prompt_id"),
        ({"metadata": {"create_time": "yesterday"}}, "create_time"),
        ({"metadata": [1]}, "metadata"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 101}, "max_attempts"),
        ({"timeout": -1}, "timeout"),
        ({"workflow": [1]}, "workflow"),
        ({"workflow": "[1]"}, "workflow"),
        ({"priority": 2**31}, "priority"),
    ],
)
def test_enqueue_rejects_bad_options(store, kwargs, needle):
    with pytest.raises(ValueError) as ei:
        store.enqueue(graph(), **kwargs)
    assert needle in str(ei.value)
    assert store.stats()["total"] == 0


def test_validate_prompt(native):
    native.validate_prompt(graph())
    native.validate_prompt(json.dumps(graph()))
    for bad in (
        [1],
        1,
        "[1]",
        "{}",
        "{x",
        {"1": {"class_type": "A"}},
        {"1": {"inputs": {}}},
        {"1": {"class_type": "A", "inputs": []}},
    ):
        with pytest.raises(ValueError):
            native.validate_prompt(bad)


def test_unknown_state_in_list_is_value_error(store):
    with pytest.raises(ValueError, match="bogus"):
        store.list(state="bogus")
    with pytest.raises(ValueError, match="bogus"):
        store.list(state=["pending", "bogus"])


def test_get_unknown_or_malformed_id_is_key_error(store):
    store.enqueue(graph())
    for bad in ("0000000000000001", "zz", "", "ABCDEF0123456789", "0123", "01a2082" + "0" * 20):
        with pytest.raises(KeyError):
            store.get(bad)
    with pytest.raises(KeyError):
        store.get_by_prompt_id("no-such-prompt")


# ---- dispatch and the job life cycle --------------------------------------------------------------------


def test_dispatch_is_priority_then_fifo(store):
    ids = {}
    for name, prio in [("a", 1), ("b", 5), ("c", 1), ("d", 5), ("e", 3)]:
        ids[name] = store.enqueue(graph(), priority=prio)["id"]
    order = []
    while (lease := store.take("w")) is not None:
        order.append(lease["job_id"])
    assert order == [ids[n] for n in ("b", "d", "e", "a", "c")]


def test_take_on_empty_queue_returns_none(store):
    assert store.take("w") is None


def test_take_heartbeat_progress_complete(store):
    g = graph(5)
    wf = {"nodes": []}
    jid = store.enqueue(g, workflow=wf, timeout=60)["id"]
    before = now_ms()
    lease = take_job(store, jid, "worker-1", lease=30)
    assert lease["attempt"] == 1
    assert isinstance(lease["token"], int) and lease["token"] > 0
    assert lease["expires_at"] >= before + 29_000
    assert lease["deadline_at"] is not None and lease["deadline_at"] >= before + 59_000
    assert lease["job"]["prompt"] == g and lease["job"]["workflow"] == wf
    j = store.get(jid)
    assert j["state"] == "running"
    assert j["worker_id"] == "worker-1"
    assert j["lease"]["token"] == lease["token"]
    assert j["attempts"] == 1
    assert j["started_at"] is not None

    new_expiry = store.heartbeat(jid, lease["token"], lease=120)
    assert new_expiry >= before + 119_000
    assert store.get(jid)["lease"]["expires_at"] == new_expiry

    store.progress(jid, lease["token"], {"node": "3", "value": 4, "max": 20})
    assert store.get(jid)["progress"] == {"node": "3", "value": 4, "max": 20}

    artifact = {"path": "out/img.png", "size": 3, "sha256": "ab" * 32, "mime": "image/png"}
    outputs = {"9": {"images": [{"filename": "img.png"}]}}
    store.complete(jid, lease["token"], outputs=outputs, artifacts=[artifact])
    j = store.get(jid)
    assert j["state"] == "succeeded"
    assert j["outputs"] == outputs
    assert j["artifacts"] == [artifact]
    assert j["lease"] is None
    assert j["finished_at"] is not None and j["finished_at"] >= j["started_at"]
    assert len(j["history"]) == 1
    h = j["history"][0]
    assert h["attempt"] == 1 and h["worker"] == "worker-1" and h["outcome"] == "succeeded"
    assert store.take("w") is None


def test_complete_rejects_bad_outputs_and_artifacts(store):
    jid = store.enqueue(graph())["id"]
    lease = take_job(store, jid)
    with pytest.raises(ValueError):
        store.complete(jid, lease["token"], outputs=[1])
    with pytest.raises(ValueError):
        store.complete(jid, lease["token"], artifacts=[{"path": "x"}])
    assert store.get(jid)["state"] == "running"


def test_stale_token_is_lease_lost(native, store):
    jid = store.enqueue(graph())["id"]
    lease = take_job(store, jid)
    stale = lease["token"] + 1
    with pytest.raises(native.LeaseLostError):
        store.heartbeat(jid, stale)
    with pytest.raises(native.LeaseLostError):
        store.progress(jid, stale, {"x": 1})
    with pytest.raises(native.LeaseLostError):
        store.complete(jid, stale, outputs={})
    with pytest.raises(native.LeaseLostError):
        store.fail(jid, stale, {"type": "E", "message": "m"})
    assert store.get(jid)["state"] == "running"
    assert store.complete(jid, lease["token"]) is True
    # The same result again is a resend: recognised, recorded once.
    assert store.complete(jid, lease["token"]) is False
    # Once finished, any other token is stale, and a failure from the finished run is refused.
    with pytest.raises(native.LeaseLostError):
        store.complete(jid, stale)
    with pytest.raises(native.LeaseLostError):
        store.fail(jid, lease["token"], {"type": "E", "message": "m"})
    with pytest.raises(native.LeaseLostError):
        store.heartbeat(jid, lease["token"])


def test_fail_retryable_until_max_attempts(store):
    jid = store.enqueue(graph(), max_attempts=3)["id"]
    for attempt in (1, 2, 3):
        lease = take_job(store, jid, f"w{attempt}")
        assert lease["attempt"] == attempt
        store.fail(jid, lease["token"], {"type": "Boom", "message": f"attempt {attempt}", "node_id": "3"})
        j = store.get(jid)
        assert j["attempts"] == attempt
        assert len(j["history"]) == attempt
        assert j["history"][-1]["outcome"] == "failed"
        assert j["history"][-1]["worker"] == f"w{attempt}"
        assert j["history"][-1]["error"]["message"] == f"attempt {attempt}"
        assert j["error"]["type"] == "Boom" and j["error"]["message"] == f"attempt {attempt}"
        assert j["state"] == ("pending" if attempt < 3 else "failed")
    assert j["finished_at"] is not None
    assert j["error"]["node_id"] == "3"
    assert store.take("w") is None


def test_fail_non_retryable_fails_at_once(store):
    jid = store.enqueue(graph(), max_attempts=5)["id"]
    lease = take_job(store, jid)
    store.fail(
        jid, lease["token"], {"type": "ValidationError", "message": "bad input", "details": {"k": [1]}}, retryable=False
    )
    j = store.get(jid)
    assert j["state"] == "failed"
    assert j["attempts"] == 1
    assert j["error"]["type"] == "ValidationError"
    assert j["error"]["details"] == {"k": [1]}
    assert store.take("w") is None


def test_fail_rejects_unknown_error_field(store):
    jid = store.enqueue(graph())["id"]
    lease = take_job(store, jid)
    with pytest.raises(ValueError, match="'oops'"):
        store.fail(jid, lease["token"], {"type": "E", "message": "m", "oops": 1})
    assert store.get(jid)["state"] == "running"


def test_cancel_pending_and_running(native, store):
    pending = store.enqueue(graph(1), priority=0)["id"]
    running = store.enqueue(graph(2), priority=9)["id"]
    lease = take_job(store, running)
    store.cancel(pending, "not needed")
    store.cancel(running)
    jp, jr = store.get(pending), store.get(running)
    assert jp["state"] == "cancelled" and jr["state"] == "cancelled"
    assert "not needed" in json.dumps(jp["error"])
    assert jr["lease"] is None
    # The worker of the cancelled job has lost its lease.
    with pytest.raises(native.LeaseLostError):
        store.complete(running, lease["token"])
    assert store.take("w") is None
    # Cancelling a finished job is a conflict.
    with pytest.raises(native.ConflictError):
        store.cancel(pending)
    done = store.enqueue(graph(3))["id"]
    lease = take_job(store, done)
    store.complete(done, lease["token"])
    with pytest.raises(native.ConflictError):
        store.cancel(done)
    assert store.get(done)["state"] == "succeeded"


def test_retry_only_failed_or_cancelled(native, store):
    failed = store.enqueue(graph(1), max_attempts=1)["id"]
    lease = take_job(store, failed)
    store.fail(failed, lease["token"], {"type": "E", "message": "m"})
    assert store.get(failed)["state"] == "failed"
    store.retry(failed)
    j = store.get(failed)
    assert j["state"] == "pending"
    assert len(j["history"]) == 1  # history is kept across a retry
    assert take_job(store, failed)["job_id"] == failed

    cancelled = store.enqueue(graph(2))["id"]
    store.cancel(cancelled)
    store.retry(cancelled)
    assert store.get(cancelled)["state"] == "pending"

    with pytest.raises(native.ConflictError):
        store.retry(cancelled)  # pending
    with pytest.raises(native.ConflictError):
        store.retry(failed)  # running
    succeeded = store.enqueue(graph(3), priority=99)["id"]
    lease = take_job(store, succeeded)
    store.complete(succeeded, lease["token"])
    with pytest.raises(native.ConflictError):
        store.retry(succeeded)
    with pytest.raises(KeyError):
        store.retry("0000000000000001")


def test_delete_only_finished(native, store):
    pending = store.enqueue(graph(1))["id"]
    running = store.enqueue(graph(2), priority=5)["id"]
    take_job(store, running)
    with pytest.raises(native.ConflictError):
        store.delete(pending)
    with pytest.raises(native.ConflictError):
        store.delete(running)
    assert store.stats()["total"] == 2
    store.cancel(pending)
    store.delete(pending)
    with pytest.raises(KeyError):
        store.get(pending)
    with pytest.raises(KeyError):
        store.delete(pending)
    assert store.stats()["total"] == 1


def test_pause_resume_and_persisted(native, store_dir):
    with native.Store(store_dir) as s:
        jid = s.enqueue(graph())["id"]
        assert s.paused is False
        s.pause()
        assert s.paused is True
        assert s.stats()["paused"] is True
        assert s.take("w") is None
    with native.Store(store_dir) as s:
        assert s.paused is True
        assert s.take("w") is None
        s.resume()
        assert s.paused is False
    with native.Store(store_dir) as s:
        assert s.paused is False
        assert take_job(s, jid)["job_id"] == jid


def test_take_ignore_pause(store):
    jid = store.enqueue(graph())["id"]
    store.pause()
    assert store.take("w") is None
    assert take_job(store, jid, ignore_pause=True)["job_id"] == jid


# ---- list, stats, purge ---------------------------------------------------------------------------------


def test_list_filters_by_state_and_batch(store):
    a = store.enqueue(graph(1), batch_id="x")["id"]
    b = store.enqueue(graph(2), batch_id="y", priority=9)["id"]
    c = store.enqueue(graph(3), batch_id="x")["id"]
    lease = take_job(store, b)
    store.complete(b, lease["token"])
    store.cancel(c)

    def ids(**kw):
        return [j["id"] for j in store.list(**kw)["jobs"]]

    assert ids() == [c, b, a]
    assert ids(newest_first=False) == [a, b, c]
    assert ids(state="pending") == [a]
    assert ids(state="succeeded") == [b]
    assert ids(state=["succeeded", "cancelled"]) == [c, b]
    assert ids(state=("pending", "cancelled"), newest_first=False) == [a, c]
    assert ids(state="running") == []
    assert ids(batch_id="x") == [c, a]
    assert ids(batch_id="x", state="pending") == [a]
    assert ids(batch_id="nope") == []
    listed = store.list()["jobs"]
    assert all("prompt" not in j for j in listed)
    assert store.list(with_prompt=True)["jobs"][0]["prompt"] == graph(3)


def test_list_since_until(store):
    a = store.enqueue(graph(1))["id"]
    ta = store.get(a)["enqueued_at"]
    wait_until_clock_passes(ta)
    b = store.enqueue(graph(2))["id"]
    tb = store.get(b)["enqueued_at"]
    assert tb > ta
    wait_until_clock_passes(tb)
    c = store.enqueue(graph(3))["id"]
    tc = store.get(c)["enqueued_at"]
    assert tc > tb

    def ids(**kw):
        return [j["id"] for j in store.list(newest_first=False, **kw)["jobs"]]

    assert ids(since=tb) == [b, c]  # since is inclusive
    assert ids(until=tb) == [a]  # until is exclusive
    assert ids(since=tb, until=tc) == [b]
    assert ids(since=tc + 1) == []
    assert [j["id"] for j in store.list(since=ta, until=tc)["jobs"]] == [b, a]


def test_list_limit_and_bad_cursor(store):
    store.enqueue(graph())
    with pytest.raises(ValueError):
        store.list(limit=0)
    with pytest.raises(ValueError):
        store.list(limit=1001)
    with pytest.raises(ValueError):
        store.list(cursor="not-an-id")


def _pages(store, *, limit, newest_first, between=None):
    """Walks every page; `between(page_no)` runs between pages. Returns the ids in page order."""
    seen, cursor, page_no = [], None, 0
    while True:
        page = store.list(limit=limit, cursor=cursor, newest_first=newest_first)
        assert len(page["jobs"]) <= limit
        seen.extend(j["id"] for j in page["jobs"])
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
        page_no += 1
        assert page_no < 100, "pagination does not end"
        if between:
            between(page_no)


def test_cursor_pagination_newest_first_is_stable_while_inserting(store):
    original = [r["id"] for r in store.enqueue_many([{"prompt": graph(i)} for i in range(23)])]
    inserted = []
    seen = _pages(
        store, limit=5, newest_first=True, between=lambda n: inserted.append(store.enqueue(graph(1000 + n))["id"])
    )
    assert len(inserted) == 4
    # New jobs are newer than the cursor: they never show up in later pages, nothing repeats or goes missing.
    assert seen == list(reversed(original))
    # A fresh walk sees them first.
    assert _pages(store, limit=5, newest_first=True) == list(reversed(original + inserted))


def test_cursor_pagination_oldest_first_is_stable_while_inserting(store):
    original = [r["id"] for r in store.enqueue_many([{"prompt": graph(i)} for i in range(23)])]
    inserted = []

    def insert(n):
        if n <= 3:
            inserted.append(store.enqueue(graph(1000 + n))["id"])

    seen = _pages(store, limit=5, newest_first=False, between=insert)
    assert len(inserted) == 3
    # Oldest first: the originals in order, then the jobs added meanwhile (they are newer), each once.
    assert seen == original + inserted
    assert len(set(seen)) == len(seen)


def test_stats_counts(store):
    ids = [r["id"] for r in store.enqueue_many([{"prompt": graph(i), "max_attempts": 1} for i in range(6)])]
    l1 = take_job(store, ids[0])
    store.complete(ids[0], l1["token"])
    l2 = take_job(store, ids[1])
    store.fail(ids[1], l2["token"], {"type": "E", "message": "m"})
    take_job(store, ids[2])
    store.cancel(ids[3])
    st = store.stats()
    assert st["counts"] == {"pending": 2, "running": 1, "succeeded": 1, "failed": 1, "cancelled": 1}
    assert st["total"] == 6
    assert st["paused"] is False
    assert st["finished_last_hour"] >= 2
    assert st["log_bytes"] > 0


def test_purge_removes_finished_jobs_only(store):
    ids = [r["id"] for r in store.enqueue_many([{"prompt": graph(i), "max_attempts": 1} for i in range(5)])]
    l0 = take_job(store, ids[0])
    store.complete(ids[0], l0["token"])
    l1 = take_job(store, ids[1])
    store.fail(ids[1], l1["token"], {"type": "E", "message": "m"})
    store.cancel(ids[2])
    take_job(store, ids[3])  # running
    # ids[4] stays pending
    assert store.purge(older_than_days=30) == 0  # nothing is that old
    last = max(store.get(i)["updated_at"] for i in ids)
    wait_until_clock_passes(last)
    assert store.purge(older_than_days=0) == 3
    for gone in ids[:3]:
        with pytest.raises(KeyError):
            store.get(gone)
    assert store.get(ids[3])["state"] == "running"
    assert store.get(ids[4])["state"] == "pending"
    assert store.stats()["total"] == 2
    with pytest.raises(ValueError):
        store.purge(older_than_days=-1)


# ---- leases -------------------------------------------------------------------------------------------------


def test_expire_leases_after_short_lease(native, store):
    jid = store.enqueue(graph())["id"]
    lease = take_job(store, jid, lease=0.05)
    expired = 0
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        expired = store.expire_leases()
        if expired:
            break
        time.sleep(0.01)
    assert expired == 1
    j = store.get(jid)
    assert j["state"] == "pending"
    assert j["lease"] is None
    assert j["history"][-1]["outcome"] == "lease_lost"
    with pytest.raises(native.LeaseLostError):
        store.complete(jid, lease["token"])
    assert store.expire_leases() == 0
    again = take_job(store, jid)
    assert again["attempt"] == 2
    assert again["token"] != lease["token"]


def test_live_lease_is_not_expired(store):
    jid = store.enqueue(graph())["id"]
    take_job(store, jid, lease=300)
    assert store.expire_leases() == 0
    assert store.get(jid)["state"] == "running"


def test_bad_lease_values(store):
    store.enqueue(graph())
    with pytest.raises(ValueError):
        store.take("w", lease=0)
    with pytest.raises(ValueError):
        store.take("w", lease=-3)
    assert store.stats()["counts"]["running"] == 0


# ---- durability, locking, closing ----------------------------------------------------------------------------


def test_reopen_keeps_everything(native, store_dir):
    with native.Store(store_dir) as s:
        assert s.recovery_report["checkpoint_segment"] == 0
        done = s.enqueue(graph(1), metadata={"prompt_id": "p-done"}, batch_id="bx")["id"]
        lease = take_job(s, done)
        s.complete(
            done, lease["token"], outputs={"9": {"v": 1}}, artifacts=[{"path": "a.png", "size": 1, "sha256": "00" * 32}]
        )
        pending = s.enqueue(graph(2), priority=4, workflow={"w": 1})["id"]
        cancelled = s.enqueue(graph(3))["id"]
        s.cancel(cancelled)
        before = {i: s.get(i) for i in (done, pending, cancelled)}
    with native.Store(store_dir) as s:
        report = s.recovery_report
        assert report["checkpoint_segment"] > 0
        assert "checkpoint at segment" in report["summary"]
        assert report["jobs"] == 3
        assert report["warnings"] == [] and report["bad_regions"] == [] and report["torn_tail_bytes"] == 0
        after = {i: s.get(i) for i in (done, pending, cancelled)}
        assert after == before
        assert s.get_by_prompt_id("p-done")["id"] == done
        assert s.enqueue(graph(9), metadata={"prompt_id": "p-done"}) == {"id": done, "existed": True}
        assert take_job(s, pending)["job"]["workflow"] == {"w": 1}
        new = s.enqueue(graph(4))["id"]
        assert new > cancelled  # ids keep growing after a reopen


def test_second_store_on_same_dir_is_locked(native, store, store_dir):
    with pytest.raises(native.StoreLockedError):
        native.Store(store_dir)
    store.enqueue(graph())  # the first handle is unaffected
    store.close()
    with native.Store(store_dir) as s2:  # and the lock goes with close()
        assert s2.stats()["total"] == 1


def test_closed_store_raises_comfymq_error(native, store):
    jid = store.enqueue(graph())["id"]
    store.close()
    store.close()  # closing twice is harmless
    calls = [
        lambda: store.enqueue(graph()),
        lambda: store.enqueue_many([{"prompt": graph()}]),
        lambda: store.get(jid),
        lambda: store.list(),
        lambda: store.stats(),
        lambda: store.take("w"),
        lambda: store.cancel(jid),
        lambda: store.pause(),
        lambda: store.paused,
        lambda: store.expire_leases(),
        lambda: store.purge(older_than_days=1),
        lambda: store.checkpoint(),
        lambda: store.health(),
    ]
    for call in calls:
        with pytest.raises(native.ComfyMQError, match="closed"):
            call()


def test_context_manager_closes(native, store_dir):
    with native.Store(store_dir) as s:
        assert isinstance(s, native.Store)
        s.enqueue(graph())
    with pytest.raises(native.ComfyMQError):
        s.stats()
    # Also when the block raises.
    with pytest.raises(ZeroDivisionError):
        with native.Store(store_dir) as s:
            raise ZeroDivisionError
    with pytest.raises(native.ComfyMQError):
        s.stats()
    with native.Store(store_dir) as s:  # not locked: both handles were closed
        assert s.stats()["total"] == 1


def test_checkpoint_and_compact_keep_jobs(native, store_dir):
    with native.Store(store_dir) as s:
        ids = [r["id"] for r in s.enqueue_many([{"prompt": graph(i)} for i in range(10)])]
        for i in ids[:5]:
            s.cancel(i)
            s.delete(i)
        s.checkpoint()
        s.compact()
        s.health()
        assert [j["id"] for j in s.list(newest_first=False)["jobs"]] == ids[5:]
    with native.Store(store_dir) as s:
        assert [j["id"] for j in s.list(newest_first=False)["jobs"]] == ids[5:]
        for i in ids[:5]:
            with pytest.raises(KeyError):
                s.get(i)


# ---- errors and threads ------------------------------------------------------------------------------------


def test_exception_hierarchy(native):
    assert issubclass(native.ComfyMQError, RuntimeError)
    for name in ("StoreLockedError", "DiskFullError", "CorruptionError", "ConflictError", "LeaseLostError"):
        cls = getattr(native, name)
        assert issubclass(cls, native.ComfyMQError), name
        assert cls is not native.ComfyMQError
    assert not issubclass(native.ComfyMQError, (ValueError, KeyError))
    assert native.JOB_STATES == ("pending", "running", "succeeded", "failed", "cancelled")


def _counter_advance_during(call):
    """Runs `call` on a worker thread while another thread counts; returns how far the count moved
    between just before and just after `call`, as seen from the worker thread.

    The switch interval is raised so the interpreter never forces the worker off the GIL: the counter can
    only move during `call` if `call` itself releases the GIL."""
    state = {"count": 0, "stop": False}
    started = threading.Event()
    result = {}

    def counter():
        while not state["stop"]:
            state["count"] += 1
            started.set()
            time.sleep(0.0002)  # releases the GIL so the worker can start

    def worker():
        before = state["count"]
        try:
            result["value"] = call()
        finally:
            result["advance"] = state["count"] - before

    old = sys.getswitchinterval()
    sys.setswitchinterval(30.0)
    try:
        t_count = threading.Thread(target=counter, daemon=True)
        t_count.start()
        assert started.wait(10)
        t_work = threading.Thread(target=worker)
        t_work.start()
        t_work.join(60)
        assert not t_work.is_alive()
        state["stop"] = True
        t_count.join(10)
    finally:
        sys.setswitchinterval(old)
    return result


def test_gil_held_call_does_not_advance_counter():
    # Control for the test below: a long C call that keeps the GIL lets the counter make no progress.
    r = _counter_advance_during(lambda: sum(range(5_000_000)))
    assert r["value"] == sum(range(5_000_000))
    assert r["advance"] == 0


def test_gil_released_during_enqueue_many(store):
    prompt = json.dumps(graph())  # strings: no Python code runs while the jobs are converted
    jobs = [{"prompt": prompt} for _ in range(20_000)]
    r = _counter_advance_during(lambda: store.enqueue_many(jobs))
    assert len(r["value"]) == 20_000
    assert r["advance"] >= 3, f"the counter thread advanced only {r['advance']} times during enqueue_many"
    assert store.stats()["total"] == 20_000


def test_concurrent_enqueues_from_threads(store):
    errors = []

    def work(t):
        try:
            for i in range(50):
                store.enqueue(graph(i), metadata={"prompt_id": f"t{t}-{i}"})
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert store.stats()["total"] == 400
    ids = [j["id"] for j in store.list(limit=1000, newest_first=False)["jobs"]]
    assert len(set(ids)) == 400 and ids == sorted(ids)


# ---- the commit group's writer priority ----------------------------------------------------------------


@pytest.mark.parametrize("raise_priority", [True, False])
def test_concurrent_enqueues_with_or_without_the_raised_writer_priority_are_durable_and_nice_is_restored(
    native, tmp_path, raise_priority
):
    path = str(tmp_path / "store")
    store = native.Store(path, raise_writer_priority=raise_priority)
    ids, nice_changed, errors = [], [], []
    lock = threading.Lock()

    def producer(k):
        tid = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, tid)
        try:
            for i in range(40):
                job = store.enqueue(graph(seed=k * 1000 + i), prompt_id=f"p-{k}-{i}")
                with lock:
                    ids.append(job["id"])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
        if os.getpriority(os.PRIO_PROCESS, tid) != before:  # whichever thread led a group got its own back
            nice_changed.append(tid)

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert not nice_changed
    store.close()
    with native.Store(path) as again:
        assert again.stats()["counts"]["pending"] == 320
        for job_id in ids[::37]:
            assert again.get(job_id)["state"] == "pending"
