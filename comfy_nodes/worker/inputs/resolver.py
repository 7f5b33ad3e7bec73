"""Making a job's prompt runnable on this worker's ComfyUI: its input files fetched, uploaded, and named there.

    prepared = await resolver.prepare(prompt, client, fetch, progress=...)
    ... post prepared.prompt to ComfyUI, follow it to its end ...
    prepared.release()

prepare() finds the stored-form references (references.py), gets each input into the cache (cache.py; fetched
with `fetch`, the job's lease-bound WorkerClient.fetch_input, unless cached), puts each into ComfyUI
(comfy_uploads.py) and returns the prompt with every reference replaced by its loader value. Inputs are fetched
and uploaded concurrently, each content once. The cache holds the job's files until release().

Failures raise InputFailure, whose .error is the job's error ({type, message, node_id}) and .retryable says
whether the job may run again:
  input_invalid      a malformed reference, or an input whose size is not the one the job says: not retryable
  input_refused      the host refused the fetch (no such input, not this job's): not retryable
  input_unavailable  the fetch failed otherwise (the link was lost, it timed out, the checksum kept failing):
                     retryable (the broker runs the job again, elsewhere first)
  input_upload_failed  ComfyUI refused the upload (a 4xx: larger than its --max-upload-size) or answered it
                     oddly: retryable (another worker's ComfyUI may take it)
ComfyUI not answering raises comfy_client.ComfyUnreachable (the bridge leaves the broker, as for any request).
When several inputs fail, a failure that is not retryable is the one raised.

The fetch's errors (WorkerClient.fetch_input): a refusal is a KeyError or ValueError; anything else is a failure
to get the file (also a lost link whose reason says "refused by the broker": a restarted host that does not know
the worker yet).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..comfy_client import ComfyClient, ComfyUnreachable, UploadRefused
from .cache import Fetch, InputCache
from .comfy_uploads import BadUploadAnswer, ComfyUploads
from .references import InputRef, InputRefError, find_input_refs, rewrite_prompt

# progress(ref being fetched or None when all are in, bytes of this job's inputs in the cache, their total)
Progress = Callable[[InputRef | None, int, int], None]


class InputFailure(Exception):
    def __init__(self, kind: str, message: str, *, retryable: bool, node_id: str | None = None):
        self.kind, self.retryable, self.node_id = kind, retryable, node_id
        super().__init__(message)

    @property
    def error(self) -> dict:
        error = {"type": self.kind, "message": str(self)}
        if self.node_id is not None:
            error["node_id"] = self.node_id
        return error


@dataclass
class PreparedInputs:
    prompt: dict  # what to post to ComfyUI
    refs: list[InputRef] = field(default_factory=list)
    _held: list[str] = field(default_factory=list)
    _cache: InputCache | None = None

    def release(self) -> None:
        """Lets the cache remove this job's files again (idempotent)."""
        held, self._held = self._held, []
        for sha in held:
            self._cache.release(sha)


class InputResolver:
    def __init__(self, cache: InputCache, uploads: ComfyUploads | None = None):
        self.cache = cache
        self.uploads = uploads or ComfyUploads()

    async def prepare(
        self, prompt: dict, client: ComfyClient, fetch: Fetch, progress: Progress | None = None
    ) -> PreparedInputs:
        try:
            refs = find_input_refs(prompt)
        except InputRefError as e:
            raise InputFailure("input_invalid", str(e), retryable=False, node_id=e.node_id) from None
        if not refs:
            return PreparedInputs(prompt)
        by_sha: dict[str, list[InputRef]] = {}
        for ref in refs:
            by_sha.setdefault(ref.sha256, []).append(ref)
        total = sum(group[0].size for group in by_sha.values())
        ready = 0
        fetching = False
        held: list[str] = []
        values: dict[tuple[str, str], str] = {}

        async def one(sha: str, group: list[InputRef]) -> None:
            nonlocal ready, fetching
            first = group[0]

            def started() -> None:
                nonlocal fetching
                fetching = True
                if progress is not None:
                    progress(first, ready, total)

            try:
                path = await self.cache.acquire(sha, first.size, fetch, on_fetch=started)
            except Exception as e:  # noqa: BLE001 - classified: the job's error says why
                raise _fetch_failure(first, e) from None
            held.append(sha)
            size = Path(path).stat().st_size
            if size != first.size:
                raise InputFailure(
                    "input_invalid",
                    f"node {first.node_id} input '{first.input_name}': the input {first.name} has {size} bytes, "
                    f"the job says {first.size}",
                    retryable=False,
                    node_id=first.node_id,
                )
            ready += size
            if fetching and progress is not None:
                progress(first, ready, total)
            placed: dict[str, str] = {}
            for ref in group:
                if ref.name not in placed:
                    try:
                        placed[ref.name] = await self.uploads.place(client, ref, path)
                    except (UploadRefused, BadUploadAnswer) as e:
                        raise InputFailure(
                            "input_upload_failed",
                            f"node {ref.node_id} input '{ref.input_name}': {e}",
                            retryable=True,
                            node_id=ref.node_id,
                        ) from None
                values[(ref.node_id, ref.input_name)] = placed[ref.name]

        try:
            results = await asyncio.gather(*(one(sha, group) for sha, group in by_sha.items()), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise _first(errors)
        except BaseException:
            for sha in held:
                self.cache.release(sha)
            raise
        if fetching and progress is not None:
            progress(None, total, total)
        return PreparedInputs(rewrite_prompt(prompt, values), refs, held, self.cache)


def _first(errors: list[BaseException]) -> BaseException:
    """The error to raise of several: a cancel or ComfyUI's absence first, then one that is not retryable."""
    for e in errors:
        if isinstance(e, (asyncio.CancelledError, ComfyUnreachable)) or not isinstance(e, Exception):
            return e
    for e in errors:
        if isinstance(e, InputFailure) and not e.retryable:
            return e
    return errors[0]


def _fetch_failure(ref: InputRef, e: Exception) -> InputFailure:
    reason = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e) or type(e).__name__
    where = f"node {ref.node_id} input '{ref.input_name}'"
    if isinstance(e, (KeyError, ValueError)):  # not the message: a lost link's may say "refused by the broker"
        return InputFailure(
            "input_refused",
            f"{where}: the host refused the input {ref.name} ({ref.sha256[:12]}): {reason}",
            retryable=False,
            node_id=ref.node_id,
        )
    return InputFailure(
        "input_unavailable",
        f"{where}: could not fetch the input {ref.name} ({ref.sha256[:12]}) from the host: {reason}",
        retryable=True,
        node_id=ref.node_id,
    )
