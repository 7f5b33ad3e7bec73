"""Templates and webhooks attacked: what a web page, a LAN machine, a crafted template or a hostile webhook receiver
can do to a host (api/template_routes.py, templates/, webhooks/, api/webhook_routes.py).

The rules checked (the project's threat model): bad input is a clear 4xx that changes nothing, and every answer is
strict JSON; nothing acknowledged is lost (a committed ending is told to every target it names, a DELETE that said
"deleted" deleted); no receiver, however slow or broken, wedges the deliveries of others; nothing grows without a
bound; the new routes refuse what a page on another site can send and need the token when one is set.

A test here that fails says the product is wrong: the failure message names what and why."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time

import pytest
from aiohttp import web
from test_templates_api import OBJECT_INFO
from webhook_receiver import Receiver

from comfy_nodes.api.limits import RequestLimits
from comfy_nodes.api.routes import add_routes
from comfy_nodes.host.standalone import build_app
from comfy_nodes.templates.errors import TemplateError
from comfy_nodes.templates.registry import TemplateRegistry, load_into_store
from comfy_nodes.webhooks.outbox import Deliverer
from comfy_nodes.webhooks.targets import EVENTS, LABEL

FAST = {"backoff": (0.05,), "poll": 0.05}
JSON_CT = {"Content-Type": "application/json"}
TOKEN = "adversarial-token-0123456789"
SECRET = "whsec_" + "A" * 44

PROMPT = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
}
WORKFLOW = {
    "3": {
        "class_type": "KSampler",
        "inputs": {"seed": 5, "steps": 20, "cfg": 8.0, "sampler_name": "euler", "model": ["4", 0]},
    },
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a castle", "clip": ["4", 1]}},
    "10": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
}
TEMPLATE = {
    "name": "sd_basic",
    "workflow": WORKFLOW,
    "parameters": {
        "prompt": {"targets": ["6.text"], "default": "a lighthouse"},
        "seed": {"targets": ["3.seed"]},
        "steps": {"targets": ["3.steps"], "max": 50},
        "cfg": {"targets": ["3.cfg"]},
        "sampler": {"targets": ["3.sampler_name"]},
        "size": {"type": "integer", "targets": ["5.width", "5.height"], "min": 256, "max": 1024},
        "image": {"targets": ["10.image"]},
    },
    "object_info": OBJECT_INFO,
}


# ---- helpers --------------------------------------------------------------------------------------------


def copy(value):
    return json.loads(json.dumps(value))


def strict_json(text: str):
    """text parsed as RFC 8259 JSON: NaN, Infinity and -Infinity are not JSON (browsers' JSON.parse refuses them)."""

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


async def until(predicate, timeout: float = 20.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def answer(resp) -> tuple[int, dict | None]:
    text = await resp.text()
    try:
        return resp.status, strict_json(text) if text else None
    except ValueError:
        raise AssertionError(f"HTTP {resp.status} answered text that is not strict JSON: {text[:300]!r}") from None


async def assert_json_error(resp, status: int) -> dict:
    """The answer is `status` with {"error": {"type", "code" (= type), "message", and extra fields such as
    "template" / "parameter"}}, strict JSON, no stack trace."""
    code, body = await answer(resp)
    assert code == status, body
    assert resp.content_type == "application/json" and set(body) == {"error"}, body
    err = body["error"]
    assert {"type", "code", "message"} <= set(err) and err["code"] == err["type"], err
    assert isinstance(err["message"], str) and err["message"] and "Traceback" not in err["message"]
    return err


async def post(client, path, body, status=200):
    resp = await client.post(path, json=body)
    code, data = await answer(resp)
    assert code == status, data
    return data


async def create_template(client, template=None, status=201):
    return await post(client, "/comfymq/templates", template or TEMPLATE, status)


def tpl_docs(service) -> list[str]:
    return [k for k, _ in service.store.list_docs(prefix="tpl/", keys_only=True, limit=10000)]


def total_jobs(service) -> int:
    return service.store.stats()["total"]


def dead_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connections are refused at once)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/dead"


def comfy_like_app(service, **kwargs) -> web.Application:
    """The routes as mounted inside ComfyUI: no middleware of ours, each handler checks itself; /api copies too."""
    routes = web.RouteTableDef()
    add_routes(routes, service, **kwargs)
    app = web.Application()
    app.add_routes(routes)
    app.add_routes(
        [web.route(r.method, "/api" + r.path, r.handler, **r.kwargs) for r in routes if isinstance(r, web.RouteDef)]
    )
    return app


class Hostile:
    """A webhook receiver on 127.0.0.1 that misbehaves, on every connection, as `mode` says:

    hang            reads the request, never answers
    trickle         answers a 200 one byte per second
    no_close        answers "200" without a length and keeps the connection open (a close-delimited body never ends)
    continue_flood  answers "100 Continue" forever (http.client skips those in a loop)
    huge            answers a 200 with a 10 MB body
    garbage         answers bytes that are not HTTP
    redirect        answers 302 to `location`
    close() ends every connection at once, so nothing waits on it afterwards."""

    def __init__(self, mode: str, location: str = ""):
        self.mode, self.location = mode, location
        self.accepted = 0
        self.requests = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._closing.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._lock:
                self._conns.append(conn)
                self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _read_request(self, conn) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        m = re.search(rb"content-length:\s*(\d+)", head, re.I)
        want = int(m.group(1)) if m else 0
        while len(body) < want:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            body += chunk
        with self._lock:
            self.requests += 1
        return True

    def _serve(self, conn):
        try:
            if not self._read_request(conn):
                return
            mode = self.mode
            if mode == "hang":
                self._closing.wait()
            elif mode == "trickle":
                for b in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok":
                    if self._closing.wait(1.0):
                        return
                    conn.sendall(bytes([b]))
            elif mode == "no_close":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nok")
                self._closing.wait()
            elif mode == "continue_flood":
                while not self._closing.is_set():
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n" * 50)
                    time.sleep(0.01)
            elif mode == "huge":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (10 << 20))
                chunk = b"x" * 65536
                for _ in range(160):
                    conn.sendall(chunk)
            elif mode == "garbage":
                conn.sendall(b"\x00\xff\xfeSSH-2.0 not http at all\r\n\r\n" * 20)
            elif mode == "redirect":
                conn.sendall(
                    b"HTTP/1.1 302 Found\r\nLocation: " + self.location.encode() + b"\r\nContent-Length: 0\r\n\r\n"
                )
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def close(self):
        self._closing.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass


async def job_with_hooks(client, hooks, **more) -> str:
    body = await post(client, "/comfymq/jobs", {"prompt": PROMPT, "webhooks": hooks, **more})
    return body["jobs"][0]["id"]


def records(service, job_id: str | None = None) -> list[dict]:
    prefix = f"webhook/{job_id}/" if job_id else "webhook/"
    return [json.loads(v) for _, v in service.store.list_docs(prefix=prefix, limit=10000)]


# ---- templates: names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["..", ".", "../x", "a/b", "a\\b", "a" * 65, "ü", "文生图", "", " a", "a ", "a\n", "a\x00b", "-a", "_a", ".hidden",
     "a b", "a%2Fb", 5, None, ["a"], {"a": 1}],
)  # fmt: skip
@pytest.mark.asyncio
async def test_bad_template_names_are_refused_and_store_nothing(client, service, name):
    resp = await client.post("/comfymq/templates", json={**TEMPLATE, "name": name})
    await assert_json_error(resp, 400)
    assert tpl_docs(service) == []


@pytest.mark.parametrize("name", ["a..b", "a.", "outbox", "notify", "webhook", "tpl", "webhookbatch", "a" * 64, "0"])
@pytest.mark.asyncio
async def test_valid_names_that_echo_store_prefixes_stay_under_tpl(client, service, name):
    await create_template(client, {**TEMPLATE, "name": name})
    assert tpl_docs(service) == [f"tpl/{name}/00000001"]
    assert service.store.list_docs(prefix="outbox/") == [] and service.store.list_docs(prefix="webhook") == []
    got = await post(client, f"/comfymq/templates/{name}/jobs", {"params": {"seed": 1}})
    assert got["template"] == {"name": name, "version": 1}


@pytest.mark.parametrize(
    "path",
    ["..%2F..%2Fetc%2Fpasswd", "a%2Fb", "%2e%2e", "a" * 65, "%C3%BC", "a%00b", "sd_basic%2F00000001", "sd_basic%20"],
)
@pytest.mark.asyncio
async def test_odd_template_paths_answer_a_json_4xx_and_change_nothing(client, service, path):
    await create_template(client)
    before = tpl_docs(service)
    for method in ("GET", "DELETE"):
        resp = await client.request(method, f"/comfymq/templates/{path}", headers=JSON_CT)
        assert resp.status in (400, 404, 405), await resp.text()
        await answer(resp)
    resp = await client.put(f"/comfymq/templates/{path}", json=TEMPLATE)
    assert 400 <= resp.status < 500, await resp.text()
    resp = await client.post(f"/comfymq/templates/{path}/jobs", json={})
    assert 400 <= resp.status < 500, await resp.text()
    assert tpl_docs(service) == before and total_jobs(service) == 0


# ---- templates: size, nesting, non-finite numbers ----------------------------------------------------------


@pytest.mark.asyncio
async def test_a_template_over_the_document_limit_is_a_4xx_and_stores_nothing(client, service):
    big = copy(TEMPLATE)
    big["name"] = "big"
    big["workflow"]["6"]["inputs"]["text"] = "x" * (17 << 20)  # under max_body_bytes (64 MiB), over a document's 16
    resp = await client.post("/comfymq/templates", json=big)
    await assert_json_error(resp, resp.status)
    assert 400 <= resp.status < 500
    assert tpl_docs(service) == []


@pytest.mark.asyncio
async def test_a_body_over_max_body_bytes_is_413_on_every_new_route(aiohttp_client, service):
    client = await aiohttp_client(build_app(service, limits=RequestLimits(max_body_bytes=64 << 10)))
    TemplateRegistry(service.store).save(
        {k: v for k, v in TEMPLATE.items() if k != "object_info"}, object_info=OBJECT_INFO
    )
    big = {**TEMPLATE, "description": "x" * (100 << 10)}
    for method, path, body in (
        ("POST", "/comfymq/templates", {**big, "name": "other"}),
        ("PUT", "/comfymq/templates/sd_basic", big),
        ("POST", "/comfymq/templates/sd_basic/jobs", {"params": {"prompt": "x" * (100 << 10)}}),
    ):
        await assert_json_error(await client.request(method, path, json=body), 413)
    assert tpl_docs(service) == ["tpl/sd_basic/00000001"] and total_jobs(service) == 0


def nested(depth: int):
    value = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("depth", [200, 900])
@pytest.mark.asyncio
async def test_a_workflow_nested_past_the_store_s_limit_is_refused_when_stored(client, service, depth):
    """The store takes prompts nested at most MAX_JSON_DEPTH (64) levels: a template deeper than that can never make
    a job, so storing it must be the 400 (docs: "Checked when stored"), not every later submit."""
    wf = copy(PROMPT)
    wf["1"]["inputs"]["deep"] = nested(depth)
    resp = await client.post(
        "/comfymq/templates",
        json={"name": f"deep{depth}", "workflow": wf, "parameters": {"w": {"targets": ["1.width"]}}},
    )
    code, body = await answer(resp)
    assert code == 400, f"a workflow nested {depth} deep was stored ({code}): no job can ever be made from it"
    assert tpl_docs(service) == []


@pytest.mark.asyncio
async def test_jobs_from_a_deeply_nested_template_never_answer_500(client, service):
    """A template stored deeper than copy.deepcopy can recurse: its jobs answered 500 internal_error (RecursionError
    in render.py's deepcopy)."""
    wf = copy(PROMPT)
    wf["1"]["inputs"]["deep"] = nested(900)
    try:
        TemplateRegistry(service.store).save(
            {"name": "deep", "workflow": wf, "parameters": {"w": {"targets": ["1.width"]}}}
        )
    except TemplateError:
        return  # refused when stored: nothing to submit
    resp = await client.post("/comfymq/templates/deep/jobs", json={"params": {"w": 16}})
    code, body = await answer(resp)
    assert 400 <= code < 500, f"POST .../jobs of a deep template answered {code}: {body}"
    assert total_jobs(service) == 0


@pytest.mark.asyncio
async def test_a_body_nested_past_the_parser_is_a_400(client, service):
    for path in ("/comfymq/templates", "/comfymq/templates/sd_basic/jobs"):
        resp = await client.post(path, data="[" * 100000 + "]" * 100000, headers=JSON_CT)
        await assert_json_error(resp, 400)
    assert tpl_docs(service) == []


@pytest.mark.parametrize(
    "case",
    ["declared_infinity", "declared_minus_infinity", "object_info_nan", "object_info_infinity"],
)
@pytest.mark.asyncio
async def test_non_finite_choices_never_make_an_answer_that_is_not_json(client, service, case):
    """json.loads on a request body reads NaN / Infinity; a combo's choices let them through into the stored template,
    and every later GET of it (the panel's form) answered `Infinity` / `NaN`, which is not JSON."""
    t = {"name": "nf", "workflow": WORKFLOW, "parameters": {"sampler": {"targets": ["3.sampler_name"]}}}
    if case.startswith("declared"):
        t["parameters"]["sampler"].update(type="combo", choices=["euler", "__X__"])
        text = json.dumps(t).replace('"__X__"', "Infinity" if case == "declared_infinity" else "-Infinity")
    else:
        oi = copy(OBJECT_INFO)
        oi["KSampler"]["input"]["required"]["sampler_name"][0] = ["euler", "__X__"]
        t["object_info"] = oi
        text = json.dumps(t).replace('"__X__"', "NaN" if case == "object_info_nan" else "Infinity")
    resp = await client.post("/comfymq/templates", data=text, headers=JSON_CT)
    code, _ = await answer(resp)  # the answer itself must be JSON
    if code >= 400:
        assert code == 400 and tpl_docs(service) == []
        return
    for path in ("/comfymq/templates/nf", "/comfymq/templates/nf/schema", "/comfymq/templates"):
        await answer(await client.get(path))


@pytest.mark.parametrize(
    "body",
    [
        '{"params": {"cfg": NaN}}',
        '{"params": {"cfg": Infinity}}',
        '{"params": {"cfg": -Infinity}}',
        '{"sweep": {"cfg": [1.0, NaN]}}',
        '{"sweep": {"steps": [1, Infinity]}}',
        '{"params": {"sampler": NaN}}',
        '{"count": NaN}',
        '{"priority": Infinity}',
        '{"timeout": NaN}',
        '{"version": Infinity}',
    ],
)
@pytest.mark.asyncio
async def test_nan_and_infinity_in_a_job_request_are_a_400_and_queue_nothing(client, service, body):
    await create_template(client)
    resp = await client.post("/comfymq/templates/sd_basic/jobs", data=body, headers=JSON_CT)
    await assert_json_error(resp, 400)
    assert total_jobs(service) == 0


@pytest.mark.parametrize("default", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.asyncio
async def test_non_finite_defaults_are_refused(client, service, default):
    t = {"name": "nd", "workflow": WORKFLOW, "parameters": {"cfg": {"targets": ["3.cfg"], "default": "__X__"}}}
    for ptype in (None, "combo", "number"):
        if ptype:
            t["parameters"]["cfg"]["type"] = ptype
        resp = await client.post("/comfymq/templates", data=json.dumps(t).replace('"__X__"', default), headers=JSON_CT)
        await assert_json_error(resp, 400)
    assert tpl_docs(service) == []


# ---- templates: amplification and limits -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_params_with_100k_keys_is_a_quick_400(client, service):
    await create_template(client)
    t0 = time.monotonic()
    resp = await client.post("/comfymq/templates/sd_basic/jobs", json={"params": {f"k{i}": 1 for i in range(100000)}})
    await assert_json_error(resp, 400)
    resp = await client.post("/comfymq/templates/sd_basic/jobs", json={"sweep": {f"k{i}": [1] for i in range(100000)}})
    await assert_json_error(resp, 400)
    assert time.monotonic() - t0 < 10 and total_jobs(service) == 0


@pytest.mark.asyncio
async def test_a_sweep_whose_product_overflows_is_refused_before_building(client, service):
    inputs = {f"i{n}": n for n in range(256)}
    t = {
        "name": "wide",
        "workflow": {"1": {"class_type": "Wide", "inputs": inputs}},
        "parameters": {f"p{n}": {"targets": [f"1.i{n}"]} for n in range(256)},
    }
    await create_template(client, t)
    t0 = time.monotonic()
    sweep = {f"p{n}": [0, 1] for n in range(256)}  # 2**256 combinations
    await assert_json_error(await client.post("/comfymq/templates/wide/jobs", json={"sweep": sweep}), 400)
    sweep = {"p0": list(range(10000)), "p1": list(range(10000))}  # 10**8
    await assert_json_error(await client.post("/comfymq/templates/wide/jobs", json={"sweep": sweep}), 400)
    sweep = {"p0": list(range(10001))}
    await assert_json_error(await client.post("/comfymq/templates/wide/jobs", json={"sweep": sweep}), 400)
    assert time.monotonic() - t0 < 10 and total_jobs(service) == 0


@pytest.mark.parametrize(
    "body",
    [
        {"count": 10001},
        {"count": 10000, "sweep": {"size": [256, 512]}},
        {"count": 5001, "sweep": {"size": [256, 512]}},
        {"count": 2, "sweep": {"seed": list(range(5001))}},
        {"count": 0},
        {"count": -1},
        {"count": 1.5},
        {"count": True},
        {"count": "10"},
        {"count": 10**30},
    ],
)
@pytest.mark.asyncio
async def test_count_and_sweep_past_max_jobs_queue_nothing(client, service, body):
    await create_template(client)
    resp = await client.post("/comfymq/templates/sd_basic/jobs", json=body)
    err = await assert_json_error(resp, resp.status)
    assert resp.status in (400, 413), err
    assert total_jobs(service) == 0 and service.store.stats().get("outbox", 0) == 0


@pytest.mark.asyncio
async def test_small_limits_are_met_exactly_and_never_passed(aiohttp_client, service):
    client = await aiohttp_client(build_app(service, limits=RequestLimits(max_jobs_per_request=10)))
    await create_template(client)
    ok = await post(client, "/comfymq/templates/sd_basic/jobs", {"count": 2, "sweep": {"seed": [1, 2, 3, 4, 5]}})
    assert ok["count"] == 10
    for body in ({"count": 3, "sweep": {"seed": [1, 2, 3, 4]}}, {"sweep": {"seed": list(range(11))}}, {"count": 11}):
        resp = await client.post("/comfymq/templates/sd_basic/jobs", json=body)
        assert resp.status in (400, 413), await resp.text()
    assert total_jobs(service) == 10


@pytest.mark.asyncio
async def test_sweep_values_count_toward_stored_bytes(aiohttp_client, service):
    client = await aiohttp_client(build_app(service, limits=RequestLimits(max_stored_bytes_per_request=256 << 10)))
    await create_template(client)
    sweep = {"prompt": [f"{i} " + "x" * 10000 for i in range(100)]}  # 100 jobs x 10 KB > 256 KiB
    resp = await client.post("/comfymq/templates/sd_basic/jobs", json={"sweep": sweep})
    await assert_json_error(resp, 413)
    assert total_jobs(service) == 0


@pytest.mark.parametrize("source", ["request", "template"])
@pytest.mark.asyncio
async def test_webhook_urls_count_toward_the_stored_bytes_bound(aiohttp_client, service, source):
    """Each job keeps its webhooks (8 URLs of up to 2048 characters, and 8 more from its template) in its labels, yet
    max_stored_bytes_per_request counts only prompt and workflow bytes: a 17 KB request stored 100 x 16 KB here, and
    with the defaults (10000 jobs) one such request stores 160-320 MB, the amplification the limit exists to stop."""
    client = await aiohttp_client(build_app(service, limits=RequestLimits(max_stored_bytes_per_request=256 << 10)))
    hooks = [f"http://127.0.0.1:9/{i}/" + "a" * 2000 for i in range(8)]
    if source == "request":
        resp = await client.post("/comfymq/jobs", json={"prompt": PROMPT, "count": 100, "webhooks": hooks})
    else:
        await create_template(client, {**TEMPLATE, "webhooks": hooks})
        resp = await client.post("/comfymq/templates/sd_basic/jobs", json={"count": 100})
    stored = sum(len(json.dumps(j.get("labels") or {})) for j in service.store.list(limit=1000)["jobs"])
    assert resp.status == 413, (
        f"answered {resp.status}: {total_jobs(service)} jobs queued holding {stored} bytes of labels, past "
        f"max_stored_bytes_per_request = {256 << 10}"
    )
    assert total_jobs(service) == 0


# ---- templates: versions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version, status",
    [("1", 400), (1.0, 400), (True, 400), (False, 400), (0, 400), (-1, 400), (10**9, (400, 404)), ([1], 400),
     ({"v": 1}, 400), (2, 404), (99999999, 404), (10**40, (400, 404))],
)  # fmt: skip
@pytest.mark.asyncio
async def test_odd_versions_in_a_job_request(client, service, version, status):
    await create_template(client)
    resp = await client.post("/comfymq/templates/sd_basic/jobs", json={"version": version})
    err = await assert_json_error(resp, resp.status)
    assert resp.status in (status if isinstance(status, tuple) else (status,)), err
    assert total_jobs(service) == 0


@pytest.mark.parametrize("query", ["abc", "0", "-1", "1.0", "01", "1e3", "", " 1", "1 ", "１", "99999999", "123456789"])
@pytest.mark.asyncio
async def test_odd_version_queries(client, service, query):
    await create_template(client)
    for path in ("/comfymq/templates/sd_basic", "/comfymq/templates/sd_basic/schema"):
        resp = await client.get(path, params={"version": query})
        assert resp.status in (400, 404), await resp.text()
        await assert_json_error(resp, resp.status)


@pytest.mark.asyncio
async def test_concurrent_puts_on_both_prefixes_make_unique_consecutive_versions(client, service):
    """/comfymq and /api/comfymq each have a TemplateRegistry (and a lock) of their own: only_if_absent must keep
    their versions apart, none lost."""
    await create_template(client)

    async def put(i):
        prefix = "/comfymq" if i % 2 else "/api/comfymq"
        resp = await client.put(f"{prefix}/templates/sd_basic", json={**TEMPLATE, "description": f"v{i}"})
        return await answer(resp)

    results = await asyncio.gather(*[put(i) for i in range(40)])
    assert all(code == 200 for code, _ in results), [b for c, b in results if c != 200][:3]
    versions = sorted(b["template"]["version"] for _, b in results)
    assert versions == list(range(2, 42))
    stored = {}
    for v in versions:
        rec = TemplateRegistry(service.store).get("sd_basic", v)
        stored[rec["template"]["description"]] = v
    assert sorted(stored) == sorted(f"v{i}" for i in range(40))  # every text kept, each under its own number


@pytest.mark.asyncio
async def test_concurrent_creates_of_one_name_make_one_template(client, service):
    async def create(i):
        prefix = "/comfymq" if i % 2 else "/api/comfymq"
        return (await client.post(f"{prefix}/templates", json={**TEMPLATE, "description": f"v{i}"})).status

    statuses = sorted(await asyncio.gather(*[create(i) for i in range(20)]))
    assert statuses == [201] + [409] * 19
    assert tpl_docs(service) == ["tpl/sd_basic/00000001"]


def test_a_delete_racing_a_save_of_the_other_registry_is_not_acknowledged_falsely(service):
    """The host has two registries (one per route prefix, /comfymq and /api/comfymq). A DELETE whose tombstone lost
    the only_if_absent race to a PUT through the other prefix still answered 200 {"deleted", "version": N} -- but
    version N is the PUT's text, so the template lives on (registry.delete ignores put_doc's False). Over HTTP this
    happens about once in 30 DELETE-vs-PUT races; here the interleaving is forced."""
    raw = {k: v for k, v in TEMPLATE.items() if k != "object_info"}
    other = TemplateRegistry(service.store)  # the other prefix's
    other.save(raw, object_info=OBJECT_INFO)

    class Racing:
        """The store as the deleting registry sees it: the other registry saves just before the tombstone lands."""

        def __init__(self, store):
            self._store = store

        def __getattr__(self, name):
            return getattr(self._store, name)

        def put_doc(self, key, value, **kw):
            if json.loads(value).get("deleted"):
                other.save({**raw, "description": "changed meanwhile"}, object_info=OBJECT_INFO)
            return self._store.put_doc(key, value, **kw)

    deleting = TemplateRegistry(Racing(service.store))
    try:
        version = deleting.delete("sd_basic")
    except (LookupError, TemplateError):
        return  # refusing (or asking to try again) is honest
    rec = json.loads(service.store.get_doc(f"tpl/sd_basic/{version:08d}"))
    assert rec.get("deleted"), (
        f"delete() answered version {version} as the tombstone, but that version holds "
        f"{rec.get('template', {}).get('description')!r}: the template was not deleted"
    )
    assert TemplateRegistry(service.store).get("sd_basic") is None


@pytest.mark.asyncio
async def test_jobs_made_while_a_template_is_deleted_name_a_readable_version(client, service):
    await create_template(client)

    async def submit():
        resp = await client.post("/comfymq/templates/sd_basic/jobs", json={"params": {"seed": 1}})
        return resp.status, await resp.json()

    tasks = [submit() for _ in range(20)]
    deleting = client.delete("/comfymq/templates/sd_basic", headers=JSON_CT)
    results = await asyncio.gather(*tasks[:10], deleting, *tasks[10:])
    assert results[10].status == 200
    for status, body in results[:10] + results[11:]:
        assert status in (200, 404), body
        if status == 200:
            job = service.store.get(body["jobs"][0]["id"])
            label = job["labels"]["comfymq/template"]
            assert TemplateRegistry(service.store).get("sd_basic", label["version"]) is not None
    await assert_json_error(await client.post("/comfymq/templates/sd_basic/jobs", json={}), 404)


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=501", "limit=-1", "limit=x", "limit=1.5", "cursor=zz", "cursor=" + "0" * 15, "cursor=../x",
     "bogus=1", "cursor=" + "g" * 16],
)  # fmt: skip
@pytest.mark.asyncio
async def test_bad_template_jobs_listing_parameters_are_a_400(client, service, query):
    await create_template(client)
    await assert_json_error(await client.get(f"/comfymq/templates/sd_basic/jobs?{query}"), 400)


# ---- templates: media parameters -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {"asset_id": ["4", 0]},  # a link: rewires the template's graph to another node's output
        {"asset_hash": ["4", 0]},
        {"asset_id": None},
        {"asset_hash": 5},
        {"asset_id": True},
        {"asset_id": {"nested": "x"}},
        {"asset_id": ""},
    ],
)
@pytest.mark.asyncio
async def test_a_media_reference_object_must_hold_an_asset_reference(client, service, value):
    """An image parameter given {"asset_id": X} was put into the workflow as X itself whenever X was not a string:
    a list became a link to another node, null or a number became the input's value; the job was queued."""
    await create_template(client)
    resp = await client.post("/comfymq/templates/sd_basic/jobs", json={"params": {"image": value}})
    if resp.status == 200:
        job_id = (await resp.json())["jobs"][0]["id"]
        queued = service.store.get(job_id)["prompt"]["10"]["inputs"]["image"]
        pytest.fail(f"image = {value!r} was queued as LoadImage.image = {queued!r}")
    await assert_json_error(resp, 400)
    assert total_jobs(service) == 0


@pytest.mark.parametrize(
    "value",
    [
        "sha256:" + "0" * 64,
        "0" * 64,
        "blake3:" + "0" * 64,
        "asset_" + "0" * 32,
        {"comfymq_input": "0" * 64},
        {"comfymq_input": "0" * 64, "name": "../../etc/passwd"},
        {"comfymq_input": "../../etc/passwd"},
        {"asset_hash": "blake3:" + "f" * 64},
        {"asset_id": "asset_" + "f" * 32, "extra": 1},
        {"comfymq_input": "0" * 64, **{f"k{i}": i for i in range(9)}},
        {"comfymq_input": "0" * 64, "asset_id": "asset_" + "0" * 32},
        {},
        "",
        "x" * 5000,
        [],
        7,
    ],
)
@pytest.mark.asyncio
async def test_media_parameters_with_bogus_references_are_a_400(client, service, value):
    await create_template(client)
    resp = await client.post("/comfymq/templates/sd_basic/jobs", json={"params": {"image": value}})
    await assert_json_error(resp, 400)
    assert total_jobs(service) == 0


@pytest.mark.asyncio
async def test_a_stored_inputs_name_is_made_safe(client, service):
    await create_template(client)
    up = await client.post("/comfymq/inputs?name=cat.png", data=b"\x89PNG fake")
    sha = (await up.json())["sha256"]
    body = await post(
        client,
        "/comfymq/templates/sd_basic/jobs",
        {"params": {"image": {"comfymq_input": sha, "name": "../../../etc/x.png"}}},
    )
    ref = service.store.get(body["jobs"][0]["id"])["prompt"]["10"]["inputs"]["image"]
    assert ref["comfymq_input"] == sha and "/" not in ref["name"] and ".." not in ref["name"]


# ---- templates: folders ------------------------------------------------------------------------------------


def test_folder_tricks_load_the_good_templates_and_name_every_bad_file(tmp_path, service):
    root = tmp_path / "templates"
    (root / "workflows").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text(json.dumps(PROMPT))
    (outside / "t.json").write_text(json.dumps({"name": "leak", "workflow": PROMPT}))
    (root / "workflows" / "wf.json").write_text(json.dumps(PROMPT))
    (root / "good.json").write_text(
        json.dumps({"name": "good", "workflow": PROMPT, "parameters": {"w": {"targets": ["1.width"]}}})
    )
    (root / "link_out.json").symlink_to(outside / "t.json")  # a file symlink leading out
    (root / "linked_dir").symlink_to(outside, target_is_directory=True)  # a folder symlink: not walked
    (root / "loop.json").symlink_to(root / "loop.json")  # a symlink loop
    (root / "escape.yaml").write_text("name: escape\nworkflow_file: ../outside/secret.json\n")
    (root / "abs.yaml").write_text(f"name: absolute\nworkflow_file: {outside / 'secret.json'}\n")
    (root / "bomb.yaml").write_text("a: &a [1, 2]\nb: [*a, *a, *a, *a]\nname: bomb\n")
    (root / "tags.yaml").write_text("name: !!python/object:os.system ['echo hi']\n")
    (root / "bigint.yaml").write_text("name: bigint\nx: " + "9" * 100000 + "\n")
    (root / "deep.yaml").write_text("name: deep\nworkflow: " + "[" * 5000 + "]" * 5000 + "\n")
    (root / "seed.yaml").write_text(
        "task_types:\n  t2i:\n    workflows:\n"
        "      ../evil: {workflow_file: workflows/wf.json}\n"
        "      tpl/x: {workflow_file: workflows/wf.json}\n"
        "      fine: {workflow_file: workflows/wf.json}\n"
        "      traverse: {workflow_file: ../../outside/secret.json}\n"
        "      notafile: {workflow_file: workflows}\n"
    )
    (root / "nanjson.json").write_text(
        '{"name": "nanjson", "workflow": {"1": {"class_type": "A", "inputs": {"x": NaN}}}}'
    )
    loaded, errors = load_into_store(service.templates, root)
    names = sorted(k.split("/")[1] for k in tpl_docs(service))
    assert names == ["fine", "good"], (names, [str(e) for e in errors])
    assert loaded == 2
    wheres = {e.where for e in errors}
    for bad in ("link_out.json", "loop.json", "escape.yaml", "abs.yaml", "bomb.yaml", "tags.yaml", "bigint.yaml",
                "deep.yaml", "seed.yaml", "nanjson.json"):  # fmt: skip
        assert bad in wheres, (bad, [str(e) for e in errors])
    # loading the same folder again makes no new versions
    again, _ = load_into_store(service.templates, root)
    assert again == 2 and sorted(tpl_docs(service)) == ["tpl/fine/00000001", "tpl/good/00000001"]


def test_a_huge_or_special_file_in_the_folder_is_refused_quickly(tmp_path, service, monkeypatch):
    import os

    from comfy_nodes.templates import documents

    monkeypatch.setattr(documents, "MAX_FILE_BYTES", 1 << 20)
    root = tmp_path / "t"
    root.mkdir()
    with open(root / "huge.json", "wb") as f:
        f.truncate(64 << 20)  # sparse: 64 MiB of zeros
    os.mkfifo(root / "fifo.json")
    (root / "devnull.json").symlink_to("/dev/zero")
    (root / "good.json").write_text(json.dumps({"name": "good", "workflow": PROMPT}))
    t0 = time.monotonic()
    loaded, errors = load_into_store(service.templates, root)
    assert time.monotonic() - t0 < 5
    assert loaded == 1 and {e.where for e in errors} >= {"huge.json", "fifo.json", "devnull.json"}


# ---- webhooks: targets -------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_template_and_request_webhooks_together_are_all_delivered_or_refused(client, service):
    """A template names 5 targets and the request 4 more (each within the limit of 8): the merged 9 went into the
    job's labels, where the Deliverer's parse_targets refuses more than 8 -- and silently delivered none of them."""
    service.start_webhooks([], **FAST)
    with Receiver() as r:
        await create_template(client, {**TEMPLATE, "webhooks": [f"{r.url}?t{i}" for i in range(5)]})
        resp = await client.post(
            "/comfymq/templates/sd_basic/jobs", json={"webhooks": [f"{r.url}?j{i}" for i in range(4)]}
        )
        if resp.status == 400:
            assert total_jobs(service) == 0
            return
        code, body = await answer(resp)
        assert code == 200, body
        job_id = body["jobs"][0]["id"]
        await asyncio.to_thread(service.store.cancel, job_id)
        await until(lambda: not service.store.list_docs(prefix="outbox/"), 10, "the outbox to drain")
        await asyncio.sleep(0.3)
        got = sorted(q["path"] for q in r.requests)
        assert len(got) == 9, f"9 targets named, {len(got)} delivered ({got}); records: {records(service, job_id)}"


@pytest.mark.asyncio
async def test_a_webhook_url_that_is_accepted_can_be_sent(client, service):
    """http.client sends the request line as ASCII: a URL with a non-ASCII path or query was accepted (200), then
    every attempt failed with UnicodeEncodeError until it expired. Refuse it (400) or percent-encode it."""
    service.start_webhooks([], **FAST)
    with Receiver() as r:
        for url in (r.url + "/ü", r.url + "?name=文生图"):
            resp = await client.post("/comfymq/jobs", json={"prompt": PROMPT, "webhooks": [url]})
            if resp.status == 400:
                continue
            job_id = (await resp.json())["jobs"][0]["id"]
            await asyncio.to_thread(service.store.cancel, job_id)
            end = time.monotonic() + 5
            while time.monotonic() < end and not any(job_id.encode() in q["body"] for q in r.requests):
                await asyncio.sleep(0.05)
            recs = records(service, job_id)
            assert any(job_id.encode() in q["body"] for q in r.requests), (
                f"{url!r} was accepted but never reached: {[(x['attempts'], x['last_error']) for x in recs]}"
            )


@pytest.mark.parametrize(
    "hook",
    [
        "gopher://127.0.0.1:70/x", "data:text/plain,hi", "ws://127.0.0.1/x", "http://[::1", "http://[zz]/", "//127.0.0.1/x",
        "http://127.0.0.1:0/", "http://127.0.0.1:65536/", "http://127.0.0.1:-1/", "http://127.0.0.1:8190\r\nX: y/",
        "http://127.0.0.1/\x00", "http://127.0.0.1/\x7f", "http:\\\\127.0.0.1\\x", "http://", "http://:80/",
        "https://" + "a" * 2100 + ".example/", {"url": "http://x/", "events": "job.failed"},
        {"url": "http://x/", "events": ["job.failed", 5]}, {"events": ["job.failed"]}, {"url": None}, "",
        [["http://x/"]], True,
    ],
)  # fmt: skip
@pytest.mark.asyncio
async def test_odd_webhook_targets_are_a_400_and_queue_nothing(client, service, hook):
    resp = await client.post("/comfymq/jobs", json={"prompt": PROMPT, "webhooks": [hook]})
    await assert_json_error(resp, 400)
    await create_template(client, {**TEMPLATE, "name": "h"})
    resp = await client.post("/comfymq/templates/h/jobs", json={"webhooks": [hook]})
    await assert_json_error(resp, 400)
    resp = await client.post("/comfymq/templates", json={**TEMPLATE, "name": "h2", "webhooks": [hook]})
    await assert_json_error(resp, 400)
    assert total_jobs(service) == 0 and tpl_docs(service) == ["tpl/h/00000001"]


@pytest.mark.asyncio
async def test_userinfo_is_sent_as_basic_auth_and_a_fragment_is_not_sent(client, service):
    service.start_webhooks([], **FAST)
    with Receiver() as r:
        url = r.url.replace("http://", "http://user:p%40ss@") + "?q=1#frag"
        job_id = await job_with_hooks(client, [url])
        await asyncio.to_thread(service.store.cancel, job_id)
        [req] = await asyncio.to_thread(r.wait, lambda reqs: len(reqs) >= 1, 10)
        assert req["path"] == "/hook?q=1"
        import base64

        assert base64.b64decode(req["headers"]["authorization"].split()[1]) in (b"user:p%40ss", b"user:p@ss")


@pytest.mark.asyncio
async def test_an_ipv6_loopback_literal_is_delivered(client, service):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    got = []

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            got.append(self.rfile.read(int(self.headers["content-length"])))
            self.send_response(204)
            self.end_headers()

    class V6(ThreadingHTTPServer):
        address_family = socket.AF_INET6

    try:
        server = V6(("::1", 0), H)
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        service.start_webhooks([], **FAST)
        job_id = await job_with_hooks(client, [f"http://[::1]:{server.server_address[1]}/v6"])
        await asyncio.to_thread(service.store.cancel, job_id)
        await until(lambda: got, 10, "the IPv6 receiver")
    finally:
        server.shutdown()
        server.server_close()


# ---- webhooks: hostile receivers ----------------------------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.asyncio
async def test_hostile_receivers_do_not_hold_up_deliveries_to_others(client, service):
    """Four receivers that never finish answering (hang, trickle 1 byte/s, a 200 that never closes, a flood of
    100 Continue) take all four sender threads (outbox.SENDERS) for TIMEOUT (10 s) to TOTAL_TIMEOUT (30 s) per
    attempt, and are retried: a good receiver's delivery queued behind them waits that long, every time. Any job
    submitter can name such URLs, so one can hold every other job's webhooks back indefinitely."""
    service.start_webhooks([], **FAST)
    bad = [Hostile(m) for m in ("hang", "trickle", "no_close", "continue_flood", "hang")]
    elapsed = None
    try:
        with Receiver() as good:
            for h in bad:
                job_id = await job_with_hooks(client, [h.url])
                await asyncio.to_thread(service.store.cancel, job_id)
            await until(lambda: sum(h.requests for h in bad) >= 4, 10, "the hostile receivers to be called")
            t0 = time.monotonic()
            job_id = await job_with_hooks(client, [good.url])
            await asyncio.to_thread(service.store.cancel, job_id)
            end = t0 + 6
            while time.monotonic() < end:
                if good.requests:
                    elapsed = time.monotonic() - t0
                    break
                await asyncio.sleep(0.05)
            # the Deliverer's thread itself still runs passes (it only hands sends to the pool)
            assert service.webhooks._thread.is_alive()
    finally:
        for h in bad:
            h.close()
    assert elapsed is not None and elapsed < 3, (
        f"a good receiver waited {'more than 6 s' if elapsed is None else f'{elapsed:.1f} s'} behind "
        f"{len(bad)} hostile ones"
    )


@pytest.mark.parametrize("mode", ["huge", "garbage", "redirect"])
@pytest.mark.asyncio
async def test_hostile_answers_are_recorded_quickly_and_redirects_not_followed(client, service, mode):
    service.start_webhooks([], **FAST)
    with Receiver() as target:
        h = Hostile(mode, location=target.url)
        try:
            job_id = await job_with_hooks(client, [h.url])
            t0 = time.monotonic()
            await asyncio.to_thread(service.store.cancel, job_id)
            await until(lambda: (records(service, job_id) or [{}])[0].get("attempts", 0) >= 1, 10, "an attempt")
            assert time.monotonic() - t0 < 5
            [rec] = records(service, job_id)
            if mode == "huge":  # a 200 whose body is cut after 64 KiB is still a 200
                assert rec["state"] == "delivered" and rec["last_status"] == 200
            elif mode == "garbage":
                assert rec["state"] == "pending" and rec["last_status"] is None and rec["last_error"]
                assert len(rec["last_error"]) <= 500
            else:
                assert rec["last_status"] == 302 and rec["state"] == "pending"
                await asyncio.sleep(0.5)
                assert target.requests == [], "a redirect was followed"
        finally:
            h.close()


@pytest.mark.timeout(90)
@pytest.mark.asyncio
async def test_endings_past_the_first_scan_are_not_starved_by_a_dead_receiver(client, service):
    """The Deliverer looks only at the first SCAN (256) outbox entries, oldest first, on every pass. 300 endings
    whose receiver is down stay there (retrying, 24 h by default), so the 301st ending -- to a receiver that
    answers -- is never even looked at until they expire."""
    service.start_webhooks([], backoff=(600,), poll=0.05)
    body = await post(client, "/comfymq/jobs", {"prompt": PROMPT, "count": 300, "webhooks": [dead_url()]})
    await post(client, f"/comfymq/batches/{body['batch_id']}/cancel", {})
    await until(lambda: service.webhooks.sent >= 256, 20, "the first pass's sends")
    # a pass over them stays quick (it never re-sends before next_at)
    t0 = time.perf_counter()
    await asyncio.to_thread(service.webhooks.run_once)
    assert time.perf_counter() - t0 < 1.0
    with Receiver() as good:
        job_id = await job_with_hooks(client, [good.url])
        await asyncio.to_thread(service.store.cancel, job_id)
        end = time.monotonic() + 5
        while time.monotonic() < end and not good.requests:
            await asyncio.sleep(0.05)
        assert good.requests, (
            f"the ending of {job_id} was not delivered in 5 s behind {service.store.stats()['outbox'] - 1} "
            f"undeliverable ones (records made: {len(records(service, job_id))})"
        )


def test_one_ending_that_cannot_be_recorded_does_not_stop_the_others(service, native):
    """put_doc raises DiskFullError once the store's documents reach their limits (256 MiB or 200000, shared with
    templates and delivery records kept 7 days). The Deliverer's pass then raises at that outbox entry -- the
    oldest -- on every pass, and no ending after it is ever delivered, though their records would fit."""
    with Receiver() as r:
        hooks = lambda tag: [{"url": f"{r.url}?{tag}", "events": list(EVENTS)}]  # noqa: E731
        bad = service.store.enqueue(PROMPT, notify=True, labels={LABEL: hooks("bad")})["id"]
        good = service.store.enqueue(PROMPT, notify=True, labels={LABEL: hooks("good")})["id"]
        service.store.cancel(bad)
        time.sleep(0.005)
        service.store.cancel(good)

        class Full:
            def __init__(self, store):
                self._store = store

            def __getattr__(self, name):
                return getattr(self._store, name)

            def put_doc(self, key, value, **kw):
                if key.startswith(f"webhook/{bad}/"):
                    raise native.DiskFullError("documents would hold more than 268435456 bytes together")
                return self._store.put_doc(key, value, **kw)

        d = Deliverer(Full(service.store), SECRET, **FAST)
        d.start()
        try:
            end = time.monotonic() + 5
            while time.monotonic() < end and not any("good" in q["path"] for q in r.requests):
                time.sleep(0.05)
        finally:
            d.stop()
        assert any("good" in q["path"] for q in r.requests), "one entry that cannot be recorded stopped every other"


# ---- webhooks: what an ending must still deliver ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_job_deleted_right_after_it_ended_is_still_told(client, service):
    """The targets are read from the job's labels when the Deliverer makes the records -- up to POLL (1 s) after
    the ending, longer after a restart. A job cancelled then deleted in that window had its ending committed (the
    outbox entry is there) but delivered to nobody: _make_records finds no job, so no targets."""
    with Receiver() as r:
        # the Deliverer runs, but its next pass is far away: the delete falls inside the window
        service.start_webhooks([], backoff=(0.05,), poll=30)
        await asyncio.sleep(0.2)  # (its first pass, over an empty outbox, is behind it)
        job_id = await job_with_hooks(client, [r.url])
        await post(client, f"/comfymq/jobs/{job_id}/cancel", {})
        resp = await client.delete(f"/comfymq/jobs/{job_id}", headers=JSON_CT)
        assert resp.status == 200
        assert len(service.store.list_docs(prefix="outbox/")) == 1  # the ending is committed
        service.webhooks.kick()  # (the next pass, as with the host's own 1 s poll)
        end = time.monotonic() + 5
        while time.monotonic() < end and not r.requests:
            await asyncio.sleep(0.05)
        assert r.requests, "a committed ending of a deleted job was never delivered"
        payload = json.loads(r.requests[0]["body"])
        assert payload["type"] == "job.cancelled" and payload["data"]["id"] == job_id


@pytest.mark.asyncio
async def test_a_job_deleted_while_its_delivery_retries_is_still_delivered(client, service):
    service.start_webhooks([], **FAST)
    with Receiver() as r:
        r.answers = [500] * 3
        job_id = await job_with_hooks(client, [r.url])
        await post(client, f"/comfymq/jobs/{job_id}/cancel", {})
        await asyncio.to_thread(r.wait, lambda reqs: len(reqs) >= 1, 10)
        resp = await client.delete(f"/comfymq/jobs/{job_id}", headers=JSON_CT)
        assert resp.status == 200
        reqs = await asyncio.to_thread(r.wait, lambda reqs: len(reqs) >= 4, 10)
        assert len({q["headers"]["webhook-id"] for q in reqs}) == 1
        last = r.verified(service.webhooks.secret)[-1]
        assert last["data"]["id"] == job_id
        await until(lambda: not service.store.list_docs(prefix="outbox/"), 10, "the outbox to drain")
        assert [d["state"] for d in records(service, job_id)] == ["delivered"]


@pytest.mark.asyncio
async def test_a_retried_job_s_second_ending_is_a_second_delivery_with_a_new_id(client, service):
    service.start_webhooks([], **FAST)
    with Receiver() as r:
        job_id = await job_with_hooks(client, [r.url])
        await post(client, f"/comfymq/jobs/{job_id}/cancel", {})
        await asyncio.to_thread(r.wait, lambda reqs: len(reqs) >= 1, 10)
        await post(client, f"/comfymq/jobs/{job_id}/retry", {})
        await post(client, f"/comfymq/jobs/{job_id}/cancel", {})
        reqs = await asyncio.to_thread(r.wait, lambda reqs: len(reqs) >= 2, 10)
        await asyncio.sleep(0.3)
        assert len(r.requests) == 2
        assert reqs[0]["headers"]["webhook-id"] != reqs[1]["headers"]["webhook-id"]
        view = (await (await client.get(f"/comfymq/jobs/{job_id}")).json())["job"]
        assert [d["state"] for d in view["webhooks"]] == ["delivered", "delivered"]


def test_every_ending_of_a_job_gets_its_own_outbox_entry(store):
    """The outbox key is outbox/<ms>-<job id>: two endings of one job within one millisecond (cancel, retry,
    cancel) share it, the second overwriting the first, and make the same delivery ids -- so one ending is never
    told. (A commit here takes about 0.2 ms.)"""
    job_id = store.enqueue(PROMPT, notify=True)["id"]
    for _ in range(100):
        store.cancel(job_id)
        store.retry(job_id)
    entries = store.list_docs(prefix="outbox/", limit=1000)
    assert len(entries) == 100, f"100 endings committed, {len(entries)} outbox entries"


# ---- webhooks: the deliveries listing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    ["state=bogus", "state=,", "state=all,failed", "state=FAILED", "limit=0", "limit=501", "limit=-1", "limit=abc",
     "limit=1.5", "limit=99999", "limit=%205", "job=XYZ", "job=" + "0" * 15, "job=" + "A" * 16,
     "job=../../x", "cursor=webhook/../x", "cursor=" + "x" * 5000, "cursor=outbox/1", "state=failed&state=pending",
     "job=0123456789abcdef&job=0123456789abcdef", "unknown=1", "cursor=webhook%2F0123456789abcdef%2F..%2F..",
     "cursor=tpl/sd_basic/00000001"],
)  # fmt: skip
@pytest.mark.asyncio
async def test_bad_deliveries_listing_parameters_are_a_400(client, service, query):
    resp = await client.get(f"/comfymq/webhooks/deliveries?{query}")
    await assert_json_error(resp, 400)


@pytest.mark.asyncio
async def test_deliveries_cursor_paging_returns_every_record_exactly_once(client, service):
    service.start_webhooks([], **FAST)
    with Receiver() as r:
        r.answers = [500] * 8  # some retried before they are delivered
        ids = []
        for n in range(4):
            job_id = await job_with_hooks(client, [f"{r.url}?{n}-{i}" for i in range(7)])
            ids.append(job_id)
            await asyncio.to_thread(service.store.cancel, job_id)
        await until(lambda: not service.store.list_docs(prefix="outbox/"), 15, "every delivery")
    all_ids = sorted(rec["id"] for rec in records(service))
    assert len(all_ids) == 28

    async def pages(query: str, limit: int) -> list[str]:
        seen, cursor, calls = [], None, 0
        while True:
            q = f"{query}&limit={limit}" + (f"&cursor={cursor}" if cursor else "")
            code, body = await answer(await client.get(f"/comfymq/webhooks/deliveries?{q}"))
            assert code == 200, body
            assert len(body["deliveries"]) <= limit
            seen += [d["id"] for d in body["deliveries"]]
            cursor = body["next_cursor"]
            calls += 1
            assert calls < 100
            if not cursor:
                return seen

    for limit in (1, 5, 7, 28, 500):
        got = await pages("state=all", limit)
        assert sorted(got) == all_ids and len(got) == len(set(got)), limit
        got = await pages("state=delivered", limit)
        assert sorted(got) == all_ids
        assert await pages("state=failed,pending,retrying", limit) == []
        got = await pages(f"state=all&job={ids[2]}", limit)
        assert sorted(got) == sorted(rec["id"] for rec in records(service, ids[2])) and len(got) == 7


# ---- the new routes: other sites, rebound names, the token ------------------------------------------------------


def _state(service) -> tuple:
    docs = service.store.list_docs(limit=100000)
    return total_jobs(service), service.store.stats()["paused"], docs


def _attacks(prefix: str) -> list[tuple[str, str, bytes | None]]:
    tpl = json.dumps({**TEMPLATE, "name": "evil"}).encode()
    return [
        ("POST", f"{prefix}/templates", tpl),
        ("PUT", f"{prefix}/templates/sd_basic", json.dumps({**TEMPLATE, "description": "evil"}).encode()),
        ("PUT", f"{prefix}/templates/evil", tpl),
        ("DELETE", f"{prefix}/templates/sd_basic", None),
        ("POST", f"{prefix}/templates/sd_basic/jobs", b'{"params": {"seed": 1}, "webhooks": ["http://evil.example/"]}'),
        ("POST", f"{prefix}/jobs", json.dumps({"prompt": PROMPT, "webhooks": ["http://evil.example/"]}).encode()),
    ]


CROSS_SITE = [
    {"Content-Type": "text/plain"},
    {"Content-Type": "text/plain;charset=UTF-8"},
    {"Content-Type": "application/x-www-form-urlencoded"},
    {"Content-Type": "multipart/form-data; boundary=x"},
    {},
    {"Content-Type": "application/json", "Origin": "https://evil.example"},
    {"Content-Type": "application/json", "Origin": "null"},
    {"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"},
    {"Content-Type": "application/json", "Host": "evil.example:8190"},
    {"Content-Type": "application/json", "Origin": "http://127.0.0.1.evil.example"},
]


@pytest.mark.parametrize("app_kind", ["standalone", "inside_comfyui"])
@pytest.mark.asyncio
async def test_the_new_state_changing_routes_refuse_what_another_site_can_send(aiohttp_client, service, app_kind):
    app = build_app(service) if app_kind == "standalone" else comfy_like_app(service)
    client = await aiohttp_client(app)
    TemplateRegistry(service.store).save(
        {k: v for k, v in TEMPLATE.items() if k != "object_info"}, object_info=OBJECT_INFO
    )
    before = _state(service)
    for prefix in ("/comfymq", "/api/comfymq"):
        for method, path, body in _attacks(prefix):
            for headers in CROSS_SITE:
                resp = await client.request(method, path, data=body, headers=headers)
                assert resp.status in (400, 403, 415), (method, path, headers, resp.status, await resp.text())
                await answer(resp)
    assert _state(service) == before


@pytest.mark.parametrize("app_kind", ["standalone", "inside_comfyui"])
@pytest.mark.asyncio
async def test_the_webhook_secret_is_not_readable_by_other_sites_or_rebound_names(aiohttp_client, service, app_kind):
    service.start_webhooks([], **FAST)
    app = build_app(service) if app_kind == "standalone" else comfy_like_app(service)
    client = await aiohttp_client(app)
    for prefix in ("/comfymq", "/api/comfymq"):
        for path in (f"{prefix}/webhooks", f"{prefix}/webhooks/deliveries?state=all", f"{prefix}/templates"):
            for headers in (
                {"Origin": "https://evil.example"},
                {"Origin": "null"},
                {"Sec-Fetch-Site": "cross-site"},
                {"Host": "evil.example"},
                {"Host": "evil.example:8190", "Origin": "http://evil.example:8190"},
            ):
                resp = await client.get(path, headers=headers)
                text = await resp.text()
                assert resp.status in (400, 403), (path, headers, resp.status)
                assert service.webhooks.secret not in text


@pytest.mark.parametrize("app_kind", ["standalone", "inside_comfyui"])
@pytest.mark.asyncio
async def test_with_a_token_the_new_routes_need_it(aiohttp_client, service, app_kind):
    service.start_webhooks([], **FAST)
    if app_kind == "standalone":
        app = build_app(service, token=TOKEN)
    else:
        app = comfy_like_app(service, token=TOKEN)
    client = await aiohttp_client(app)
    TemplateRegistry(service.store).save(
        {k: v for k, v in TEMPLATE.items() if k != "object_info"}, object_info=OBJECT_INFO
    )
    before = _state(service)
    body = json.dumps({**TEMPLATE, "name": "evil"}).encode()
    for prefix in ("/comfymq", "/api/comfymq"):
        routes = [
            ("GET", f"{prefix}/webhooks", None),
            ("GET", f"{prefix}/webhooks/deliveries", None),
            ("GET", f"{prefix}/webhooks/deliveries?state=all", None),
            ("GET", f"{prefix}/templates", None),
            ("GET", f"{prefix}/templates/sd_basic", None),
            ("GET", f"{prefix}/templates/sd_basic/schema", None),
            ("GET", f"{prefix}/templates/sd_basic/jobs", None),
            ("POST", f"{prefix}/templates", body),
            ("PUT", f"{prefix}/templates/sd_basic", body.replace(b'"evil"', b'"sd_basic"')),
            ("DELETE", f"{prefix}/templates/sd_basic", None),
            ("POST", f"{prefix}/templates/sd_basic/jobs", b"{}"),
        ]
        for method, path, data in routes:
            for auth in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN},
                         {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"}):  # fmt: skip
                resp = await client.request(method, path, data=data, headers={**JSON_CT, **auth})
                text = await resp.text()
                assert resp.status == 401, (method, path, auth, resp.status, text[:200])
                assert service.webhooks.secret not in text
    assert _state(service) == before
    good = {"Authorization": f"Bearer {TOKEN}"}
    info = await (await client.get("/comfymq/webhooks", headers=good)).json()
    assert info["secret"] == service.webhooks.secret
