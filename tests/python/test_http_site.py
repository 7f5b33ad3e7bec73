"""Cross-site requests and DNS rebinding (api/site_policy.py, api/guards.py): what a web page on another site
could make a browser send is refused, with nothing changed, on the standalone host's app (middlewares) and on
the routes as mounted inside ComfyUI (per handler, also their /api/... copies); our own clients keep working."""

from __future__ import annotations

import sys
import types

import pytest
from aiohttp import web
from conftest import assert_json_error, graph

from comfy_nodes.api import site_policy as sp
from comfy_nodes.api.routes import add_routes
from comfy_nodes.api.site_policy import SitePolicy
from comfy_nodes.config import load_config
from comfy_nodes.host.standalone import build_app
from comfy_nodes.plugin import site_policy

pytestmark = pytest.mark.asyncio

P = "/comfymq"
JSON = {"Content-Type": "application/json"}


def state_of(service) -> dict:
    """Everything a refused request must leave as it was."""
    st = service.store.stats()
    jobs = service.store.list(limit=1000)["jobs"]
    return {"paused": st["paused"], "counts": st["counts"], "jobs": {j["id"]: j["state"] for j in jobs}}


async def queued_job(client) -> str:
    r = await client.post(f"{P}/jobs", json={"prompt": graph()})
    assert r.status == 200, await r.text()
    return (await r.json())["jobs"][0]["id"]


def state_changing_requests(jid: str) -> list[tuple[str, str, bytes | None]]:
    """(method, path, body) of every state-changing route, as a page would send it (no preflight needed)."""
    task = b'{"prompt": {"1": {"class_type": "EmptyImage", "inputs": {}}}}'
    return [
        ("POST", f"{P}/jobs", task),
        ("POST", "/tasks", task),
        ("POST", f"/api{P}/jobs", task),
        ("POST", f"{P}/queue/pause", None),
        ("POST", f"{P}/jobs/{jid}/cancel", None),
        ("POST", f"{P}/batches/b1/cancel", None),
        ("DELETE", f"{P}/jobs/{jid}", None),
        ("POST", f"{P}/jobs/{jid}/retry", None),
        ("POST", f"{P}/workers/w1/drain", None),
        ("POST", f"{P}/workers/refresh", None),
        ("PUT", f"{P}/jobs", task),
        ("PATCH", f"{P}/jobs/{jid}", None),
    ]


# ---- Content-Type: no simple requests ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "application/json, text/plain",
        "json",
    ],
)
async def test_state_changing_requests_need_json_content_type(client, service, content_type):
    jid = await queued_job(client)
    await client.post(f"{P}/batches/b1/cancel", headers=JSON)  # nothing there: a 404, changes nothing
    before = state_of(service)
    for method, path, body in state_changing_requests(jid):
        headers = {} if content_type is None else {"Content-Type": content_type}
        resp = await client.request(method, path, data=body, headers=headers, skip_auto_headers=["Content-Type"])
        err = await assert_json_error(resp, 415)
        assert err["type"] == "unsupported_media_type" and "application/json" in err["message"], (method, path)
        assert "access-control-allow-origin" not in {k.lower() for k in resp.headers}
    assert state_of(service) == before


async def test_a_text_plain_form_post_queues_nothing(client, service):
    """<form enctype="text/plain" method="post"> with an input named '{"prompt": ...}': the body is valid JSON."""
    body = b'{"prompt": {"1": {"class_type": "EmptyImage", "inputs": {}}}, "x": "="}'
    for path in (f"{P}/jobs", "/tasks"):
        resp = await client.post(
            path, data=body, headers={"Content-Type": "text/plain", "Origin": "https://evil.example"}
        )
        await assert_json_error(resp, 403)  # the foreign Origin is refused first
        resp = await client.post(path, data=body, headers={"Content-Type": "text/plain"})
        await assert_json_error(resp, 415)
    assert service.store.stats()["total"] == 0


async def test_json_content_type_with_parameters_and_bodyless_actions_work(client, service):
    jid = await queued_job(client)
    charset = {"Content-Type": "Application/JSON; charset=utf-8"}
    assert (await client.post(f"{P}/queue/pause", headers=charset)).status == 200
    assert service.store.stats()["paused"] is True
    assert (await client.post(f"{P}/queue/resume", headers=JSON)).status == 200
    assert (await client.post(f"{P}/jobs/{jid}/cancel", headers=JSON)).status == 200
    assert service.store.get(jid)["state"] == "cancelled"
    assert (await client.delete(f"{P}/jobs/{jid}", headers=JSON)).status == 200
    # reads need no Content-Type
    assert (await client.get(f"{P}/jobs")).status == 200
    assert (await client.head(f"{P}/jobs")).status == 200


# ---- Origin and Sec-Fetch-Site ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "null",
        "http://evil.example:{port}",
        "http://localhost:{port}",
        "http://127.0.0.1:1",
        "http://127.0.0.1",
        "https://127.0.0.1:{port}.evil.example",
        "file://",
        "garbage",
        "http://127.0.0.1:{port}/path",
        "http://user@127.0.0.1:{port}",
    ],
)
async def test_a_foreign_origin_is_refused_on_every_request(client, service, origin):
    jid = await queued_job(client)
    before = state_of(service)
    origin = origin.format(port=client.port)
    for method, path, body in [
        ("GET", f"{P}/jobs", None),
        ("GET", f"{P}/jobs/{jid}", None),
        ("GET", "/health", None),
        ("GET", f"{P}/stats", None),
        ("OPTIONS", f"{P}/jobs", None),
    ] + state_changing_requests(jid):
        resp = await client.request(method, path, data=body, headers={**JSON, "Origin": origin})
        err = await assert_json_error(resp, 403)
        assert err["type"] == "cross_origin" and "allowed_origins" in err["message"]
        assert jid not in await resp.text()
        assert not any(k.lower().startswith("access-control-allow") for k in resp.headers), (method, path)
    assert state_of(service) == before


async def test_the_own_origin_passes(client, service):
    own = {"Origin": f"http://127.0.0.1:{client.port}", "Sec-Fetch-Site": "same-origin"}
    jid = await queued_job(client)
    assert (await client.post(f"{P}/jobs/{jid}/cancel", headers={**JSON, **own})).status == 200
    assert (await client.get(f"{P}/jobs/{jid}", headers=own)).status == 200
    # the port may be left out of Host for the scheme's default one
    resp = await client.get(f"{P}/jobs", headers={"Host": "localhost", "Origin": "http://localhost"})
    assert resp.status == 200


async def test_sec_fetch_site_cross_site_is_refused_also_without_origin(client, service):
    for method, path, body in [("GET", f"{P}/jobs", None), ("POST", f"{P}/queue/pause", None)]:
        resp = await client.request(method, path, data=body, headers={**JSON, "Sec-Fetch-Site": "cross-site"})
        assert (await assert_json_error(resp, 403))["type"] == "cross_origin"
    assert service.store.stats()["paused"] is False
    for value in ("same-origin", "same-site", "none"):
        assert (await client.get(f"{P}/jobs", headers={"Sec-Fetch-Site": value})).status == 200


async def test_allowed_origins(aiohttp_client, service):
    site = SitePolicy.build(["127.0.0.1"], allowed_origins=["https://comfy.example.com"])
    client = await aiohttp_client(build_app(service, site=site))
    headers = {**JSON, "Origin": "https://comfy.example.com", "Sec-Fetch-Site": "cross-site"}
    assert (await client.post(f"{P}/queue/pause", headers=headers)).status == 200
    assert (
        await client.post(f"{P}/queue/resume", headers={**JSON, "Origin": "https://comfy.example.com:443"})
    ).status == 200
    for other in ("http://comfy.example.com", "https://comfy.example.com:8443", "https://evil.example"):
        await assert_json_error(await client.post(f"{P}/queue/pause", headers={**JSON, "Origin": other}), 403)
    assert service.store.stats()["paused"] is False


# ---- Host: DNS rebinding ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:{port}",
        "127.0.0.1.evil.example:{port}",
        "localhost.evil.example",
        "192.168.1.20:{port}",
        "10.0.0.1",
        "0.0.0.0",
        "[::ffff:10.0.0.1]",
        "[fe80::1]:{port}",
        "a b",
        "x:99999",
        "@evil",
        "[::1",
    ],
)
async def test_a_loopback_host_answers_no_other_host_name(client, service, tmp_path, host):
    jid = await queued_job(client)
    service.artifacts.write(f"{jid}/out.png", b"\x89PNG secret")
    before = state_of(service)
    host = host.format(port=client.port)
    for method, path in [
        ("GET", f"{P}/jobs"),
        ("GET", f"{P}/jobs/{jid}"),
        ("GET", f"/tasks/{jid}"),
        ("GET", f"{P}/artifacts/{jid}/out.png"),
        ("GET", "/health"),
        ("GET", f"/api{P}/stats"),
        ("POST", f"{P}/queue/pause"),
        ("POST", f"{P}/jobs"),
    ]:
        resp = await client.request(method, path, headers={**JSON, "Host": host}, json={"prompt": graph()})
        err = await assert_json_error(resp, 400 if err_is_malformed(host) else 403)
        text = await resp.text()
        assert jid not in text and "secret" not in text and "pending" not in text
        if not err_is_malformed(host):
            assert err["type"] == "host_not_allowed" and "allowed_hosts" in err["message"]
    assert state_of(service) == before


def err_is_malformed(host: str) -> bool:
    return sp.split_host(host) is None


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.0.0.1:{port}",
        "localhost:{port}",
        "LOCALHOST",
        "localhost.",
        "[::1]:{port}",
        "[::1]",
        "127.8.9.10:1",
        "app.localhost:{port}",
        "[::ffff:127.0.0.1]:{port}",
    ],
)
async def test_loopback_host_names_are_answered(client, host):
    resp = await client.get(f"{P}/jobs", headers={"Host": host.format(port=client.port)})
    assert resp.status == 200, await resp.text()


async def test_allowed_hosts_and_a_host_bound_beyond_loopback(aiohttp_client, service):
    async def status(app_site, host):
        client = await aiohttp_client(build_app(service, site=app_site))
        return (await client.get(f"{P}/stats", headers={"Host": host})).status

    allowed = SitePolicy.build(["127.0.0.1"], allowed_hosts=["comfy.lan", "My-Box"])
    assert await status(allowed, "comfy.lan:8190") == 200
    assert await status(allowed, "my-box") == 200
    assert await status(allowed, "evil.example") == 403
    assert await status(allowed, "192.168.1.5") == 403  # loopback only: IP literals too
    anywhere = SitePolicy.build(["0.0.0.0"])  # beyond loopback, nothing allowed on top: any name
    assert await status(anywhere, "nas.lan:8190") == 200
    named = SitePolicy.build(["0.0.0.0"], allowed_hosts=["nas.lan"])
    assert await status(named, "nas.lan") == 200
    assert await status(named, "192.168.1.5:8190") == 200  # an IP literal cannot be rebound
    assert await status(named, "[fe80::1]") == 200
    assert await status(named, "127.0.0.1") == 200
    assert await status(named, "evil.example") == 403
    assert await status(SitePolicy.build(["127.0.0.1"], allowed_hosts=["*"]), "anything.example") == 200


async def test_a_request_without_host_passes(client):
    """HTTP/1.0 tools send none; no browser does."""
    import asyncio

    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(f"GET {P}/stats HTTP/1.0\r\n\r\n".encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    assert data.startswith(b"HTTP/1.0 200") or data.startswith(b"HTTP/1.1 200"), data[:200]


# ---- inside ComfyUI: per handler, on ComfyUI's table and its /api copies -----------------------------------


def comfy_like_app(service, **kwargs) -> web.Application:
    """Our routes on a table as ComfyUI's PromptServer.instance.routes: no middleware of ours, and ComfyUI's
    copy of every route under /api."""
    routes = web.RouteTableDef()
    add_routes(routes, service, **kwargs)
    app = web.Application()
    app.add_routes(routes)
    app.add_routes(
        [web.route(r.method, "/api" + r.path, r.handler, **r.kwargs) for r in routes if isinstance(r, web.RouteDef)]
    )
    return app


@pytest.mark.parametrize("prefix", [P, "/api" + P])
async def test_the_routes_inside_comfyui_check_each_request_themselves(aiohttp_client, service, prefix):
    client = await aiohttp_client(comfy_like_app(service))  # the default: an API on loopback
    jid = await queued_job(client)
    before = state_of(service)
    await assert_json_error(await client.post(f"{prefix}/queue/pause"), 415)
    await assert_json_error(
        await client.post(f"{prefix}/tasks/{jid}/cancel", headers={"Content-Type": "text/plain"}), 415
    )
    await assert_json_error(await client.get(f"{prefix}/tasks/{jid}", headers={"Host": "evil.example:8188"}), 403)
    await assert_json_error(await client.post(f"{prefix}/queue/pause", headers={**JSON, "Origin": "null"}), 403)
    await assert_json_error(await client.get(f"{prefix}/tasks", headers={"Sec-Fetch-Site": "cross-site"}), 403)
    resp = await client.options(
        f"{prefix}/tasks", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert not any(k.lower().startswith("access-control-allow") for k in resp.headers)
    assert state_of(service) == before
    assert (await client.post(f"{prefix}/queue/pause", headers=JSON)).status == 200


async def test_inside_comfyui_the_site_rules_come_before_the_token(aiohttp_client, service):
    client = await aiohttp_client(comfy_like_app(service, token="a-long-token"))
    err = await assert_json_error(await client.get(f"{P}/stats", headers={"Host": "evil.example"}), 403)
    assert err["type"] == "host_not_allowed"
    await assert_json_error(await client.get(f"{P}/stats"), 401)
    good = {"Authorization": "Bearer a-long-token"}
    await assert_json_error(await client.post(f"{P}/queue/pause", headers=good), 415)
    assert (await client.post(f"{P}/queue/pause", headers={**good, **JSON})).status == 200


async def test_the_plugin_builds_its_rules_from_comfyuis_listen_and_the_config(monkeypatch, tmp_path):
    def with_listen(listen):
        cli_args = types.ModuleType("comfy.cli_args")
        cli_args.args = types.SimpleNamespace(listen=listen, port=8188)
        comfy = types.ModuleType("comfy")
        comfy.cli_args = cli_args
        monkeypatch.setitem(sys.modules, "comfy", comfy)
        monkeypatch.setitem(sys.modules, "comfy.cli_args", cli_args)

    cfg = load_config(
        {"COMFYMQ_ALLOWED_HOSTS": "comfy.lan", "COMFYMQ_ALLOWED_ORIGINS": "https://x.example"}, user_dir=str(tmp_path)
    )
    with_listen("127.0.0.1")
    policy = site_policy(cfg)
    assert policy.loopback_only and policy.allowed_hosts == ("comfy.lan",)
    assert policy.allowed_origins == (("https", "x.example", 443),)
    with_listen("127.0.0.1,192.168.1.5")  # one address beyond loopback is enough to be reachable beyond it
    assert not site_policy(cfg).loopback_only
    with_listen("0.0.0.0,::")  # a bare --listen
    assert not site_policy(cfg).loopback_only
    with_listen("127.2.2.2,::1")
    assert site_policy(cfg).loopback_only


# ---- the rules as pure functions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("127.0.0.1:8190", ("127.0.0.1", 8190)),
        ("[::1]:80", ("::1", 80)),
        ("LocalHost.", ("localhost", None)),
        ("a_b.lan", ("a_b.lan", None)),
        ("x:0", None),
        ("x:65536", None),
        ("[zz]", None),
        ("a/b", None),
        ("", None),
        ("a:b", None),
        ("[::1]x", None),
        ("host name", None),
    ],
)
async def test_split_host(value, expected):
    assert sp.split_host(value) == expected


async def test_policy_entries_are_checked():
    with pytest.raises(ValueError, match="allowed_hosts"):
        SitePolicy.build(["127.0.0.1"], allowed_hosts=["http://x"])
    with pytest.raises(ValueError, match="allowed_origins"):
        SitePolicy.build(["127.0.0.1"], allowed_origins=["x.example"])
    with pytest.raises(ValueError, match="allowed_origins"):
        SitePolicy.build(["127.0.0.1"], allowed_origins=["https://x.example/path"])
    assert SitePolicy.build([""]).loopback_only is False  # every interface
    assert SitePolicy.build(["localhost"]).loopback_only is True


async def test_refusals_with_ever_new_header_values_do_not_grow_the_host(client):
    """The log of refusals keeps each kind once, at most a fixed number of them: values chosen by a client (a
    new Origin per request) must not grow the host's memory."""
    from comfy_nodes.api import guards

    for i in range(2000):
        r = await client.get(f"{P}/stats", headers={"Origin": f"http://evil-{i}.example" + "x" * 500})
        assert r.status == 403
    assert len(guards._reported) <= guards._MAX_REPORTED


async def test_judged_headers_are_cached_in_bounds_and_judged_alike(client):
    """guards.py keeps the rules' verdict for the header values clients repeat (a bounded cache), and judges
    values too long to keep without it: the verdicts are the same either way."""
    from comfy_nodes.api import guards

    for origin, status in (("http://evil.example", 403), (f"http://127.0.0.1:{client.port}", 200)):
        for pad in ("", "/" * 600):  # short: cached; long: judged each time (a path makes an origin foreign)
            want = 403 if pad else status
            for _ in range(2):
                r = await client.get(f"{P}/stats", headers={"Origin": origin + pad})
                assert r.status == want, (origin, len(pad), await r.text())
    for i in range(1000):  # ever new values: the cache stays in bounds
        r = await client.get(f"{P}/stats", headers={"Origin": f"http://evil-{i}.example"})
        assert r.status == 403
    assert guards._cached_refusal.cache_info().currsize <= 256
    r = await client.post(f"{P}/jobs", data=b"{}", headers={"Content-Type": "text/plain"})
    assert r.status == 415  # the method and the Content-Type are part of what is cached
