"""In a worker-role ComfyUI: the files a job names here, sent to the host before the job is forwarded to it.

A worker-role ComfyUI passes POST /comfymq/jobs on to the host at host_url (api/status_routes.py). A graph from
its canvas names files of THIS machine (LoadImage "photo.png", the mask editor's
"clipspace/clipspace-mask-1.png [input]"), which the host would look for in its own folders: a 400, or the wrong
file when it has one of that name. So before the request goes on, every plain file name of an upload input in it
(the prompt's node inputs and the sweep's values, found and located by the host's own rules: local_files.py) is:

  hashed    SHA-256, read in blocks (local_files.FileHashes: a file unchanged since it was last hashed, by
            inode, size and mtime, is not read again)
  asked     HEAD <host_url>/comfymq/inputs/{sha256}: a file the host holds is not sent again
  sent      POST <host_url>/comfymq/inputs?name=<name>, the raw file streamed from disk (never held whole)
  named     the value becomes {"comfymq_input": sha256, "name": name} (graph.py), which the host commits in its
            stored form

Values already in reference form, and the values of other inputs, pass as they are. A file missing, unreadable or
leading out of its folder is a BadReference naming the node, the input and the file, as the host words it (a
400; nothing is sent on). A host that refuses or cannot take a file raises HostRefused (api/status_routes.py
answers it), and the job is not forwarded.

    uploads = ForwardUploads(upload_inputs, folders)     # inside ComfyUI: comfy_forward_uploads()
    body = await uploads.prepare(body, HostInputs(session, host_url, token))
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Mapping

import aiohttp

from ..api import expand as ex
from . import graph as refs
from .graph import Place
from .local_files import FileHashes, comfy_folders, comfy_upload_inputs, locate, travel_name, unreadable
from .store import COPY_BLOCK

HEAD_BYTES = 16  # the first bytes a name without an extension is given one from (names.sniff_extension)
ASK_TIMEOUT = 60.0  # seconds for the host to answer whether it holds a file
SEND_IDLE_TIMEOUT = 60.0  # seconds the host may go silent while a file is sent (a large file takes its time)
MAX_ERROR_BYTES = 64 << 10  # the most of a host's refusal read


@dataclass
class LocalFile:
    """A file of this ComfyUI's folders that a request names (first at `where`)."""

    path: Path
    sha256: str
    size: int
    name: str  # what it travels with (local_files.travel_name)
    value: str  # the value that named it first
    where: Place


class HostRefused(Exception):
    """The host did not take a file (or could not be reached: status 0). `answer`: its error message, or what
    went wrong on the way; `error_type`: its error type, when it answered one."""

    def __init__(self, file: LocalFile, url: str, status: int, answer: str, error_type: str | None = None):
        super().__init__(answer)
        self.file = file
        self.url = url
        self.status = status
        self.answer = answer
        self.error_type = error_type


class HostInputs:
    """The host's input store, over its HTTP API (api/input_routes.py), with this worker's token."""

    def __init__(self, session: aiohttp.ClientSession, host_url: str, token: str | None):
        self.session = session
        self.url = host_url.rstrip("/") + "/comfymq/inputs"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def holds(self, file: LocalFile) -> bool:
        """Whether the host holds the file's content (HEAD /comfymq/inputs/{sha256}: 200 yes, 404 no)."""
        url = f"{self.url}/{file.sha256}"
        try:
            async with self.session.head(
                url, headers=self.headers, timeout=aiohttp.ClientTimeout(total=ASK_TIMEOUT)
            ) as resp:
                status = resp.status
        except (aiohttp.ClientError, OSError) as e:  # OSError: TimeoutError too
            raise HostRefused(file, url, 0, str(e) or type(e).__name__) from None
        if status in (200, 404):
            return status == 200
        raise HostRefused(file, url, status, f"HTTP {status} to HEAD")

    async def send(self, file: LocalFile) -> dict:
        """Streams the file to POST /comfymq/inputs?name=; the host's answer {"sha256", "size", "name",
        "existed"}. The body is read from disk as it goes (aiohttp reads a file object in blocks, off the loop)."""
        headers = {**self.headers, "Content-Type": "application/octet-stream"}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=ASK_TIMEOUT, sock_read=SEND_IDLE_TIMEOUT)
        try:
            f = open(file.path, "rb")
        except OSError as e:  # it went between hashing and sending
            raise unreadable(file.value, file.where, e) from None
        with f:
            try:
                async with self.session.post(
                    self.url, params={"name": file.name}, data=f, headers=headers, timeout=timeout
                ) as resp:
                    status = resp.status
                    raw = await read_at_most(resp, MAX_ERROR_BYTES)
            except (aiohttp.ClientError, OSError) as e:  # OSError: TimeoutError too
                raise HostRefused(file, self.url, 0, str(e) or type(e).__name__) from None
        answer = _json(raw)
        if status == 200 and isinstance(answer, dict) and isinstance(answer.get("sha256"), str):
            return answer
        error = answer.get("error") if isinstance(answer, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            raise HostRefused(file, self.url, status, error["message"], str(error.get("type") or "") or None)
        shown = raw[:200].decode("utf-8", "replace")
        raise HostRefused(file, self.url, status, f"HTTP {status}: {shown}" if shown else f"HTTP {status}")


async def read_at_most(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The answer's body, or its first limit + 1 bytes when it is longer (StreamReader.read(n) alone stops at
    whatever has arrived)."""
    buf = bytearray()
    while len(buf) <= limit:
        chunk = await resp.content.read(limit + 1 - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def hash_file(path: Path, hashes: FileHashes) -> tuple[str, int, bytes]:
    """(sha256, size, first bytes) of the file, read in blocks; its sha256 from `hashes` when the file is unchanged
    since it was last hashed. OSError when it cannot be read."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        head = f.read(HEAD_BYTES)
        known = hashes.get(st)
        if known is not None:
            return known, st.st_size, head
        digest = hashlib.sha256(head)
        size = len(head)
        while block := f.read(COPY_BLOCK):
            digest.update(block)
            size += len(block)
    sha = digest.hexdigest()
    if size == st.st_size:  # else it changed while being read: not remembered under the old stat
        hashes.remember(st, sha)
    return sha, size, head


def rewrite_request(body: dict, resolve: refs.ValueResolver) -> dict:
    """A POST /comfymq/jobs body with resolve(value, place) in place of each value of its prompt's node inputs and
    of its sweep (the values a job can be given); `body` itself when nothing changes. The rest (count, workflow,
    ...) stays: every job of an expansion is a copy of this prompt with sweep values set. A prompt or sweep that
    does not fit is left for the host to refuse."""
    out = body
    prompt = body.get("prompt")
    new_prompt = refs.rewrite_prompt(prompt, resolve)
    if new_prompt is not prompt:
        out = {**body, "prompt": new_prompt}
    sweep = body.get("sweep")
    if not isinstance(sweep, dict) or not sweep:
        return out
    try:
        graph = ex.prompt_object(prompt)
        axes = ex.parse_sweep(graph, sweep)
    except ex.ExpansionError:
        return out
    new_sweep = None
    for axis in axes:
        class_type = graph[axis.node_id].get("class_type")
        where = Place(axis.node_id, class_type if isinstance(class_type, str) else "?", axis.input)
        values = [resolve(v, where) for v in axis.values]
        if any(a is not b for a, b in zip(values, axis.values, strict=True)):
            new_sweep = new_sweep if new_sweep is not None else dict(sweep)
            new_sweep[axis.key] = values
    return out if new_sweep is None else {**out, "sweep": new_sweep}


class ForwardUploads:
    """The files of upload inputs (upload_inputs(class_type) names them) in ComfyUI's folders (folders():
    {"input": dir, "output": dir, "temp": dir}, asked at each request), sent to the host (the module doc)."""

    def __init__(
        self,
        upload_inputs: Callable[[str], Collection[str]],
        folders: Callable[[], Mapping[str, str]] | Mapping[str, str],
    ):
        self.upload_inputs = upload_inputs
        self._folders = folders if callable(folders) else (lambda: folders)
        self.hashes = FileHashes()

    def _names_a_file(self, value: Any, where: Place) -> bool:
        return isinstance(value, str) and where.input in self.upload_inputs(where.class_type)

    def find(self, body: dict) -> dict[str, LocalFile]:
        """The files the request names, by the value naming them: located and hashed (blocking: run it off the
        loop). BadReference for a file that is not there or cannot be read."""
        folders = self._folders()
        found: dict[str, LocalFile] = {}

        def visit(value: Any, where: Place) -> Any:
            if self._names_a_file(value, where) and value not in found:
                path = locate(value, folders, where)
                try:
                    sha, size, head = hash_file(path, self.hashes)
                except OSError as e:
                    raise unreadable(value, where, e) from None
                found[value] = LocalFile(path, sha, size, travel_name(value, sha, head), value, where)
            return value

        rewrite_request(body, visit)
        return found

    async def send(self, files: Collection[LocalFile], host: HostInputs) -> dict[str, str]:
        """Sends the host each file it does not hold (one request per content); the sha256 the host holds each
        under, by the value naming it."""
        held: dict[str, str] = {}  # local sha256 -> the host's
        for file in files:
            if file.sha256 in held:
                continue
            if await host.holds(file):
                held[file.sha256] = file.sha256
            else:
                held[file.sha256] = (await host.send(file))["sha256"]
        return {file.value: held[file.sha256] for file in files}

    async def prepare(self, body: dict, host: HostInputs) -> dict:
        """The body to forward: each file name of an upload input replaced by a reference to the file on the host
        (the module doc). BadReference, HostRefused: nothing is to be forwarded."""
        found = await asyncio.get_running_loop().run_in_executor(None, self.find, body)
        if not found:
            return body
        on_host = await self.send(list(found.values()), host)

        def reference(value: Any, where: Place) -> Any:
            if self._names_a_file(value, where) and value in on_host:
                return {refs.KEY: on_host[value], "name": found[value].name}
            return value

        return rewrite_request(body, reference)


def comfy_forward_uploads() -> ForwardUploads | None:
    """The ForwardUploads of the ComfyUI this runs in (its node classes and folders); None outside ComfyUI."""
    try:
        import folder_paths  # noqa: F401 - ComfyUI's modules: present only inside ComfyUI
        import nodes  # noqa: F401
    except ImportError:
        return None
    return ForwardUploads(comfy_upload_inputs(), comfy_folders)
