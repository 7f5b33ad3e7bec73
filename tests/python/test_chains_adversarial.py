"""Jobs that wait for other jobs (`after`, and {"comfymq_output": ...} naming a job not done yet), attacked and
pushed: malformed `after` and output references (as objects and as JSON text spelled the ways parsers disagree
on), the job waited for ending between the host's check and the commit, deletion and retention of a job others
wait for, a long chain and a wide fan-out cancelled at once, dispatch order, retries, expansion (count, sweep)
and what the job views say.

Real store on disk, real routes (the standalone host's app over aiohttp's test client, conftest's `client` and
`service`; a host with a real broker for the `waiting` lines). Every refusal is also checked to have queued
nothing (the store's total is unchanged).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import resource

import pytest
from conftest import assert_json_error, wait_for, wait_until_clock_passes
from test_inputs_api import P, finished_job_with_files, load_image

from comfy_nodes import _native as native
from comfy_nodes.host.standalone import build_app, retention_round
from comfy_nodes.inputs.outputs import OutputResolver
from comfy_nodes.service import BrokerSettings, QueueService

SAVE = {"1": {"class_type": "SaveImage", "inputs": {}}}
MISSING_SHA = hashlib.sha256(b"an input nobody uploaded (chains)").hexdigest()
WHERE = "node 10 (LoadImage) input 'image'"


# ---- helpers ---------------------------------------------------------------------------------------------------


def out(job_id, **spec) -> dict:
    return {"comfymq_output": {"job": job_id, **(spec or {"index": 0})}}


def queue(service, *, priority: int = 1, after=None, max_attempts: int = 3) -> str:
    return service.store.enqueue(SAVE, priority=priority, after=after, max_attempts=max_attempts)["id"]


def state(service, job_id: str) -> str:
    return service.store.get(job_id, with_prompt=False)["state"]


def error_message(service, job_id: str) -> str | None:
    err = service.store.get(job_id, with_prompt=False)["error"]
    return err["message"] if err else None


def total(service) -> int:
    return service.store.stats()["total"]


def take(service, expect: str | None):
    """The next lease, which must be for `expect` (None: nothing may be dispatched)."""
    lease = service.store.take("w-test")
    if expect is None:
        assert lease is None, f"dispatched {lease and lease['job_id']}, but every ready job was taken"
        return None
    assert lease is not None, f"nothing dispatched, expected {expect}"
    assert lease["job_id"] == expect, f"dispatched {lease['job_id']}, expected {expect}"
    return lease


def succeed(service, job_id: str) -> None:
    lease = take(service, job_id)
    service.store.complete(job_id, lease["token"], outputs={})


def fail(service, job_id: str, retryable: bool = False) -> None:
    lease = take(service, job_id)
    service.store.fail(job_id, lease["token"], {"type": "execution_error", "message": "boom"}, retryable=retryable)


async def post(client, body: dict, path: str = f"{P}/jobs"):
    resp = await client.post(path, json=body)
    return resp, await resp.json()


async def refused(
    client, service, body: dict, *needles: str, path: str = f"{P}/jobs", removed_meanwhile: int = 0, case: str = ""
) -> str:
    """POSTs body, which must be a 400 (JSON error, no trace) whose message holds each needle, and queue nothing
    (removed_meanwhile: jobs the test itself deletes while the request runs; case: named in a failure)."""
    before = total(service) - removed_meanwhile
    resp = await client.post(path, json=body)
    assert resp.status == 400, (case, await resp.text())
    err = await assert_json_error(resp, 400)
    for needle in needles:
        assert needle in err["message"], (case, needle, err)
    assert len(err["message"]) < 2000, (case, "a refusal does not echo what it was sent")
    assert total(service) == before, (case, "a refused request queued nothing")
    return err["message"]


async def queued(client, body: dict, path: str = f"{P}/jobs") -> dict:
    resp, answer = await post(client, body, path)
    assert resp.status == 200, answer
    return answer


# ---- malformed `after` -------------------------------------------------------------------------------------------


AFTER_CASES = {
    "a string": lambda dep: "x",
    "the id, not a list": lambda dep: dep,
    "an object": lambda dep: {"job": dep},
    "an int": lambda dep: [1],
    "a bool": lambda dep: [True],
    "null in the list": lambda dep: [None],
    "a nested list": lambda dep: [[dep]],
    "objects": lambda dep: [{"id": dep}],
    "uppercase hex": lambda dep: [dep.upper()],
    "a trailing newline": lambda dep: [dep + "\n"],
    "a leading space": lambda dep: [" " + dep],
    "15 digits": lambda dep: [dep[:15]],
    "17 digits": lambda dep: [dep + "0"],
    "0x prefixed": lambda dep: ["0x" + dep[2:]],
    "the zero id": lambda dep: ["0" * 16],
    "an unknown id": lambda dep: ["f" * 16],
    "one good, one unknown": lambda dep: [dep, "e" * 16],
    "65 distinct ids": lambda dep: [f"{i:016x}" for i in range(1, 66)],
    "a huge string": lambda dep: ["a" * 1_000_000],
    "fullwidth digits": lambda dep: ["\uff10" * 16],
}


@pytest.mark.parametrize("shape", ["single", "count", "sweep"])
@pytest.mark.asyncio
async def test_a_malformed_after_is_a_400_and_queues_nothing(client, service, shape):
    dep = queue(service)
    for case, after in AFTER_CASES.items():
        body = {"prompt": load_image("x.png"), "after": after(dep)}
        if shape == "count":
            body["count"] = 3
        elif shape == "sweep":
            body["sweep"] = {"10.image": ["a.png", "b.png"]}
        message = await refused(client, service, body, case=case)
        assert "after" in message or "job" in message, (case, message)
    assert service.store.stats()["waiting"] == 0


@pytest.mark.asyncio
async def test_duplicate_after_ids_count_once_and_the_limit_counts_output_references_too(client, service):
    dep = queue(service)
    answer = await queued(client, {"prompt": SAVE, "after": [dep] * 500})
    assert answer["jobs"][0]["after"] == [dep]
    # 64 distinct jobs: the most one job may wait for; one more through an output reference is a 400
    many = [r["id"] for r in service.store.enqueue_many([{"prompt": SAVE} for _ in range(65)])]
    answer = await queued(client, {"prompt": SAVE, "after": many[:64]})
    assert service.store.get(answer["jobs"][0]["id"], with_prompt=False)["after"] == sorted(many[:64])
    await refused(client, service, {"prompt": load_image(out(many[64])), "after": many[:64]}, "at most 64")
    await refused(client, service, {"prompt": load_image(out(many[64])), "after": many[:64], "count": 2}, "at most 64")
    # ... but an output reference to one of the 64 adds nothing
    answer = await queued(client, {"prompt": load_image(out(many[0])), "after": many[:64]})
    assert len(answer["jobs"][0]["after"]) == 64


# ---- malformed output references ----------------------------------------------------------------------------------


SPEC_CASES = {
    "bool index": lambda dep: {"job": dep, "index": True},
    "false index": lambda dep: {"job": dep, "index": False},
    "negative index": lambda dep: {"job": dep, "index": -1},
    "float index": lambda dep: {"job": dep, "index": 0.0},
    "string index": lambda dep: {"job": dep, "index": "0"},
    "list index": lambda dep: {"job": dep, "index": [0]},
    "object index": lambda dep: {"job": dep, "index": {"n": 0}},
    "nothing named": lambda dep: {"job": dep},
    "only a null index": lambda dep: {"job": dep, "index": None},
    "uppercase job": lambda dep: {"job": dep.upper(), "index": 0},
    "job as object": lambda dep: {"job": {"id": dep}, "index": 0},
    "job as list": lambda dep: {"job": [dep], "index": 0},
    "job as int": lambda dep: {"job": int(dep, 16), "index": 0},
    "empty job": lambda dep: {"job": "", "index": 0},
    "huge job": lambda dep: {"job": dep * 10_000, "index": 0},
    "unknown job": lambda dep: {"job": "f" * 16, "index": 0},
    "extra key": lambda dep: {"job": dep, "index": 0, "path": "/etc/passwd"},
    "nested after key": lambda dep: {"job": dep, "index": 0, "after": [dep]},
    "index and filename": lambda dep: {"job": dep, "index": 0, "filename": "a.png"},
    "filename and node": lambda dep: {"job": dep, "filename": "a.png", "node": "9"},
    "int node": lambda dep: {"job": dep, "node": 9},
    "empty node": lambda dep: {"job": dep, "node": ""},
    "huge node": lambda dep: {"job": dep, "node": "9" * 257},
    "empty filename": lambda dep: {"job": dep, "filename": ""},
    "huge filename": lambda dep: {"job": dep, "filename": "a" * 256},
    "filename as list": lambda dep: {"job": dep, "filename": ["a.png"]},
}
WRAPPER_CASES = {
    "spec a string": lambda dep: {"comfymq_output": dep},
    "spec a list": lambda dep: {"comfymq_output": [dep, 0]},
    "spec null": lambda dep: {"comfymq_output": None},
    "an extra key beside it": lambda dep: {"comfymq_output": {"job": dep, "index": 0}, "name": "x.png"},
    "with comfymq_input beside it": lambda dep: {"comfymq_output": {"job": dep, "index": 0}, "comfymq_input": "0"},
}


@pytest.mark.parametrize("form", ["object", "text", "sweep"])
@pytest.mark.asyncio
async def test_a_malformed_output_reference_to_a_pending_job_is_a_400_naming_the_input(client, service, form):
    dep = queue(service)
    for case in list(SPEC_CASES) + list(WRAPPER_CASES):
        value = WRAPPER_CASES[case](dep) if case in WRAPPER_CASES else {"comfymq_output": SPEC_CASES[case](dep)}
        if form == "object":
            body = {"prompt": load_image(value)}
        elif form == "text":
            body = {"prompt": json.dumps(load_image(value))}
        else:
            body = {"prompt": load_image("x.png"), "sweep": {"10.image": ["a.png", out(dep), value]}}
        await refused(client, service, body, WHERE, case=case)
    assert service.store.stats()["waiting"] == 0


# ---- JSON text spelled the ways parsers differ on ---------------------------------------------------------------


def text_with(image_text: str, bom: bool = False) -> str:
    return ("\ufeff" if bom else "") + (
        '{"10": {"class_type": "LoadImage", "inputs": {%s}},'
        ' "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0]}}}' % image_text
    )


SPELLINGS = {
    "plain": lambda job: text_with('"image": {"comfymq_output": {"job": "%s", "index": 0}}' % job),
    "escaped key": lambda job: text_with('"image": {"comfymq\\u005foutput": {"job": "%s", "index": 0}}' % job),
    "all escaped": lambda job: text_with(
        '"image": {"\\u0063\\u006f\\u006d\\u0066\\u0079\\u006d\\u0071\\u005f\\u006f\\u0075\\u0074\\u0070\\u0075\\u0074":'
        ' {"\\u006aob": "%s", "\\u0069ndex": 0}}' % job
    ),
    "escaped job value": lambda job: text_with(
        '"image": {"comfymq_output": {"job": "%s", "index": 0}}' % "".join(f"\\u{ord(c):04x}" for c in job)
    ),
    "bom": lambda job: text_with('"image": {"comfymq_output": {"job": "%s", "index": 0}}' % job, bom=True),
    "bom and escape": lambda job: text_with('"image": {"comfymq\\u005foutput": {"job": "%s", "index": 0}}' % job, True),
    "duplicate input key, the reference last": lambda job: text_with(
        '"image": "x.png", "image": {"comfymq\\u005foutput": {"job": "%s", "index": 0}}' % job
    ),
    "duplicate spec key, the real job last": lambda job: text_with(
        '"image": {"comfymq_output": {"job": "ffffffffffffffff", "job": "%s", "index": 0}}' % job
    ),
    "whitespace everywhere": lambda job: (
        "\n\t " + text_with('"image" :\r\n{ "comfymq_output" : { "job" : "%s" , "index" : 0 } }' % job) + " \n"
    ),
}


@pytest.mark.parametrize("spelling", list(SPELLINGS))
@pytest.mark.asyncio
async def test_a_reference_to_a_pending_job_waits_however_the_text_spells_it(client, service, spelling):
    dep = queue(service)
    answer = await queued(client, {"prompt": SPELLINGS[spelling](dep)})
    job_id = answer["jobs"][0]["id"]
    job = service.store.get(job_id, with_prompt=True)
    assert job["after"] == [dep], "the job waits for the job its reference names"
    assert job["prompt"]["10"]["inputs"]["image"] == {"comfymq_output": {"job": dep, "index": 0}}
    take(service, dep)  # the dependent is not dispatched beside it
    take(service, None)


@pytest.mark.asyncio
async def test_a_reference_that_cannot_be_waited_for_is_refused_however_the_text_spells_it(client, service):
    cancelled = queue(service)
    service.store.cancel(cancelled, "gone")
    targets = {
        "unknown": ("0123456789abcdef", "does not have"),
        "failed": (finished_job_with_files(service, {}, state="failed"), "ended failed"),
        "cancelled": (cancelled, "ended cancelled"),
    }
    for target, (job, needle) in targets.items():
        for spelling, text in SPELLINGS.items():
            await refused(client, service, {"prompt": text(job)}, WHERE, needle, case=f"{target}, {spelling}")


NUL_CASES = {
    "a pending job": lambda dep: out(dep),
    "an unknown job": lambda dep: out("0123456789abcdef"),
    "a malformed spec": lambda dep: out(dep, index=True),
    "an input the host does not hold": lambda dep: {"comfymq_input": MISSING_SHA, "name": "../../x"},
}


@pytest.mark.parametrize("case", list(NUL_CASES))
@pytest.mark.asyncio
async def test_a_text_prompt_hiding_a_reference_behind_a_nul_is_read_as_the_store_reads_it(client, service, case):
    dep = queue(service)
    text = json.dumps(load_image(NUL_CASES[case](dep))) + "\u0000 trailing bytes the store never reads"
    before = total(service)
    resp, answer = await post(client, {"prompt": text})
    if resp.status == 200:
        job = service.store.get(answer["jobs"][0]["id"], with_prompt=False)
        assert case == "a pending job", f"queued a reference to {case}: {answer}"
        assert job["after"] == [dep], "queued without waiting for the job its reference names"
        take(service, dep)
        take(service, None)
    else:
        assert resp.status == 400 and total(service) == before, answer


@pytest.mark.parametrize("tail", ["\u00a0", "\ufeff"])
@pytest.mark.asyncio
async def test_a_text_prompt_with_a_stray_trailing_character_is_refused_saying_why(client, service, tail):
    dep = queue(service)
    await refused(client, service, {"prompt": json.dumps(load_image(out(dep))) + tail}, "prompt")


@pytest.mark.parametrize("spelling", ["plain", "escaped key", "bom"])
@pytest.mark.asyncio
async def test_the_seed_tasks_route_takes_no_output_reference(client, service, spelling):
    dep = queue(service)
    await refused(client, service, {"prompt": SPELLINGS[spelling](dep)}, "another job's output", path="/tasks")
    await refused(client, service, {"prompt": load_image(out(dep))}, "another job's output", path="/tasks")
    await refused(client, service, {"prompt": SAVE, "after": [dep]}, "after", path="/tasks")


# ---- the job waited for ends between the host's check and the commit ---------------------------------------------


@pytest.mark.parametrize("ending", ["cancelled", "deleted"])
@pytest.mark.parametrize("expanding", [False, True])
@pytest.mark.asyncio
async def test_a_dep_that_ends_between_the_check_and_the_commit_queues_nothing(
    client, service, monkeypatch, ending, expanding
):
    dep = queue(service)
    real = OutputResolver.__call__

    def racing(self, value, where):
        resolved = real(self, value, where)  # it saw the job pending: the new one is to wait for it
        if state(service, dep) == "pending":
            service.store.cancel(dep, "cancelled meanwhile")
            if ending == "deleted":
                service.store.delete(dep)
        return resolved

    monkeypatch.setattr(OutputResolver, "__call__", racing)
    body = {"prompt": load_image(out(dep))}
    if expanding:
        body["count"] = 3
    needle = f"no job {dep}" if ending == "deleted" else f"job {dep} is cancelled"
    await refused(client, service, body, needle, removed_meanwhile=int(ending == "deleted"))
    assert service.store.stats()["waiting"] == 0


@pytest.mark.asyncio
async def test_a_dep_that_succeeds_between_the_check_and_the_commit_is_ready_at_once(client, service, monkeypatch):
    dep = queue(service)
    real = OutputResolver.__call__

    def racing(self, value, where):
        resolved = real(self, value, where)
        if state(service, dep) == "pending":
            succeed(service, dep)
        return resolved

    monkeypatch.setattr(OutputResolver, "__call__", racing)
    answer = await queued(client, {"prompt": load_image(out(dep, filename="a.png"))})
    job_id = answer["jobs"][0]["id"]
    assert service.store.get(job_id, with_prompt=False)["after"] == [dep]
    assert service.store.stats()["waiting"] == 0
    take(service, job_id)


@pytest.mark.asyncio
async def test_requests_racing_the_cancel_of_their_dep_never_leave_a_job_waiting_for_it(client, service):
    """60 requests naming a job while it is cancelled: each is refused or queued and then cancelled with it; none is
    left pending for a job that cannot succeed."""
    dep = queue(service)

    async def one(i):
        body = {"prompt": load_image(out(dep))} if i % 2 else {"prompt": SAVE, "after": [dep]}
        if i % 3 == 0:
            body["count"] = 2
        resp = await client.post(f"{P}/jobs", json=body)
        return resp.status, await resp.json()

    async def cancel():
        await asyncio.sleep(0)
        resp = await client.post(f"{P}/jobs/{dep}/cancel", json={})
        return resp.status, await resp.json()

    results = await asyncio.gather(*(one(i) for i in range(30)), cancel(), *(one(i) for i in range(30, 60)))
    queued_ids = []
    for status, body in results:
        assert status in (200, 400), body
        if status == 200 and "jobs" in body:
            queued_ids += [j["id"] for j in body["jobs"]]
    assert state(service, dep) == "cancelled"
    for job_id in queued_ids:
        assert state(service, job_id) == "cancelled", job_id
        assert error_message(service, job_id) == f"it waits for job {dep}, which was cancelled"
    assert service.store.stats()["waiting"] == 0 and service.store.stats()["counts"]["pending"] == 0
    take(service, None)


# ---- deletion and retention of a job others wait for ----------------------------------------------------------


@pytest.mark.asyncio
async def test_deleting_a_succeeded_dep_cancels_its_pending_dependents_down_the_chain(client, service):
    dep = queue(service, priority=100)
    child = (await queued(client, {"prompt": load_image(out(dep, filename="a.png"))}))["jobs"][0]["id"]
    grandchild = (await queued(client, {"prompt": SAVE, "after": [child]}))["jobs"][0]["id"]
    unrelated = queue(service, priority=-5)
    assert service.store.stats()["waiting"] == 2
    resp = await client.delete(f"{P}/jobs/{dep}", headers={"Content-Type": "application/json"})
    assert resp.status == 409, "a pending job is not deleted"
    succeed(service, dep)
    assert service.store.stats()["waiting"] == 1  # the child is ready now, the grandchild still waits
    resp = await client.delete(f"{P}/jobs/{child}", headers={"Content-Type": "application/json"})
    assert resp.status == 409, "nor is a pending dependent"
    resp = await client.delete(f"{P}/jobs/{dep}", headers={"Content-Type": "application/json"})
    assert resp.status == 200, await resp.text()
    assert state(service, child) == "cancelled"
    assert error_message(service, child) == f"it waits for job {dep}, which was deleted"
    assert state(service, grandchild) == "cancelled"
    assert error_message(service, grandchild) == f"it waits for job {child}, which was cancelled"
    assert service.store.stats()["waiting"] == 0
    take(service, unrelated)  # the cancelled child is not dispatched
    take(service, None)
    # a retry of either is refused, naming the job it waits for
    resp = await client.post(f"{P}/jobs/{child}/retry", json={})
    err = await assert_json_error(resp, 409)
    assert f"it waits for job {dep}, which was deleted" in err["message"], err
    resp = await client.post(f"{P}/jobs/{grandchild}/retry", json={})
    err = await assert_json_error(resp, 409)
    assert f"it waits for job {child}, which was cancelled" in err["message"]


@pytest.mark.parametrize("how", ["purge", "retention_round"])
@pytest.mark.asyncio
async def test_retention_of_a_succeeded_dep_cancels_its_pending_dependent(client, service, how):
    dep = queue(service, priority=100)
    child = (await queued(client, {"prompt": SAVE, "after": [dep]}))["jobs"][0]["id"]
    succeed(service, dep)
    wait_until_clock_passes(service.store.get(dep, with_prompt=False)["finished_at"])
    if how == "purge":
        assert service.store.purge(older_than_days=0) == 1
    else:
        await retention_round(service, 1e-9)
    with pytest.raises(KeyError):
        service.store.get(dep)
    assert state(service, child) == "cancelled"
    assert error_message(service, child) == f"it waits for job {dep}, which was deleted"
    take(service, None)


# ---- a long chain, a wide fan-out ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["fails", "cancelled over the API"])
@pytest.mark.asyncio
async def test_a_chain_of_200_is_cancelled_whole_when_its_first_job_ends(client, service, ending):
    first = queue(service, priority=100, max_attempts=1)
    chain = [first]
    for i in range(200):  # every other link through an output reference, the rest through `after`
        body = {"prompt": load_image(out(chain[-1]))} if i % 2 else {"prompt": SAVE, "after": [chain[-1]]}
        chain.append((await queued(client, body))["jobs"][0]["id"])
    assert service.store.stats()["waiting"] == 200
    if ending == "fails":
        fail(service, first, retryable=True)  # the last attempt: a failure for good
        verb = "failed"
    else:
        resp = await client.post(f"{P}/jobs/{first}/cancel", json={"reason": "stop"})
        assert resp.status == 200
        verb = "was cancelled"
    # all of it by the time the one change returned
    stats = service.store.stats()
    assert stats["waiting"] == 0 and stats["counts"]["pending"] == 0
    assert stats["counts"]["cancelled"] == 200 + (verb == "was cancelled")
    assert error_message(service, chain[1]) == f"it waits for job {first}, which {verb}"
    for prev, job_id in zip(chain[1:], chain[2:], strict=False):
        assert error_message(service, job_id) == f"it waits for job {prev}, which was cancelled"
    take(service, None)


def test_a_chain_survives_a_reopen_and_a_compaction(tmp_path):
    path = str(tmp_path / "store")
    s = native.Store(path)
    try:
        first = s.enqueue(SAVE)["id"]
        chain = [first]
        for _ in range(50):
            chain.append(s.enqueue(SAVE, after=[chain[-1]], priority=1000)["id"])
        junk = [r["id"] for r in s.enqueue_many([{"prompt": SAVE, "priority": -1} for _ in range(20)])]
        for j in junk:
            s.cancel(j)
            s.delete(j)
        s.checkpoint()
        s.compact()
    finally:
        s.close()
    s = native.Store(path)
    try:
        assert s.stats()["waiting"] == 50
        assert [s.get(j, with_prompt=False)["after"] for j in chain[1:4]] == [[chain[0]], [chain[1]], [chain[2]]]
        lease = s.take("w")
        assert lease["job_id"] == first and s.take("w") is None  # priority 1000 does not jump the wait
        s.complete(first, lease["token"], outputs={})
        lease = s.take("w")
        assert lease["job_id"] == chain[1]
        s.fail(chain[1], lease["token"], {"type": "x", "message": "boom"}, retryable=False)
        assert s.stats()["waiting"] == 0 and s.stats()["counts"]["cancelled"] == 49
    finally:
        s.close()
    s = native.Store(path)  # and the cancellations are there after another reopen
    try:
        assert s.stats()["counts"]["cancelled"] == 49 and s.stats()["waiting"] == 0
        assert s.get(chain[-1], with_prompt=False)["error"]["message"].endswith("which was cancelled")
    finally:
        s.close()


@pytest.mark.asyncio
async def test_a_fan_out_of_10000_is_cancelled_with_the_job_it_waits_for(client, service):
    dep = queue(service, priority=100)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    service.store.enqueue_many([{"prompt": SAVE, "after": [dep], "batch_id": "fan-a"} for _ in range(5000)])
    answer = await queued(
        client, {"prompt": load_image(out(dep)), "count": 5000, "keep_seeds": True, "batch_id": "fan-b"}
    )
    assert answer["count"] == 5000
    assert answer["waiting"] == [f"waits for job {dep} (pending) to succeed"]
    assert service.store.stats()["waiting"] == 10000
    take(service, dep)  # running: nothing else is ready
    take(service, None)
    resp = await client.post(f"{P}/jobs/{dep}/cancel", json={})
    assert resp.status == 200
    stats = service.store.stats()
    assert stats["waiting"] == 0 and stats["counts"]["pending"] == 0 and stats["counts"]["cancelled"] == 10001
    for batch in ("fan-a", "fan-b"):
        body = await (await client.get(f"{P}/batches/{batch}")).json()
        assert body["counts"]["cancelled"] == 5000 and body["done_fraction"] == 1.0, body
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mib < 512, f"10,000 waiting jobs took {grown_mib:.0f} MiB"


def test_a_fan_out_past_one_commits_cancels_is_cancelled_whole(service):
    """More dependents than one commit cancels (10,000): the rest follow, none is left waiting or dispatched."""
    dep = queue(service, priority=100)
    kids = [r["id"] for r in service.store.enqueue_many([{"prompt": SAVE, "after": [dep]} for _ in range(12000)])]
    grandkids = service.store.enqueue_many([{"prompt": SAVE, "after": [k]} for k in kids[-100:]])
    service.store.cancel(dep, "enough")
    wait_for(lambda: service.store.stats()["counts"]["pending"] == 0, timeout=20, what="every dependent cancelled")
    assert service.store.stats()["waiting"] == 0
    assert error_message(service, kids[-1]) == f"it waits for job {dep}, which was cancelled"
    assert error_message(service, grandkids[-1]["id"]) == f"it waits for job {kids[-1]}, which was cancelled"
    take(service, None)


# ---- dispatch order ----------------------------------------------------------------------------------------------


def test_a_waiting_job_is_dispatched_only_once_its_dep_succeeded_and_priority_never_jumps_the_wait(service):
    dep = queue(service, priority=0)
    urgent = queue(service, priority=1_000_000, after=[dep])
    filler = [queue(service, priority=5) for _ in range(2)]
    assert service.store.stats()["waiting"] == 1
    take(service, filler[0])
    take(service, filler[1])
    lease = take(service, dep)
    take(service, None)  # the urgent one waits while its dep runs
    later = queue(service, priority=5)
    service.store.pause()
    service.store.complete(dep, lease["token"], outputs={})
    assert service.store.stats()["waiting"] == 0
    take(service, None)  # paused: nothing, ready or not
    service.store.resume()
    take(service, urgent)  # ready now: its priority orders it among the ready ones
    take(service, later)


def test_a_job_with_two_deps_waits_for_both_and_dies_with_either(service):
    a, b = queue(service, priority=10), queue(service, priority=9)
    both = queue(service, priority=100, after=[b, a, a])
    assert service.store.get(both, with_prompt=False)["after"] == sorted([a, b])
    succeed(service, a)
    lease_b = take(service, b)
    take(service, None)
    service.store.cancel(b, "no")
    assert state(service, both) == "cancelled"
    assert error_message(service, both) == f"it waits for job {b}, which was cancelled"
    assert lease_b is not None


def test_a_retryable_failure_of_the_dep_is_not_the_end_but_its_last_one_is(service):
    dep = queue(service, priority=10, max_attempts=2)
    child = queue(service, after=[dep])
    fail(service, dep, retryable=True)  # attempt 1 of 2: back to pending
    assert state(service, dep) == "pending" and state(service, child) == "pending"
    assert service.store.stats()["waiting"] == 1
    fail(service, dep, retryable=True)  # attempt 2 of 2: failed for good
    assert state(service, dep) == "failed"
    assert error_message(service, child) == f"it waits for job {dep}, which failed"


def test_a_lost_lease_on_the_last_attempt_cancels_the_dependents(service):
    dep = queue(service, priority=10, max_attempts=1)
    child = queue(service, after=[dep])
    assert service.store.take("w", lease=0.05)["job_id"] == dep
    wait_for(lambda: service.store.expire_leases() > 0 or state(service, dep) != "running", timeout=10)
    assert state(service, dep) == "failed"
    assert error_message(service, child) == f"it waits for job {dep}, which failed"
    take(service, None)


@pytest.mark.asyncio
async def test_cancelling_a_running_dep_or_its_batch_cancels_the_dependents(client, service):
    dep = queue(service, priority=10)
    child = (await queued(client, {"prompt": SAVE, "after": [dep]}))["jobs"][0]["id"]
    take(service, dep)
    resp = await client.post(f"{P}/jobs/{dep}/cancel", json={})
    assert resp.status == 200 and state(service, child) == "cancelled"
    # a whole batch cancelled: the jobs of other batches waiting for it go too
    deps = (await queued(client, {"prompt": SAVE, "count": 3, "batch_id": "deps"}))["jobs"]
    kids = (await queued(client, {"prompt": SAVE, "after": [d["id"] for d in deps], "count": 2, "batch_id": "k"}))[
        "jobs"
    ]
    resp = await client.post(f"{P}/batches/deps/cancel", json={})
    assert (await resp.json())["cancelled"] == 3
    assert [state(service, k["id"]) for k in kids] == ["cancelled", "cancelled"]
    assert service.store.stats()["waiting"] == 0


# ---- retries -----------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_retry_runs_back_up_the_chain_in_order_and_refuses_a_dependent_first(client, service):
    a = queue(service, priority=10, max_attempts=1)
    b = (await queued(client, {"prompt": load_image(out(a)), "priority": 20}))["jobs"][0]["id"]
    c = (await queued(client, {"prompt": SAVE, "after": [b], "priority": 30}))["jobs"][0]["id"]
    fail(service, a)
    assert [state(service, j) for j in (a, b, c)] == ["failed", "cancelled", "cancelled"]
    for job_id, dep, verb in ((c, b, "was cancelled"), (b, a, "failed")):
        resp = await client.post(f"{P}/jobs/{job_id}/retry", json={})
        err = await assert_json_error(resp, 409)
        assert err["type"] == "conflict"
        assert f"it waits for job {dep}, which {verb}" in err["message"], err
        assert state(service, job_id) == "cancelled", "a refused retry changes nothing"
    for job_id in (a, b, c):
        resp = await client.post(f"{P}/jobs/{job_id}/retry", json={})
        assert resp.status == 200, await resp.text()
    assert service.store.stats()["waiting"] == 2
    succeed(service, a)
    succeed(service, b)
    succeed(service, c)
    assert [state(service, j) for j in (a, b, c)] == ["succeeded"] * 3


@pytest.mark.asyncio
async def test_a_cancelled_dependent_whose_dep_succeeded_retries_into_the_ready_queue(client, service):
    dep = queue(service, priority=10)
    child = (await queued(client, {"prompt": SAVE, "after": [dep]}))["jobs"][0]["id"]
    resp = await client.post(f"{P}/jobs/{child}/cancel", json={})
    assert resp.status == 200
    succeed(service, dep)
    resp = await client.post(f"{P}/jobs/{child}/retry", json={})
    assert resp.status == 200
    assert service.store.stats()["waiting"] == 0
    take(service, child)


@pytest.mark.asyncio
async def test_naming_a_dead_job_is_a_400_but_a_prompt_id_already_queued_returns_that_job(client, service):
    dep = queue(service, priority=10)
    first = await queued(client, {"prompt": SAVE, "after": [dep], "metadata": {"prompt_id": "same"}})
    other = queue(service)
    again = await queued(client, {"prompt": SAVE, "after": [other], "metadata": {"prompt_id": "same"}})
    assert again.get("existed") is True and again["jobs"][0]["id"] == first["jobs"][0]["id"]
    assert again["jobs"][0]["after"] == [dep], "the job already queued keeps what it waits for"
    # ... also when the new request names a job that cannot be waited for: nothing new is queued
    gone = queue(service)
    service.store.cancel(gone)
    before = total(service)
    again = await queued(client, {"prompt": SAVE, "after": [gone], "metadata": {"prompt_id": "same"}})
    assert again.get("existed") is True and total(service) == before
    service.store.cancel(dep, "x")
    await refused(client, service, {"prompt": SAVE, "after": [dep]}, f"job {dep} is cancelled", "retry it first")
    await refused(client, service, {"prompt": load_image(out(dep))}, WHERE, "ended cancelled")


@pytest.mark.asyncio
async def test_the_answer_for_an_existing_prompt_id_says_what_that_job_waits_for(client, service):
    dep, other = queue(service, priority=10), queue(service)
    await queued(client, {"prompt": SAVE, "after": [dep], "metadata": {"prompt_id": "once"}})
    again = await queued(client, {"prompt": SAVE, "after": [other], "metadata": {"prompt_id": "once"}})
    assert again["existed"] is True and again["jobs"][0]["after"] == [dep]
    assert again["waiting"] == [f"waits for job {dep} (pending) to succeed"], again["waiting"]


def test_deleting_one_of_two_succeeded_deps_cancels_the_ready_dependent(service):
    a, b = queue(service, priority=10), queue(service, priority=9)
    both = queue(service, after=[a, b])
    succeed(service, a)
    succeed(service, b)
    assert service.store.stats()["waiting"] == 0  # ready
    service.store.delete(b)
    assert error_message(service, both) == f"it waits for job {b}, which was deleted"
    stats = service.store.stats()
    assert stats["waiting"] == 0 and stats["counts"]["pending"] == 0
    take(service, None)
    service.store.delete(a)
    assert service.store.stats()["waiting"] == 0


def test_a_running_dependent_whose_dep_was_deleted_is_not_run_again(service):
    dep = queue(service, priority=10)
    child = queue(service, after=[dep])
    succeed(service, dep)
    lease = take(service, child)
    service.store.delete(dep)  # (a running job is left to finish)
    assert state(service, child) == "running"
    service.store.fail(child, lease["token"], {"type": "execution_error", "message": "boom"}, retryable=True)
    assert state(service, child) == "cancelled", "back in the queue, it would wait for a job that is gone"
    assert error_message(service, child) == f"it waits for job {dep}, which was deleted"
    take(service, None)


# ---- expansion ---------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_each_job_of_a_sweep_with_copies_waits_for_its_own_jobs(client, service):
    d1, d2, extra = queue(service, priority=30), queue(service, priority=20), queue(service, priority=10)
    done = finished_job_with_files(service, {"a.png": b"\x89PNG done"})
    values = [out(d1), out(d2, filename="x.png"), out(done), "plain.png"]
    answer = await queued(
        client, {"prompt": load_image("x.png"), "sweep": {"10.image": values}, "count": 2, "after": [extra]}
    )
    assert answer["count"] == 8
    jobs = answer["jobs"]
    afters = [service.store.get(j["id"], with_prompt=False)["after"] for j in jobs]
    want = [sorted([d1, extra])] * 2 + [sorted([d2, extra])] * 2 + [[extra]] * 4
    assert afters == want
    for reason in (f"waits for job {j} (pending) to succeed" for j in (d1, d2, extra)):
        assert reason in answer["waiting"]
    done_image = service.store.get(jobs[4]["id"], with_prompt=True)["prompt"]["10"]["inputs"]["image"]
    assert set(done_image) == {"comfymq_input", "name", "size"}, "a finished job's output is stored at once"
    assert service.store.stats()["waiting"] == 8
    # d1 fails: its two jobs go, the rest still wait
    fail(service, d1)
    assert [state(service, j["id"]) for j in jobs] == ["cancelled"] * 2 + ["pending"] * 6
    assert error_message(service, jobs[0]["id"]) == f"it waits for job {d1}, which failed"
    succeed(service, d2)
    take(service, extra)
    take(service, None)


@pytest.mark.asyncio
async def test_a_refused_value_anywhere_in_a_sweep_queues_none_of_it(client, service):
    dep = queue(service)
    failed = finished_job_with_files(service, {}, state="failed")
    for bad, needle in (
        (out(failed), "ended failed"),
        (out("0" * 15 + "1"), "does not have"),
        (out(dep, index=-2), ""),
    ):
        values = [out(dep)] * 50 + [bad]
        await refused(client, service, {"prompt": load_image("x.png"), "sweep": {"10.image": values}}, WHERE, needle)


# ---- what the views say --------------------------------------------------------------------------------------------


@pytest.fixture
def broker_host(tmp_path):
    svc = QueueService(tmp_path / "host", threads=4, broker=BrokerSettings(bind="tcp://127.0.0.1:0", heartbeat=0.2))
    svc.store.pause()  # nothing is dispatched behind the test's back
    try:
        yield svc
    finally:
        svc.close()


@pytest.mark.asyncio
async def test_the_job_views_show_after_and_the_waiting_lines(aiohttp_client, broker_host):
    client = await aiohttp_client(build_app(broker_host))
    store = broker_host.store
    dep = store.enqueue(SAVE, priority=10)["id"]
    other = store.enqueue(SAVE, priority=5)["id"]
    answer = await queued(client, {"prompt": load_image(out(dep, node="9")), "after": [other]})
    job_id = answer["jobs"][0]["id"]
    assert answer["jobs"][0]["after"] == sorted([dep, other])
    view = (await (await client.get(f"{P}/jobs/{job_id}")).json())["job"]
    assert view["state"] == "pending" and view["after"] == sorted([dep, other])
    assert f"waits for job {dep} (pending) to succeed" in view["waiting"]
    assert f"waits for job {other} (pending) to succeed" in view["waiting"]
    assert {"node": "10", "input": "image", "output_of": {"job": dep, "node": "9"}} in view["inputs"]
    listed = (await (await client.get(f"{P}/jobs?state=pending")).json())["jobs"]
    assert next(j for j in listed if j["id"] == job_id)["after"] == sorted([dep, other])
    # the dep runs: the line says so; once it succeeded, only the other is waited for
    lease = store.take("w", ignore_pause=True)
    assert lease["job_id"] == dep
    view = (await (await client.get(f"{P}/jobs/{job_id}")).json())["job"]
    assert f"waits for job {dep} (running) to succeed" in view["waiting"]
    store.complete(dep, lease["token"], outputs={"9": {"images": [{"filename": "a.png"}]}})
    view = (await (await client.get(f"{P}/jobs/{job_id}")).json())["job"]
    assert not any(dep in line for line in view["waiting"]) and any(other in line for line in view["waiting"])
    # the other is cancelled: the view says why, and has no waiting lines (it is not pending)
    assert (await client.post(f"{P}/jobs/{other}/cancel", json={})).status == 200
    view = (await (await client.get(f"{P}/jobs/{job_id}")).json())["job"]
    assert view["state"] == "cancelled" and "waiting" not in view
    assert view["error"]["message"] == f"it waits for job {other}, which was cancelled"
    assert view["after"] == sorted([dep, other]), "what it waited for stays in its record"


@pytest.mark.asyncio
async def test_a_worker_gets_the_file_the_dep_made_and_a_file_it_did_not_make_fails_the_dependent(
    aiohttp_client, broker_host, tmp_path
):
    """Through the real broker and a real worker client: the dependents are sent only once their dep succeeded,
    each with its reference made the stored form of the file the dep recorded; one naming a file the dep did not
    make fails (input_error, no retry) and what waits for it is cancelled."""
    client = await aiohttp_client(build_app(broker_host))
    store = broker_host.store
    dep = (await queued(client, {"prompt": SAVE, "priority": 100}))["jobs"][0]["id"]
    ids = {}
    for name, ref in (
        ("by_name", out(dep, filename="a.png")),
        ("by_node", out(dep, node="9")),
        ("missing", out(dep, index=5)),
    ):
        ids[name] = (await queued(client, {"prompt": load_image(ref), "max_attempts": 3}))["jobs"][0]["id"]
    after_missing = (await queued(client, {"prompt": SAVE, "after": [ids["missing"]]}))["jobs"][0]["id"]
    worker = native.WorkerClient(
        broker=broker_host.broker.endpoint,
        worker_id="w-chain",
        capabilities={"node_classes": ["LoadImage", "SaveImage"]},
        heartbeat=0.2,
        reconnect_min=0.05,
        reconnect_max=0.5,
    )
    try:
        wait_for(lambda: any(w["id"] == "w-chain" and w["online"] for w in broker_host.broker.workers()), 10)
        store.resume()
        job = wait_for(lambda: worker.next_job(0.1), 10, "the dep")
        assert job["job_id"] == dep
        assert all(state(broker_host, j) == "pending" for j in ids.values()), "nothing runs before its dep"
        data = b"\x89PNG made by the dep"
        (tmp_path / "a.png").write_bytes(data)
        worker.complete(
            dep,
            job["token"],
            outputs={"9": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}},
            files=[{"path": str(tmp_path / "a.png"), "name": "a.png", "mime": "image/png"}],
        )
        stored = {"comfymq_input": hashlib.sha256(data).hexdigest(), "name": "a.png", "size": len(data)}
        got = []
        for _ in range(2):
            job = wait_for(lambda: worker.next_job(0.1), 10, "a dependent")
            got.append(job["job_id"])
            assert job["prompt"]["10"]["inputs"]["image"] == stored, job["prompt"]
            worker.complete(job["job_id"], job["token"], outputs={})
        assert sorted(got) == sorted([ids["by_name"], ids["by_node"]])
        wait_for(lambda: state(broker_host, ids["missing"]) == "failed", 10, "the dependent naming no file fails")
        missing = store.get(ids["missing"], with_prompt=False)
        assert missing["error"]["type"] == "input_error", missing["error"]
        assert "none at index 5" in missing["error"]["message"]
        assert state(broker_host, after_missing) == "cancelled"
        assert error_message(broker_host, after_missing) == f"it waits for job {ids['missing']}, which failed"
        wait_for(lambda: all(state(broker_host, j) == "succeeded" for j in got), 10, "the dependents recorded")
        assert worker.next_job(0.2) is None
    finally:
        worker.close(bye=True)
