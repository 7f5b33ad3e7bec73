"""Putting a job's input files into the ComfyUI that runs it, through its public POST /upload/image.

place(client, ref, path) uploads the file into input/comfymq/<sha[:16]>/ (type "input", streamed from disk) and
returns the value ComfyUI's loaders take for it: "<subfolder>/<name>" as ComfyUI answered (its name may differ
from the one asked for: "x (1).png" when that folder held other bytes under the name).

Uploads are not overwriting. In a folder per content the same name with the same bytes keeps its name without a
write (as recorded from v0.8.0), so uploading an input again is harmless, and a file a running prompt reads is
never truncated under it (overwrite=true would rewrite it in place).

What each ComfyUI has is remembered per URL, sha256 and name (a worker drives one ComfyUI, but a bridge may be
pointed at another). A remembered file is used again only if ComfyUI still serves it with its size (HEAD /view
?type=input): a ComfyUI restarted with another input folder, or a file removed there, is uploaded again. A file this
process did not upload itself is uploaded once anyway (a no-op for ComfyUI when the bytes are the same), so the
worker never trusts bytes it did not put there. The memory is lost with the process.

Thread safety: one asyncio loop (the bridge's); concurrent places of one file upload it once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from ..comfy_client import ComfyClient
from .references import InputRef, name_problem, subfolder_for


class BadUploadAnswer(Exception):
    """ComfyUI answered an upload with something the worker cannot use as a loader's value."""


class ComfyUploads:
    def __init__(self):
        self._placed: dict[tuple[str, str, str], str] = {}  # (ComfyUI URL, sha256, name) -> loader value
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        self.uploads = 0  # uploads made (for the log and the tests)

    async def place(self, client: ComfyClient, ref: InputRef, path: Path) -> str:
        """The loader value of the input in this ComfyUI, uploading it first unless it is there (see above).
        Raises comfy_client.ComfyUnreachable, comfy_client.UploadRefused or BadUploadAnswer."""
        key = (client.base_url, ref.sha256, ref.name)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            value = self._placed.get(key)
            if value is not None:
                subfolder, _, name = value.rpartition("/")
                if await client.input_size(name, subfolder) == ref.size:
                    return value
                del self._placed[key]
            subfolder = subfolder_for(ref.sha256)
            answer = await client.upload_input(path, ref.name, subfolder)
            self.uploads += 1
            value = _loader_value(answer, subfolder, ref.name)
            self._placed[key] = value
            return value


def _loader_value(answer: dict, subfolder: str, asked: str) -> str:
    name, got_folder, kind = answer.get("name"), answer.get("subfolder"), answer.get("type")
    if kind != "input" or got_folder != subfolder or name_problem(name) is not None:
        raise BadUploadAnswer(
            f"ComfyUI answered the upload of {asked} into input/{subfolder} with {answer!r}: not a file there"
        )
    return f"{got_folder}/{name}"
