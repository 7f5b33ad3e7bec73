"""Adversarial HTTP input against real host processes (`python -m comfy_nodes host`, one without a token and one
with), counting what got through. Every count must be 0; they are printed (`pytest -s`) for the record.

  five_xx              answers 500-599
  non_json_errors      answers >= 400 that are not {"error": {"type", "message"}} with a JSON content type
  refused_changed      a request that was refused (>= 400, or no answer) yet changed the queue (counts, total,
                       paused); the queue is read back after every such request
  cross_site_through   a request a web page on another site could make (forms, bodyless POSTs, foreign or null
                       Origin, Sec-Fetch-Site: cross-site, DNS rebinding) that was answered 2xx
  preflights_granted   an answer to a foreign Origin carrying Access-Control-Allow-* headers
  leaks                a refused or foreign-Host answer that quotes a job id, a prompt, an artifact's bytes, a
                       worker id or a file outside the artifact root
  tracebacks           "Traceback" in the host's log

Inputs: fixed cases (malformed JSON, wrong types, huge numbers, nesting up to and past Python's limits, bad UTF-8,
NUL bytes, over-long URLs and headers, path traversal in artifact URLs, chunked bodies over the limit, framing
errors) and a seeded mutation loop over valid requests (byte flips, truncation, duplicated keys, type swaps,
header and path mutations, raw flips anywhere in the request).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cluster_worker import payload
from conftest import free_port
from http_host import Answer, HostProcess, request_bytes

pytestmark = [pytest.mark.subprocess, pytest.mark.timeout(300)]

P = "/comfymq"
SEED = int(os.environ.get("COMFYMQ_ADVERSARIAL_SEED", "20261207"))  # another seed explores other mutations
MUTATIONS = 3000  # framed mutations per host
RAW_FLIPS = 400  # raw flips per host (framing may break: they can wait for a timeout)
TOKEN = "adversarial-token-0123"
WORKER = Path(__file__).with_name("cluster_worker.py")
MARK = "adversarial-marker-7f3c"  # in every prompt we queue: an answer quoting it quotes a prompt
SECRET = b"SECRET-OUTSIDE-THE-ARTIFACT-ROOT-5d1e"
FLAGS = (
    "--read-timeout",
    "1",
    "--body-timeout",
    "4",
    "--keepalive-timeout",
    "1",
    "--max-body-bytes",
    "1048576",
    "--max-jobs-per-request",
    "20",
    "--max-stored-bytes-per-request",
    "2097152",
)
EVIL = "evil.example"


def graph(seed: int = 1) -> dict:
    return {
        "3": {
            "class_type": "KSampler",
            "inputs": {"seed": seed, "steps": 20, "cfg": 7.5, "model": ["4", 0], "text": MARK},
        },
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
    }


class Target:
    """One host under attack: what it holds (for leak checks) and the tally of what got through."""

    def __init__(self, name: str, host: HostProcess, token: str | None):
        self.name, self.host, self.token = name, host, token
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.counts = Counter()
        self.examples: dict[str, list] = {}
        self.secrets: list[bytes] = [MARK.encode(), SECRET]
        self.jobs: list[str] = []
        self.artifact_url = ""

    # -- bookkeeping --

    def note(self, counter: str, what) -> None:
        self.counts[counter] += 1
        self.examples.setdefault(counter, [])
        if len(self.examples[counter]) < 5:
            self.examples[counter].append(what)

    def send(self, data: bytes, timeout: float = 10.0) -> Answer:
        try:
            a = self.host.raw(data, timeout)
        except OSError:
            a = Answer(0)
        self.counts["requests"] += 1
        self.counts[f"answered_{a.status // 100}xx" if a.status else "no_answer"] += 1
        if a.status >= 500:
            self.note("five_xx", (data[:200], a.status, a.body[:200]))
        if (
            a.status >= 400
            and not a.is_json_error
            and not (data.startswith(b"HEAD ") and a.headers.get("content-type", "").startswith("application/json"))
        ):  # a HEAD answer has no body to check
            self.note("non_json_errors", (data[:200], a.status, a.headers.get("content-type"), a.body[:200]))
        return a

    def leaked(self, a: Answer, data: bytes) -> None:
        """A refused answer that quotes something the request did not hold itself (an id it named may be
        quoted back; anything else it could not know may not)."""
        echoed = data + repr(data).encode()  # an error may quote the request line back, escaped
        if any(s in a.body and s not in echoed for s in self.secrets):
            self.note("leaks", (data[:200], a.status, a.body[:200]))

    def state(self) -> tuple:
        _, s = self.host.json("GET", f"{P}/stats", headers=self.auth)
        return json.dumps(s["counts"], sort_keys=True), s["total"], s["paused"]

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None, authorized: bool = True
    ) -> bytes:
        h = dict(self.auth) if authorized else {}
        if method != "GET":
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        return request_bytes(method, path, body, {k: v for k, v in h.items() if v is not None})


# ---- the hosts --------------------------------------------------------------------------------------------


def start_target(tmp: Path, name: str, token: str | None) -> Target:
    broker = f"tcp://127.0.0.1:{free_port()}"
    flags = FLAGS + ("--workers-bind", broker, "--heartbeat", "0.2") + ((f"--token={token}",) if token else ())
    host = HostProcess(tmp, *flags)
    try:
        return _prepare(Target(name, host, token), broker, tmp)
    except BaseException:
        host.stop()
        raise


def _prepare(t: Target, broker: str, tmp: Path) -> Target:
    """One finished job with an artifact (run by a real worker process, then stopped), a few pending jobs, a
    batch and a cancelled job; a file beside the artifact root that no answer may ever show."""
    host, name = t.host, t.name
    (host.data_dir / "secret.txt").write_bytes(SECRET)  # beside the artifact root, never inside it
    worker = subprocess.Popen(
        [
            sys.executable,
            str(WORKER),
            "--broker",
            broker,
            "--id",
            f"{name}-worker-9d2",
            "--out",
            str(tmp / f"{name}-worker-out"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        status, body = host.json(
            "POST",
            f"{P}/jobs",
            {"prompt": {"1": {"class_type": "TestJob", "inputs": {"seq": 7, "bytes": 3000}}}},
            headers=t.auth,
        )
        assert status == 200, body
        done = body["jobs"][0]["id"]
        deadline = time.monotonic() + 30
        while True:
            job = host.json("GET", f"{P}/jobs/{done}", headers=t.auth)[1]["job"]
            if job["state"] == "succeeded":
                break
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
    finally:
        worker.terminate()
        worker.wait(timeout=10)
    t.artifact_url = job["artifacts"][0]["url"]
    t.secrets += [payload(7, 3000)[:64], done.encode(), f"{name}-worker-9d2".encode()]
    t.jobs.append(done)
    for i in range(3):
        status, body = host.json(
            "POST", f"{P}/jobs", {"prompt": graph(i), "metadata": {"prompt_id": f"p{i}"}}, headers=t.auth
        )
        assert status == 200, body
        t.jobs.append(body["jobs"][0]["id"])
    status, body = host.json(
        "POST", f"{P}/jobs", {"prompt": graph(9), "count": 2, "batch_id": "batch-1"}, headers=t.auth
    )
    assert status == 200, body
    t.jobs += [j["id"] for j in body["jobs"]]
    host.json("POST", f"{P}/jobs/{t.jobs[1]}/cancel", {}, headers=t.auth)
    t.secrets += [j.encode() for j in t.jobs]
    time.sleep(1.0)  # the stopped worker is noticed (no job was running): nothing changes the queue by itself
    return t


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    made = []
    try:
        for name, token in (("open", None), ("token", TOKEN)):
            made.append(start_target(tmp_path_factory.mktemp(name), name, token))
        yield made
    finally:
        for t in made:
            t.host.stop()


# ---- fixed cases ------------------------------------------------------------------------------------------


def fixed_cases(t: Target) -> list[bytes]:
    """Bad input a client could send on purpose. None of it may change the queue, except where noted."""
    jid = t.jobs[2]

    def task(body):
        return t.request("POST", f"{P}/jobs", body if isinstance(body, bytes) else json.dumps(body).encode())

    def seed_task(body):
        return t.request("POST", "/tasks", json.dumps(body).encode())

    g = graph()
    cases = [
        task(b)
        for b in (
            b"",
            b"{",
            b'{"prompt":',
            b"[]",
            b"null",
            b"1e999999",
            b'"str"',
            b'{"prompt": {}} trailing',
            b"\xef\xbb\xbf{}",
            '{"prompt": 1}'.encode("utf-16"),
            b'{"prompt": "\xff\xfe"}',
            b'{"prompt": {"1": {"class_type": "\xc0\xaf", "inputs": {}}}}',
            b'{"prompt": {"1": {"class_type": "A\x00"}}}',
            b'{"prompt": "\\ud800"}',
            b'{"prompt": {"\\ud800": {"class_type": "A", "inputs": {}}}}',
            b'{"prompt": {"1": {"class_type": "\\u0000", "inputs": {}}}}',
            b'{"prompt": {"1\\u0000": {"class_type": "A"}}}',
            b"[" * 100000,
            b'{"a":' * 100000,
            b'{"prompt": ' + b"[" * 5000 + b"]" * 5000 + b"}",
            b'{"prompt": {"1": {"class_type": "A", "inputs": {"x": ' + b"9" * 5000 + b"}}}}",
            b'{"prompt": {"1": {"class_type": "A", "inputs": {"x": 1e400}}}}',
            b'{"prompt": {"1": {"class_type": "A", "inputs": {"x": NaN}}}}',
            b'{"prompt": {"1": {"class_type": "A", "inputs": {"x": -Infinity}}}}',
        )
    ]
    deep_obj = {"class_type": "A", "inputs": {}}
    node = deep_obj["inputs"]
    for _ in range(900):  # just under Python's recursion limit: json.loads takes it
        node["x"] = {}
        node = node["x"]
    cases += [
        task({"prompt": {"1": deep_obj}}),
        task({"prompt": json.dumps({"1": deep_obj})}),
        task({"prompt": "[" * 10000 + "]" * 10000}),
        task({"prompt": '{"1": {"class_type": "A", "inputs": {"x": ' + "[" * 10000 + "]" * 10000 + "}}}"}),
        task({"prompt": json.dumps({"1": {"class_type": "A", "inputs": {"x": json.loads("[" * 900 + "]" * 900)}}})}),
        task({"prompt": g, "workflow": json.loads("[" * 900 + "]" * 900)}),
    ]
    for field, values in {
        "prompt": [1, [], True, None, "not json", "[]", '{"1": 5}', {"1": 5}, {"1": {"inputs": {}}}, {}],
        "priority": ["5", 1.5, 2**31, -(2**31) - 1, 10**300, True, None, []],
        "count": ["2", 0, -1, 1.5, 10**30, True, 21, [], {}],
        "sweep": [
            [],
            {"x": 1},
            {"3.seed": []},
            {"3.seed": 5},
            {"nope.x": [1]},
            {"3.steps": list(range(25))},
            {"3": [1]},
            "x",
            {"3.seed": [1, 2], "3.seed ": [1]},
        ],
        "metadata": [
            [],
            {"x": 1},
            {"prompt_id": 5},
            {"create_time": "x"},
            {"create_time": 1e300},
            {"create_time": -1},
            {"prompt_id": "x" * 100000},
        ],
        "workflow": [[], "x", 5, {"a": [None] * 10}],  # the last one is valid: it may be queued
        "max_attempts": [0, 101, "3", 1.5, None, 2**70],
        "timeout": [-1, 0, 1e308, "x", True, 30 * 24 * 3600 + 1],
        "batch_id": ["", "../x", "a" * 200, 5, "a/b", "\x00"],
        "owner": [5, "\x00", "a" * 1000, "\u202e"],
        "keep_seeds": ["yes", 1, None],
        "bogus": [1],
    }.items():
        for v in values:
            body = {"prompt": g, field: v} if field != "prompt" else {"prompt": v}
            cases.append(task(body))
    for v in (
        {"prompt": g, "priority": "1"},
        {"prompt": g, "metadata": {"x": 1}},
        {"prompt": g, "count": 2},
        {"prompt": 5},
        {},
    ):
        cases.append(seed_task(v))
    huge = json.dumps({"prompt": g, "owner": "x" * 2_000_000}).encode()
    cases.append(task(huge))  # over --max-body-bytes, with a Content-Length
    chunks = b"".join(b"%x\r\n%s\r\n" % (65536, b" " * 65536) for _ in range(40)) + b"0\r\n\r\n"
    cases.append(t.request("POST", f"{P}/jobs", None, {"Transfer-Encoding": "chunked"}) + chunks)  # over, chunked
    cases.append(
        t.request("POST", f"{P}/jobs", None, {"Transfer-Encoding": "chunked"}) + b'5;ext=1\r\n{"pro\r\nzz\r\n'
    )  # a bad chunk size mid-body
    # actions with bad bodies and ids
    for path in (
        f"{P}/jobs/{jid}/cancel",
        f"{P}/jobs/{jid}/retry",
        f"{P}/batches/batch-1/cancel",
        f"{P}/workers/w/drain",
        f"{P}/workers/refresh",
    ):
        for body in (
            b"{",
            b"[1]",
            b'{"reason": 5}',
            b'{"drain": "no"}',
            b'{"worker_id": 5}',
            b'{"x": 1}',
            b'{"reason": "' + b"r" * 100000 + b'"}',
        ):
            cases.append(t.request("POST", path, body))
    for bad_id in ("0" * 17, "ZZZZZZZZZZZZZZZZ", "%00", "..", "../stats", "0000000000000001", "x" * 5000):
        cases += [
            t.request("GET", f"{P}/jobs/{bad_id}"),
            t.request("POST", f"{P}/jobs/{bad_id}/cancel"),
            t.request("DELETE", f"{P}/jobs/{bad_id}"),
            t.request("GET", f"/tasks/{bad_id}"),
        ]
    for q in (
        "state=nope",
        "limit=0",
        "limit=99999999",
        "limit=x",
        "since=-1",
        "cursor=zz",
        "order=up",
        "x=1",
        "state=",
        "batch=",
        "limit=1&limit=2",
        "prompt_id=p1&cursor=0000000000000001",
        "%ff=%fe",
        "state=" + "pending," * 5000,
    ):
        cases.append(t.request("GET", f"{P}/jobs?{q}"))
    # path traversal in artifact URLs
    job = t.jobs[0]
    for target in (
        f"{P}/artifacts/{job}/../../secret.txt",
        f"{P}/artifacts/{job}/%2e%2e/%2e%2e/secret.txt",
        f"{P}/artifacts/{job}/..%2f..%2fsecret.txt",
        f"{P}/artifacts/{job}//etc/passwd",
        f"{P}/artifacts/{job}/%2Fetc%2Fpasswd",
        f"{P}/artifacts/{job}/..%5c..%5csecret.txt",
        f"{P}/artifacts/{job}/out_7.bin%00.png",
        f"{P}/artifacts/../secret.txt",
        f"{P}/artifacts/{job}/./out_7.bin/..",
        f"/api{P}/artifacts/{job}/%252e%252e/secret.txt",
        f"{P}/artifacts/{job}/" + "../" * 50 + "etc/passwd",
        f"{P}/artifacts/%2e%2e/%2e%2e/secret.txt",
    ):
        cases.append(t.request("GET", target))
    # the HTTP layer
    cases += [
        b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"b" * 20000 + b"\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-H: 1\r\n" * 300 + b"\r\n",
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\x00b\r\n\r\n",
        b"GET /he\x00alth HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(200),
        b"\r\n\r\n",
        b"GET\r\n\r\n",
        b"POST /tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: -5\r\n\r\n",
        b"POST /tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 99999999999999999999999\r\n\r\n",
    ]
    return cases


def send_tracked(t: Target, data: bytes, state: tuple, timeout: float = 10.0) -> tuple:
    """Sends data; a refused request (>= 400 or no answer) must leave the queue as it was. Returns the state."""
    a = t.send(data, timeout)
    now = t.state()
    if not 200 <= a.status < 300:
        t.leaked(a, data)
        if now != state:
            t.note("refused_changed", (data[:300], a.status, a.body[:200], state, now))
    return a, now


def test_fixed_bad_input(targets):
    for t in targets:
        state = t.state()
        for data in fixed_cases(t):
            _, state = send_tracked(t, data, state)
        # a job stored from any of them must still read back without a 500
        _, page = t.host.json("GET", f"{P}/jobs?limit=1000", headers=t.auth)
        for j in page["jobs"]:
            for path in (f"{P}/jobs/{j['id']}", f"/tasks/{j['id']}"):
                t.send(t.request("GET", path))


# ---- cross-site requests -----------------------------------------------------------------------------------


def cross_site_cases(t: Target) -> list[tuple[bytes, bool]]:
    """(request, whether it reads data) as a web page on another site, or a rebound name, could make it."""
    port = t.host.port
    jid = t.jobs[2]
    task = json.dumps({"prompt": graph(5)}).encode()
    form = b'{"prompt": {"1": {"class_type": "EmptyImage", "inputs": {}}}, "x": "="}'
    actions = [
        ("POST", f"{P}/jobs", task),
        ("POST", "/tasks", task),
        ("POST", f"/api{P}/jobs", task),
        ("POST", f"{P}/queue/pause", None),
        ("POST", f"{P}/jobs/{jid}/cancel", None),
        ("POST", f"{P}/jobs/{t.jobs[1]}/retry", None),
        ("POST", f"{P}/batches/batch-1/cancel", None),
        ("DELETE", f"{P}/jobs/{t.jobs[1]}", None),
        ("POST", f"{P}/workers/{t.name}-worker-9d2/drain", None),
        ("POST", f"{P}/workers/refresh", None),
        ("PUT", f"{P}/jobs", task),
        ("PATCH", f"{P}/jobs", task),
    ]
    reads = [
        f"{P}/jobs",
        f"{P}/jobs/{jid}",
        f"/tasks/{jid}",
        f"{P}/jobs/{t.jobs[0]}",
        t.artifact_url,
        f"/api{t.artifact_url}",
        f"{P}/stats",
        f"{P}/workers",
        f"{P}/queue",
        "/health",
        f"{P}/health",
        f"{P}/batches/batch-1",
    ]
    origins = [
        "https://evil.example",
        "null",
        f"http://{EVIL}:{port}",
        f"http://localhost:{port + 1}",
        f"http://127.0.0.1:{port}.evil.example",
        "file://",
    ]
    cases = []
    for method, path, body in actions:
        # forms and bodyless fetches: simple requests, sent with the browser's Origin (or none, old browsers)
        for ctype, data in (
            ("text/plain", form),
            ("application/x-www-form-urlencoded", b"prompt=x"),
            ("multipart/form-data; boundary=b", b"--b\r\n\r\nx\r\n--b--\r\n"),
            (None, None),
        ):
            for origin in origins[:3] + [None]:
                cases.append(
                    (t.request(method, path, data, {"Content-Type": ctype, "Origin": origin}, authorized=False), False)
                )
        # JSON with a foreign Origin or Sec-Fetch-Site (as if a preflight had been granted), with the token too
        for origin in origins:
            cases.append((t.request(method, path, body, {"Origin": origin}), False))
        cases.append((t.request(method, path, body, {"Sec-Fetch-Site": "cross-site"}), False))
        # DNS rebinding: the page's own name, the request same-origin to the browser
        for host in (f"{EVIL}:{port}", EVIL, f"rebind.{EVIL}"):
            cases.append(
                (t.request(method, path, body, {"Host": host, "Origin": f"http://{host}"}, authorized=False), False)
            )
    for path in reads:
        for origin in origins:
            cases.append((t.request("GET", path, None, {"Origin": origin}, authorized=False), True))
        cases.append((t.request("GET", path, None, {"Sec-Fetch-Site": "cross-site"}, authorized=False), True))
        for host in (f"{EVIL}:{port}", EVIL, f"127.0.0.1.{EVIL}:{port}"):
            cases.append((t.request("GET", path, None, {"Host": host}, authorized=False), True))
            cases.append((t.request("GET", path, None, {"Host": host}), True))  # even with the token
    for path in [f"{P}/jobs", f"{P}/queue/pause", "/tasks"]:  # preflights
        for origin in origins:
            cases.append(
                (
                    t.request(
                        "OPTIONS",
                        path,
                        None,
                        {
                            "Origin": origin,
                            "Access-Control-Request-Method": "POST",
                            "Access-Control-Request-Headers": "content-type, authorization",
                        },
                        authorized=False,
                    ),
                    True,
                )
            )
    return cases


def test_cross_site_requests(targets):
    for t in targets:
        before = t.state()
        for data, _reads in cross_site_cases(t):
            a = t.send(data)
            if 200 <= a.status < 300:
                t.note("cross_site_through", (data[:300], a.status, a.body[:200]))
            if any(k.startswith("access-control-allow") for k in a.headers):
                t.note("preflights_granted", (data[:300], a.headers))
            t.leaked(a, data)
        after = t.state()
        if after != before:
            t.note("refused_changed", ("cross-site", before, after))


# ---- the mutation loop -------------------------------------------------------------------------------------


def valid_corpus(t: Target) -> list[tuple[str, str, bytes | None]]:
    g = graph(3)
    bodies = [
        {"prompt": g},
        {"prompt": json.dumps(g), "priority": 4},
        {"prompt": g, "count": 2, "keep_seeds": True},
        {"prompt": g, "sweep": {"3.cfg": [5, 7.5], "3.steps": [10]}, "batch_id": "fuzz-b"},
        {
            "prompt": g,
            "workflow": {"nodes": [{"id": 3}], "links": []},
            "max_attempts": 2,
            "timeout": 60,
            "owner": "fuzz",
            "metadata": {"prompt_id": "fuzz-p", "create_time": 1700000000000},
        },
    ]
    corpus = [("POST", f"{P}/jobs", json.dumps(b).encode()) for b in bodies]
    corpus += [
        ("POST", "/tasks", json.dumps({"prompt": g, "priority": 2, "metadata": {"prompt_id": "s"}}).encode()),
        ("POST", f"{P}/jobs/{t.jobs[2]}/cancel", b'{"reason": "fuzz"}'),
        ("POST", f"{P}/jobs/{t.jobs[1]}/retry", None),
        ("POST", f"{P}/queue/pause", None),
        ("POST", f"{P}/queue/resume", None),
        ("POST", f"{P}/batches/batch-1/cancel", None),
        ("POST", f"{P}/workers/refresh", b"{}"),
        ("POST", f"{P}/workers/x/drain", b'{"drain": false}'),
        ("GET", f"{P}/jobs?state=pending,failed&limit=5&order=oldest", None),
        ("GET", f"{P}/jobs/{t.jobs[0]}", None),
        ("GET", t.artifact_url, None),
        ("GET", f"{P}/batches/batch-1?view=summary&limit=2", None),
        ("DELETE", f"{P}/jobs/{t.jobs[3]}", None),
    ]
    return corpus


def swap_type(rng: random.Random, value):
    """A value of another JSON type (or an extreme of the same)."""
    return rng.choice(
        [
            None,
            True,
            False,
            0,
            -1,
            2**31,
            2**63,
            10**50,
            -(10**50),
            1.5,
            1e308,
            "",
            "x" * 300,
            "\u0000",
            "\ud800",
            [],
            [value],
            {},
            {"k": value},
            [[[[[]]]]],
            "5",
            "true",
            0.0,
            -0.0,
        ]
    )


def mutate_json(rng: random.Random, body: bytes) -> bytes:
    """A structural mutation of a JSON body: a type swap somewhere in it, or a duplicated key."""
    doc = json.loads(body)
    if rng.random() < 0.3 and isinstance(doc, dict) and doc:
        key = rng.choice(list(doc))
        dup = json.dumps(swap_type(rng, doc[key]))
        text = body.decode()
        return (text[:-1] + f', "{key}": {dup}' + "}").encode()  # the same key twice: the last one wins
    paths, stack = [], [((), doc)]
    while stack:
        path, node = stack.pop()
        paths.append(path)
        if isinstance(node, dict):
            stack += [(path + (k,), v) for k, v in node.items()]
        elif isinstance(node, list):
            stack += [(path + (i,), v) for i, v in enumerate(node)]
    path = rng.choice(paths)
    if not path:
        return json.dumps(swap_type(rng, doc)).encode()
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    parent[path[-1]] = swap_type(rng, parent[path[-1]])
    if rng.random() < 0.2 and isinstance(parent, dict):
        parent["z" + str(rng.randrange(1000))] = 1  # an unknown key next to it
    return json.dumps(doc).encode()


def mutate_bytes(rng: random.Random, body: bytes) -> bytes:
    b = bytearray(body)
    op = rng.randrange(5)
    if op == 0 and b:  # byte flips
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif op == 1:  # truncation
        del b[rng.randrange(len(b) + 1) :]
    elif op == 2:  # an inserted byte sequence: NUL, bad UTF-8, escapes, brackets
        pos = rng.randrange(len(b) + 1)
        b[pos:pos] = rng.choice(
            [
                b"\x00",
                b"\xff",
                b"\xc0\xaf",
                b"\xed\xa0\x80",
                b"\\u0000",
                b"\\ud800",
                b"[",
                b"{",
                b'"',
                b",",
                b"\\",
                b"1e9999",
                b"\r\n\r\n",
            ]
        )
    elif op == 3 and b:  # a slice repeated
        i = rng.randrange(len(b))
        j = min(len(b), i + rng.randint(1, 40))
        b[i:i] = b[i:j] * rng.randint(1, 50)
    else:  # a slice removed
        i = rng.randrange(len(b) + 1)
        del b[i : i + rng.randint(1, 20)]
    return bytes(b)


def mutate_request(rng: random.Random, t: Target, method: str, path: str, body: bytes | None) -> tuple[bytes, bool]:
    """A mutated, correctly framed request, and whether it is also foreign (must be refused whatever else)."""
    headers: dict = {}
    foreign = False
    r = rng.random()
    if body is not None and r < 0.45:
        body = mutate_json(rng, body) if rng.random() < 0.5 else mutate_bytes(rng, body)
    elif r < 0.6:  # header mutations
        choice = rng.randrange(9)
        if choice == 0:
            headers["Content-Type"] = rng.choice(
                [
                    None,
                    "text/plain",
                    "application/x-www-form-urlencoded",
                    "application/json; charset=latin-1",
                    "APPLICATION/JSON",
                    "application/json, text/plain",
                    "application/json\x00",
                ]
            )
            foreign = method != "GET" and headers["Content-Type"] not in (
                "application/json; charset=latin-1",
                "APPLICATION/JSON",
            )
        elif choice == 1:
            headers["Origin"] = rng.choice(["https://evil.example", "null", "http://127.0.0.1:1"])
            foreign = True
        elif choice == 2:
            headers["Host"] = rng.choice([EVIL, f"{EVIL}:{t.host.port}", "10.1.2.3"])
            foreign = True
        elif choice == 3:
            headers["Sec-Fetch-Site"] = "cross-site"
            foreign = True
        elif choice == 4:
            headers["Authorization"] = rng.choice(
                [None, "Bearer wrong-token-000", "Bearer", "Basic x", "Bearer " + (t.token or "x") + "x"]
            )
        elif choice == 5:
            headers["Content-Encoding"] = rng.choice(["gzip", "deflate", "br", "x"])
        elif choice == 6:
            headers["X-" + "h" * rng.randint(1, 50)] = "v" * rng.randint(0, 8000)
        elif choice == 7:
            headers["Accept"] = "\u00e9\u00e9".encode().decode("latin-1")
        else:
            headers["Transfer-Encoding"] = "identity"
    elif r < 0.8:  # method and path mutations
        if rng.random() < 0.4:
            method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "FOO"])
        else:
            parts = path.split("/")
            i = rng.randrange(1, len(parts))
            parts[i] = rng.choice(
                [
                    "..",
                    "%2e%2e",
                    "%00",
                    "x" * rng.randint(1, 3000),
                    "\u00e9",
                    "%ff",
                    "",
                    ".",
                    "%2f",
                    "~",
                    "*",
                    "?a=%zz",
                    "tasks",
                    parts[i] * 2,
                ]
            )
            path = "/".join(parts)
    else:  # query mutations
        path += rng.choice(
            [
                "?",
                "?limit=-1",
                "?state=%00",
                "?x=" + "y" * 5000,
                "?cursor=" + "0" * 16,
                "?limit=1e3",
                "?state=pending&state=failed",
                "?%",
            ]
        )
    try:
        data = t.request(method, path, body, headers)
    except UnicodeEncodeError:
        data = t.request(method, path.encode("utf-8").decode("latin-1"), body, headers)
    return data, foreign


def raw_flip(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        b[rng.randrange(len(b))] = rng.randrange(256)
    return bytes(b)


def test_mutation_loop(targets):
    rng = random.Random(SEED)
    for t in targets:
        corpus = valid_corpus(t)
        state = t.state()
        for _ in range(MUTATIONS):
            method, path, body = rng.choice(corpus)
            data, foreign = mutate_request(rng, t, method, path, body)
            a, state = send_tracked(t, data, state, timeout=3)
            if foreign and 200 <= a.status < 300:
                t.note("cross_site_through", (data[:300], a.status))
        # raw flips anywhere (request line, headers, framing) of requests that change nothing even when valid
        raw = [
            t.request("GET", f"{P}/jobs/{t.jobs[0]}"),
            t.request("GET", f"{P}/jobs?limit=3"),
            t.request("POST", f"{P}/jobs", json.dumps({"prompt": graph(), "zzzzz": 1}).encode()),
            t.request("GET", t.artifact_url),
        ]
        before = t.state()
        flips = [raw_flip(rng, rng.choice(raw)) for _ in range(RAW_FLIPS)]
        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(lambda d, t=t: t.send(d, timeout=4), flips))
        for d, a in zip(flips, answers, strict=True):
            if not (200 <= a.status < 300):
                t.leaked(a, d)
        if t.state() != before:
            t.note("refused_changed", ("raw flips", before, t.state()))


# ---- the tally ----------------------------------------------------------------------------------------------


COUNTERS = (
    "five_xx",
    "non_json_errors",
    "refused_changed",
    "cross_site_through",
    "preflights_granted",
    "leaks",
    "tracebacks",
)


def test_zz_counts_are_zero(targets):
    """Runs last (module order): prints every host's counts and asserts each is 0."""
    failures = {}
    for t in targets:
        t.host.wait_ready()  # still serving
        t.counts["tracebacks"] = t.host.output().count("Traceback")
        shown = ", ".join(f"{k}={t.counts[k]}" for k in COUNTERS)
        answered = ", ".join(f"{k}={t.counts[k]}" for k in sorted(t.counts) if k.startswith(("answered_", "no_")))
        print(
            f"\n[ adversarial ] host={t.name}: requests={t.counts['requests']} ({answered})\n"
            f"[ adversarial ] host={t.name}: {shown}"
        )
        bad = {k: t.counts[k] for k in COUNTERS if t.counts[k]}
        if bad:
            failures[t.name] = {k: (v, t.examples.get(k)) for k, v in bad.items()}
    assert not failures, failures
