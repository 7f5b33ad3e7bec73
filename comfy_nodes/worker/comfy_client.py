"""A client for one ComfyUI's public HTTP and websocket API (the shapes recorded from ComfyUI v0.8.0).

Only public routes: POST /prompt, GET /ws?clientId=, GET /history/{id}, GET/POST /queue, POST /interrupt,
GET /view, GET /object_info, GET /system_stats. Nothing of ComfyUI's internals.

Errors: ComfyUnreachable (connection refused, timeouts, 5xx: the ComfyUI is not there), PromptRejected
(HTTP 400 from /prompt: validation failed; carries ComfyUI's error and node_errors).
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
        parts = [self.error.get("message") or self.error.get("type") or "prompt rejected"]
        for node_id, ne in self.node_errors.items():
            for e in (ne or {}).get("errors", []):
                parts.append(
                    f"node {node_id} ({ne.get('class_type', '?')}): {e.get('message', '')}"
                    + (f" [{e['details']}]" if e.get("details") else "")
                )
        return "; ".join(parts)


class ComfyClient:
    def __init__(self, base_url: str, *, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.client_id = f"comfymq-{uuid.uuid4().hex}"
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(5.0, timeout))
        self._session: aiohttp.ClientSession | None = None

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

    async def submit(self, prompt: dict, *, prompt_id: str, extra_pnginfo: dict) -> str:
        """Queues the prompt for this client's websocket; returns the prompt_id. Raises PromptRejected on 400."""
        body = {
            "prompt": prompt,
            "client_id": self.client_id,
            "prompt_id": prompt_id,
            "extra_data": {"extra_pnginfo": extra_pnginfo},
        }
        status, answer = await self._request("POST", "/prompt", json=body)
        if status == 200 and isinstance(answer, dict):
            return answer.get("prompt_id", prompt_id)
        if status == 400 and isinstance(answer, dict):
            raise PromptRejected(answer.get("error", {}), answer.get("node_errors", {}))
        raise ComfyUnreachable(f"POST /prompt answered HTTP {status}: {str(answer)[:200]}")

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
        """'running', 'pending' or 'absent' in ComfyUI's queue."""
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

    def websocket(self):
        """A context manager for this client's event socket (ws_connect)."""
        url = self.base_url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"
        return self._s().ws_connect(url, heartbeat=20, max_msg_size=64 << 20)
