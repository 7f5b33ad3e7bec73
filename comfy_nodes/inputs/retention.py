"""Removing stored inputs no kept job names any more, after a grace period (the host's retention round).

    removed, freed = sweep_unreferenced(inputs, job_store)

The candidates are the inputs whose last use (InputStore: stored, or named by a job being queued) is older than
the grace period; only when there are any are the kept jobs' prompts read, a page at a time, until every
candidate is found named or the jobs end. Memory: the candidates' sha256s and one page of jobs.
"""

from __future__ import annotations

from .graph import referenced_sha256s
from .store import DEFAULT_GRACE, InputStore

PAGE = 100  # jobs (with their prompts) read per store call


def referenced_among(job_store, candidates: set[str], page: int = PAGE) -> set[str]:
    """Which of `candidates` a kept job's prompt names (job_store: the native Store)."""
    found: set[str] = set()
    cursor = None
    while len(found) < len(candidates):
        result = job_store.list(cursor=cursor, limit=page, newest_first=False, with_prompt=True)
        for job in result["jobs"]:
            found |= referenced_sha256s(job.get("prompt")) & candidates
        cursor = result["next_cursor"]
        if not cursor:
            break
    return found


def sweep_unreferenced(
    inputs: InputStore, job_store, grace: float = DEFAULT_GRACE, now: float | None = None
) -> tuple[int, int]:
    """Removes the inputs no kept job names whose last use is more than `grace` seconds ago; (files, bytes)."""
    candidates = inputs.unused_since(grace, now)
    inputs.remove_stale_temps(grace, now)
    if not candidates:
        return 0, 0
    return inputs.remove_unused(candidates - referenced_among(job_store, candidates), grace, now)
