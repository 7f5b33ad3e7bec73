"""What this ComfyUI is to ComfyMQ, for its panel, in every role; and the routes of a worker-role ComfyUI.

  GET  /comfymq/status   {"role": "both"|"host"|"worker", "version", "hosts_queue": bool,
                          "worker": null | {id, name, broker, link: connecting|connected|refused|disconnected,
                                            refused, comfyui, comfyui_version, message, running: [job id], reconnects},
                          "queue": {"target": "local"|"remote"|null, "host_url": str|null},
                          "farm": null | {"joined": {host_url, broker, fingerprint, name, paired_at,
                                                     worker_public_key} | null, "can_join", "why_not"}}

`farm` is there when this ComfyUI can be in a farm it joined from its panel (pairing/membership.py); a ComfyUI of
the default role that joined one reports role "worker" (its own queue stays on disk, without a worker, until it
leaves) and no queue target: its queue routes are its own queue's.

A worker-role ComfyUI holds no queue. Its panel reads /comfymq/status and shows whose worker it is. Its
"Queue (MQ)" sends to the host when `host_url` is configured: POST /comfymq/jobs here is passed to
<host_url>/comfymq/jobs with the configured token, and the host's answer comes back as it is (or a 502 that
says the host could not be reached). The files the job's upload inputs name in this ComfyUI's folders
(LoadImage "photo.png") go to the host's input store first, and the job names them by content
(inputs/forward_uploads.py): a file missing here is a 400 naming node, input and file; a file the host refuses
is a 502 with the host's answer (a 413 when it is over the host's max_input_bytes); either way nothing is
queued. Without host_url the panel hides the button (queue.target is null). Every other /comfymq route answers
409 "worker_role" saying where the queue is.

The routes carry the same checks as the host's (guards.protect: site rules, then the token).
"""

from __future__ import annotations

import json
import logging
from typing import Callable

import aiohttp
from aiohttp import web

from .. import __version__
from ..inputs.forward_uploads import ForwardUploads, HostInputs, HostRefused, comfy_forward_uploads, read_at_most
from ..inputs.local_files import shown_name
from .errors import ApiError, read_json_object
from .guards import protect, upload_route
from .limits import RequestLimits
from .site_policy import SitePolicy

log = logging.getLogger("comfymq.api")

FORWARD_TIMEOUT = 60.0  # seconds for the host to answer a forwarded enqueue
MAX_ANSWER_BYTES = 16 << 20  # the most of the host's answer passed back


def status_body(role: str, worker: dict | None, host_url: str | None, farm: dict | None = None) -> dict:
    hosts_queue = role in ("both", "host")
    target = "local" if hosts_queue else ("remote" if host_url else None)
    return {
        "role": role,
        "version": __version__,
        "hosts_queue": hosts_queue,
        "worker": worker,
        "queue": {"target": target, "host_url": None if hosts_queue else host_url},
        "farm": farm,
    }


def _now(value):
    """A setting that may change while the process runs (a farm joined from the panel): a callable is asked."""
    return value() if callable(value) else value


def add_status_route(
    routes: web.RouteTableDef,
    *,
    role: str | Callable[[], str],
    worker_status: Callable[[], dict | None],
    host_url: str | None | Callable[[], str | None] = None,
    prefix: str = "/comfymq",
    token: str | None = None,
    site: SitePolicy | None = None,
    farm: Callable[[], dict | None] | None = None,
) -> None:
    """GET <prefix>/status (the module doc). worker_status: the bridge's status(), or None without a worker; role
    and host_url: values, or callables asked at each request; farm: membership.view, or None."""

    async def status(request: web.Request) -> web.Response:
        view = farm() if farm is not None else None
        return web.json_response(status_body(_now(role), worker_status(), _now(host_url), view))

    routes.get(prefix + "/status")(protect(status, site=site, token=token))


def host_refused(e: HostRefused) -> ApiError:
    """The answer to a forward whose file the host did not take: its 413 stays a 413, the rest is a 502 (the
    host's 401 is about this worker's token); each names the node, the input and the file, and the host's
    answer."""
    what = f"{e.file.where}: file '{shown_name(e.file.value)}'"
    if e.status == 0:
        return ApiError(502, "host_unreachable", f"{what}: could not reach the ComfyMQ host at {e.url}: {e.answer}")
    if e.status == 401:
        return ApiError(
            502,
            "host_token",
            f"{what}: the host at {e.url} refused this worker's token: set the host's token as this worker's token",
        )
    if e.status == 413:
        return ApiError(413, "too_large", f"{what}: the host refused it: {e.answer}; nothing was queued")
    return ApiError(
        502, "host_upload", f"{what}: the host at {e.url} refused it (HTTP {e.status}): {e.answer}; nothing was queued"
    )


def add_worker_role_routes(
    routes: web.RouteTableDef,
    *,
    worker_status: Callable[[], dict | None],
    broker: str | Callable[[], str],
    host_url: str | None | Callable[[], str | None],
    token: str | None,
    site: SitePolicy | None,
    limits: RequestLimits | None = None,
    prefix: str = "/comfymq",
    uploads: ForwardUploads | None | str = "comfyui",
    farm: Callable[[], dict | None] | None = None,
) -> None:
    """The routes of a worker-role ComfyUI (the module doc): status, the forwarded enqueue, and a 409 for the
    rest. Registered in that order, so the catch-all comes last. uploads: how the files a forwarded job names are
    found here ("comfyui": this ComfyUI's node classes and folders, nothing outside ComfyUI; None: values are
    forwarded as they are)."""
    limits = limits or RequestLimits()
    if uploads == "comfyui":
        uploads = comfy_forward_uploads()
    add_status_route(
        routes,
        role="worker",
        worker_status=worker_status,
        host_url=host_url,
        prefix=prefix,
        token=token,
        site=site,
        farm=farm,
    )

    def where() -> str:
        url = _now(host_url)
        if url:
            return f"the queue is on the host at {url}"
        return f"the queue is on the host whose broker is {_now(broker)} (set host_url to queue from here)"

    async def forward(request: web.Request) -> web.Response:
        host = _now(host_url)
        if not host:
            raise ApiError(409, "worker_role", f"this ComfyUI is a ComfyMQ worker: {where()}")
        body = await read_json_object(request, limits)  # checked here too: nothing malformed is passed on
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        url = host + "/comfymq/jobs"
        try:
            async with aiohttp.ClientSession() as session:
                if uploads is not None:
                    body = await uploads.prepare(body, HostInputs(session, host, token))
                timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT)
                async with session.post(url, data=json.dumps(body), headers=headers, timeout=timeout) as resp:
                    raw = await read_at_most(resp, MAX_ANSWER_BYTES)
                    status = resp.status
        except HostRefused as e:
            raise host_refused(e) from None
        except (aiohttp.ClientError, TimeoutError) as e:
            raise ApiError(502, "host_unreachable", f"could not reach the ComfyMQ host at {url}: {e}") from None
        if status == 401:  # the host's 401 is about this worker's token, not the browser's
            raise ApiError(
                502,
                "host_token",
                f"the host at {url} refused this worker's token: set the host's token as this worker's token",
            )
        if len(raw) > MAX_ANSWER_BYTES:
            raise ApiError(502, "host_answer", f"the host at {url} answered with more than {MAX_ANSWER_BYTES} bytes")
        try:
            answer = json.loads(raw)
        except ValueError:
            raise ApiError(
                502, "host_answer", f"the host at {url} answered HTTP {status} with something that is not JSON"
            ) from None
        return web.json_response(answer, status=status)

    routes.post(prefix + "/jobs")(protect(forward, site=site, token=token))

    async def elsewhere(request: web.Request) -> web.Response:
        raise ApiError(409, "worker_role", f"this ComfyUI is a ComfyMQ worker: {where()}")

    async def upload_elsewhere(request: web.Request) -> web.Response:
        # an upload takes any Content-Type (api/input_routes.py), so it hears where the queue is, not a 415; its
        # body (maybe gigabytes) is left unread: the connection is closed rather than drained
        raise ApiError(409, "worker_role", f"this ComfyUI is a ComfyMQ worker: {where()}", close=request.body_exists)

    routes.post(prefix + "/inputs")(protect(upload_route(upload_elsewhere), site=site, token=token))
    for method in ("GET", "POST", "DELETE"):
        routes.route(method, prefix + "/{tail:.*}")(protect(elsewhere, site=site, token=token))
