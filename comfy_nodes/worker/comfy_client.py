"""A client for one ComfyUI's public HTTP and websocket API, from v0.3.64 to the current one.

Only public routes: POST /prompt, GET /ws?clientId= (with the feature_flags handshake), GET /history/{id},
GET/POST /queue, POST /interrupt (with a prompt_id: only that prompt), GET /view, POST /upload/image (a job's input
files, type "input"), GET /object_info,
GET /system_stats, GET /features, and where the ComfyUI has them the jobs API: GET /api/jobs/{id} (v0.8.0+),
POST /api/jobs/{id}/cancel (newer). Nothing of ComfyUI's internals.

What a ComfyUI offers is found out by asking (probe(), and on the way: a jobs route that answers 404/405 without
the jobs API's JSON is taken as absent), never from its version number, so a ComfyUI upgraded or downgraded under a
running worker is followed.

Errors: ComfyUnreachable (connection refused, timeouts, 5xx: the ComfyUI is not there), PromptRejected
(HTTP 400 from /prompt: validation failed; carries ComfyUI's error and node_errors), PromptExists (HTTP 409 from
/prompt: a newer ComfyUI already has a prompt with that id; versions before refuse nothing), UploadRefused (a 4xx
from /upload/image: too large for its --max-upload-size, or a name it will not take).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from urllib.parse import urlencode

import aiohttp


class ComfyUnreachable(Exception):
    """The ComfyUI did not answer (or answered with a server error)."""


class PromptRejected(Exception):
    """ComfyUI refused the prompt (HTTP 400): its error and per-node errors, as ComfyUI reported them."""

    def __init__(self, error: dict, node_errors: dict):
        self.error = error if isinstance(error, dict) else {"message": str(error)}
        self.node_errors = node_errors if isinstance(node_errors, dict) else {}
        super().__init__(self.summary())

    def summary(self) -> str:
        """One line that says each thing once: ComfyUI's message, then each node with its reasons
        ("node 1 (EmptyImage): Value 0 smaller than min of 1 [width], ... [height]"). ComfyUI repeats itself: an
        output node's own reasons are in the error's details and in node_errors, a reason may be listed for each
        output that depends on the node; and the error's details are kept only when no node error says them."""
        parts = [self.error.get("message") or self.error.get("type") or "prompt rejected"]
        said: set[str] = set()
        for node_id, ne in self.node_errors.items():
            ne = ne if isinstance(ne, dict) else {}
            reasons: list[str] = []
            for e in ne.get("errors") or []:
                if not isinstance(e, dict):
                    continue
                said.add(f"{e.get('message', '')}: {e.get('details', '')}")
                reason = str(e.get("message") or e.get("type") or "invalid") + (
                    f" [{e['details']}]" if e.get("details") else ""
                )
                if reason not in reasons:
                    reasons.append(reason)
            if reasons:
                parts.append(f"node {node_id} ({ne.get('class_type', '?')}): " + ", ".join(reasons))
        details = self.error.get("details")
        if isinstance(details, str) and details.strip():
            rest = [line for line in details.splitlines() if line.strip() and line.strip() not in said]
            if rest:
                parts[0] += f" ({'; '.join(rest)})"
        return "; ".join(parts)

    @property
    def node_id(self) -> str | None:
        """The one node the error names when it names no node errors (a missing node type in newer versions)."""
        info = self.error.get("extra_info")
        if not self.node_errors and isinstance(info, dict) and info.get("node_id") is not None:
            return str(info["node_id"])
        return None


class PromptExists(Exception):
    """ComfyUI already has a prompt with this id (HTTP 409 duplicate_prompt_id, newer versions)."""

    def __init__(self, prompt_id: str, error: dict | None = None):
        self.prompt_id = prompt_id
        self.error = error if isinstance(error, dict) else {}
        super().__init__(f"ComfyUI already has prompt {prompt_id}")


class UploadRefused(Exception):
    """ComfyUI answered POST /upload/image with a client error (413: larger than its --max-upload-size)."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


# A prompt as ComfyUI knows it (prompt_state): queued or running there, ended (with its history entry), or unknown.
PENDING, RUNNING, SUCCESS, ERROR, INTERRUPTED, UNKNOWN = (
    "pending",
    "running",
    "success",
    "error",
    "interrupted",
    "unknown",
)


def history_outcome(entry: dict) -> str:
    """SUCCESS, ERROR or INTERRUPTED from a history entry (its status messages first, then its status_str)."""
    status = (entry.get("status") if isinstance(entry, dict) else None) or {}
    for message in reversed(status.get("messages") or []):
        kind = message[0] if isinstance(message, (list, tuple)) and message else None
        if kind == "execution_success":
            return SUCCESS
        if kind == "execution_error":
            return ERROR
        if kind == "execution_interrupted":
            return INTERRUPTED
    return SUCCESS if status.get("status_str") == "success" or status.get("completed") else ERROR


FEATURE_FLAGS = {"supports_preview_metadata": True}  # what the bridge says of itself in the handshake


class ComfyClient:
    """client_id: the websocket session prompts are posted for; a stable one (the bridge derives it from its worker)
    lets a restarted worker receive the events of a prompt its earlier process posted."""

    def __init__(self, base_url: str, *, timeout: float = 30.0, client_id: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id or f"comfymq-{uuid.uuid4().hex}"
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(5.0, timeout))
        self._session: aiohttp.ClientSession | None = None
        # What this ComfyUI offers: None until known. jobs_api: GET /api/jobs/{id} (v0.8.0+); jobs_cancel:
        # POST /api/jobs/{id}/cancel (newer); server_features: GET /features or the feature_flags answer.
        self.jobs_api: bool | None = None
        self.jobs_cancel: bool | None = None
        self.server_features: dict | None = None

    async def __aenter__(self) -> "ComfyClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _s(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str, **kw) -> tuple[int, object]:
        try:
            async with self._s().request(method, self.base_url + path, **kw) as r:
                text = await r.text()
                if r.status >= 500:
                    raise ComfyUnreachable(f"{method} {path}: HTTP {r.status}: {text[:200]}")
                try:
                    body = json.loads(text) if text else None
                except json.JSONDecodeError:
                    body = text
                return r.status, body
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise ComfyUnreachable(f"{method} {self.base_url}{path}: {e or type(e).__name__}") from None

    async def system_stats(self) -> dict:
        status, body = await self._request("GET", "/system_stats")
        if status != 200 or not isinstance(body, dict):
            raise ComfyUnreachable(f"GET /system_stats answered HTTP {status}")
        return body

    async def object_info(self) -> dict:
        status, body = await self._request("GET", "/object_info")
        if status != 200 or not isinstance(body, dict):
            raise ComfyUnreachable(f"GET /object_info answered HTTP {status}")
        return body

    async def probe(self) -> dict:
        """Finds out what this ComfyUI offers (the jobs API, its cancel endpoints, its features) without changing
        anything there; returns {"jobs": bool, "jobs_cancel": bool | None, "features": dict | None}."""
        status, body = await self._request("GET", "/api/jobs?limit=1")
        self.jobs_api = status == 200 and isinstance(body, dict) and isinstance(body.get("jobs"), list)
        self.jobs_cancel = False if not self.jobs_api else None
        if self.jobs_api:
            # The "cancelled" status came with the cancel endpoints (v0.8.0 has neither); a cancel still falls back
            # to /interrupt if they turn out to be absent.
            status, body = await self._request("GET", "/api/jobs?status=cancelled&limit=1")
            self.jobs_cancel = status == 200 and isinstance(body, dict)
        status, body = await self._request("GET", "/features")
        if status == 200 and isinstance(body, dict):
            self.server_features = body
        return {"jobs": self.jobs_api, "jobs_cancel": self.jobs_cancel, "features": self.server_features}

    async def submit(self, prompt: dict, *, prompt_id: str, extra_pnginfo: dict) -> str:
        """Queues the prompt for this client's websocket; returns the prompt_id. Raises PromptRejected on 400,
        PromptExists on 409 (the id is taken: a newer ComfyUI already has this prompt)."""
        body = {
            "prompt": prompt,
            "client_id": self.client_id,
            "prompt_id": prompt_id,
            "extra_data": {"extra_pnginfo": extra_pnginfo},
        }
        status, answer = await self._request("POST", "/prompt", json=body)
        if status == 200 and isinstance(answer, dict):
            return answer.get("prompt_id", prompt_id)
        if status == 409:
            raise PromptExists(prompt_id, answer.get("error") if isinstance(answer, dict) else None)
        if status == 400 and isinstance(answer, dict):
            raise PromptRejected(answer.get("error", {}), answer.get("node_errors", {}))
        raise ComfyUnreachable(f"POST /prompt answered HTTP {status}: {str(answer)[:200]}")

    async def job(self, prompt_id: str) -> dict | None:
        """GET /api/jobs/{id}: the job, or None when ComfyUI does not know it. A ComfyUI without the jobs API
        (a 404/405 that is not the jobs API's "Job not found") is remembered as such and answers None."""
        if self.jobs_api is False:
            return None
        status, body = await self._request("GET", f"/api/jobs/{prompt_id}")
        if status == 200 and isinstance(body, dict) and body.get("id") == prompt_id:
            self.jobs_api = True
            return body
        if status == 404 and isinstance(body, dict) and "error" in body:
            self.jobs_api = True
            return None
        if status in (404, 405):
            self.jobs_api = self.jobs_cancel = False
        return None

    async def prompt_state(self, prompt_id: str) -> tuple[str, dict | None, dict | None]:
        """What became of a prompt: (state, extra_data, history entry). state is PENDING or RUNNING (queued or
        running there), SUCCESS, ERROR or INTERRUPTED (ended; the history entry says how), or UNKNOWN (ComfyUI
        never had it, was restarted, or forgot it). extra_data is what the prompt was posted with, when known
        (it names the job it was run for). Asks the jobs API where there is one, else /history and /queue."""
        if self.jobs_api is not False:
            job = await self.job(prompt_id)
            if job is not None:
                workflow = job.get("workflow") if isinstance(job.get("workflow"), dict) else {}
                extra = workflow.get("extra_data") if isinstance(workflow.get("extra_data"), dict) else None
                if job.get("status") in ("pending", "in_progress"):
                    state = PENDING if job.get("status") == "pending" else RUNNING
                    return state, extra if extra is not None else await self._queued_extra(prompt_id), None
            elif self.jobs_api:  # the jobs API sees the queue and the history: it does not know the prompt
                return UNKNOWN, None, None
        entry = await self.history(prompt_id)
        if entry is not None:
            prompt = entry.get("prompt")
            extra = prompt[3] if isinstance(prompt, list) and len(prompt) > 3 and isinstance(prompt[3], dict) else None
            return history_outcome(entry), extra, entry
        q = await self.queue()
        for state, key in ((RUNNING, "queue_running"), (PENDING, "queue_pending")):
            for e in q.get(key, []):
                if isinstance(e, list) and len(e) > 3 and e[1] == prompt_id:
                    return state, e[3] if isinstance(e[3], dict) else None, None
        return UNKNOWN, None, None

    async def _queued_extra(self, prompt_id: str) -> dict | None:
        q = await self.queue()
        for e in q.get("queue_running", []) + q.get("queue_pending", []):
            if isinstance(e, list) and len(e) > 3 and e[1] == prompt_id and isinstance(e[3], dict):
                return e[3]
        return None

    async def cancel(self, prompt_id: str) -> str:
        """Stops the prompt on ComfyUI: POST /api/jobs/{id}/cancel where ComfyUI has it, else /queue delete (if it
        waits there) and POST /interrupt with its prompt_id (only if it runs). Returns "dequeued" (it had not
        started and never will), "interrupted" (an interrupt was sent; the prompt ends interrupted unless it ended
        first), or "none" (it is not queued or running there)."""
        where = await self.where(prompt_id)
        if where == "absent":
            return "none"
        if self.jobs_cancel is not False:
            status, body = await self._request("POST", f"/api/jobs/{prompt_id}/cancel", json={})
            if status == 200 and isinstance(body, dict) and "cancelled" in body:
                self.jobs_cancel = True
                if where == "pending" and await self._gone(prompt_id):
                    return "dequeued"
                return "interrupted" if body.get("cancelled") or await self.where(prompt_id) == "running" else "none"
            if status in (404, 405):
                self.jobs_cancel = False
        if where == "pending":
            await self.delete_queued(prompt_id)
            if await self._gone(prompt_id):
                return "dequeued"
        await self.interrupt(prompt_id)
        return "interrupted"

    async def _gone(self, prompt_id: str) -> bool:
        return await self.where(prompt_id) == "absent" and await self.history(prompt_id) is None

    async def history(self, prompt_id: str) -> dict | None:
        """The prompt's history entry, or None while it has none (queued or running)."""
        status, body = await self._request("GET", f"/history/{prompt_id}")
        if status != 200 or not isinstance(body, dict):
            return None
        return body.get(prompt_id)

    async def queue(self) -> dict:
        status, body = await self._request("GET", "/queue")
        return body if status == 200 and isinstance(body, dict) else {"queue_running": [], "queue_pending": []}

    async def where(self, prompt_id: str) -> str:
        """'running', 'pending' or 'absent' in ComfyUI's queue (one job from the jobs API where there is one, else
        the whole /queue)."""
        if self.jobs_api is not False:
            job = await self.job(prompt_id)
            if self.jobs_api:
                status = job.get("status") if job is not None else None
                return {"pending": "pending", "in_progress": "running"}.get(status, "absent")
        q = await self.queue()
        if any(len(e) > 1 and e[1] == prompt_id for e in q.get("queue_running", [])):
            return "running"
        if any(len(e) > 1 and e[1] == prompt_id for e in q.get("queue_pending", [])):
            return "pending"
        return "absent"

    async def interrupt(self, prompt_id: str) -> None:
        await self._request("POST", "/interrupt", json={"prompt_id": prompt_id})

    async def delete_queued(self, prompt_id: str) -> None:
        await self._request("POST", "/queue", json={"delete": [prompt_id]})

    async def download(self, item: dict, dest: Path, chunk: int = 1 << 20) -> int:
        """Streams one output file ({filename, subfolder, type}) via /view into dest; returns its size."""
        query = urlencode(
            {
                "filename": item.get("filename", ""),
                "subfolder": item.get("subfolder", ""),
                "type": item.get("type", "output"),
            }
        )
        timeout = aiohttp.ClientTimeout(total=None, sock_read=120, connect=10)
        try:
            async with self._s().get(f"{self.base_url}/view?{query}", timeout=timeout) as r:
                if r.status != 200:
                    raise FileNotFoundError(f"GET /view of {item.get('filename')} answered HTTP {r.status}")
                size = 0
                with open(dest, "wb") as f:
                    async for block in r.content.iter_chunked(chunk):
                        f.write(block)
                        size += len(block)
                return size
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise ComfyUnreachable(f"downloading {item.get('filename')}: {e}") from None

    async def upload_input(self, path: Path, name: str, subfolder: str) -> dict:
        """POST /upload/image of the file at path as `name` into input/<subfolder> (type "input", no overwrite: the
        same name with the same bytes keeps the name, other bytes get "name (1).ext"; recorded from v0.8.0). The
        file is streamed from disk. Returns ComfyUI's answer {"name", "subfolder", "type"}; UploadRefused on a 4xx,
        ComfyUnreachable when ComfyUI does not answer (or answers 5xx)."""
        timeout = aiohttp.ClientTimeout(total=None, sock_read=300, connect=10)
        try:
            with open(path, "rb") as f:
                form = aiohttp.FormData()
                form.add_field("type", "input")
                form.add_field("subfolder", subfolder)
                form.add_field("image", f, filename=name, content_type="application/octet-stream")
                async with self._s().post(f"{self.base_url}/upload/image", data=form, timeout=timeout) as r:
                    text = await r.text()
                    status = r.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise ComfyUnreachable(f"POST /upload/image of {name}: {e or type(e).__name__}") from None
        if status >= 500:
            raise ComfyUnreachable(f"POST /upload/image of {name}: HTTP {status}: {text[:200]}")
        if status != 200:
            why = " (larger than ComfyUI's --max-upload-size)" if status == 413 else ""
            raise UploadRefused(
                status, f"ComfyUI refused the upload of {name}: HTTP {status}{why} {text[:200]}".strip()
            )
        try:
            answer = json.loads(text)
        except json.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            raise UploadRefused(status, f"ComfyUI answered the upload of {name} with {text[:200]!r}")
        return answer

    async def input_size(self, name: str, subfolder: str) -> int | None:
        """The size of input/<subfolder>/<name> on this ComfyUI (HEAD /view?type=input, GET where HEAD is not
        served; the body is not read), or None when it does not have the file."""
        query = urlencode({"filename": name, "subfolder": subfolder, "type": "input"})
        for method in ("HEAD", "GET"):
            try:
                async with self._s().request(method, f"{self.base_url}/view?{query}") as r:
                    status, length = r.status, r.content_length
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                raise ComfyUnreachable(f"{method} /view of input {name}: {e or type(e).__name__}") from None
            if status == 405 and method == "HEAD":
                continue
            if status >= 500:
                raise ComfyUnreachable(f"{method} /view of input {name}: HTTP {status}")
            return length if status == 200 else None
        return None

    def websocket(self):
        """A context manager for this client's event socket (ws_connect). Send FEATURE_FLAGS first: ComfyUI
        (v0.3.4x+) answers with its own flags ("feature_flags" message), older ones ignore it."""
        url = self.base_url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"
        return self._s().ws_connect(url, heartbeat=20, max_msg_size=64 << 20)
