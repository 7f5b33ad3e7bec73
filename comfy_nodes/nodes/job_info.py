"""Job Info node: which ComfyMQ job (and attempt, and batch) the running prompt belongs to.

The ComfyMQ worker bridge submits every job's prompt with

    extra_data.extra_pnginfo.comfymq = {"job_id": str, "attempt": int, "batch_id": str | None,
                                        "batch_index": int, "prompt_id": str}

and ComfyUI hands extra_pnginfo to nodes that ask for the hidden input EXTRA_PNGINFO. Outside a job (a prompt
queued in ComfyUI directly) there is no such entry and the outputs are "" and 0. Missing keys, None and values
of the wrong type read as empty too: the node never fails on what a client put in extra_pnginfo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

EXTRA_PNGINFO_KEY = "comfymq"
CATEGORY = "ComfyMQ"


@dataclass(frozen=True)
class JobContext:
    job_id: str = ""
    attempt: int = 0
    batch_id: str = ""
    batch_index: int = 0
    prompt_id: str = ""

    @property
    def in_job(self) -> bool:
        return bool(self.job_id)


def _text(value: Any) -> str:
    if value is None or isinstance(value, (dict, list, tuple, set, bool)):
        return ""
    return str(value)


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value == value and abs(value) != float("inf") else 0
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return 0
    return 0


def current_job(extra_pnginfo: Any) -> JobContext:
    """The job the bridge recorded in extra_pnginfo, or an empty JobContext outside a job."""
    if not isinstance(extra_pnginfo, Mapping):
        return JobContext()
    entry = extra_pnginfo.get(EXTRA_PNGINFO_KEY)
    if not isinstance(entry, Mapping):
        return JobContext()
    return JobContext(
        job_id=_text(entry.get("job_id")),
        attempt=_integer(entry.get("attempt")),
        batch_id=_text(entry.get("batch_id")),
        batch_index=_integer(entry.get("batch_index")),
        prompt_id=_text(entry.get("prompt_id")),
    )


class ComfyMQJobInfo:
    """Outputs the current job's id, attempt, batch id and index in the batch."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {},
            "hidden": {"extra_pnginfo": "EXTRA_PNGINFO"},
        }

    RETURN_TYPES = ("STRING", "INT", "STRING", "INT")
    RETURN_NAMES = ("job_id", "attempt", "batch_id", "batch_index")
    OUTPUT_TOOLTIPS = (
        "The ComfyMQ job id (16 hex digits), or empty when the prompt was not queued through ComfyMQ.",
        "Which attempt at the job this run is (1 for the first run), or 0 outside a job.",
        "The id of the batch the job was enqueued with, or empty.",
        "The job's position in its batch (0-based), or 0.",
    )
    FUNCTION = "job_info"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "The ComfyMQ job this prompt is running as: job id, attempt number, batch id and index in the "
        "batch (empty and 0 when the prompt was queued in ComfyUI directly). Runs again on every prompt, "
        "so a value never carries over from another job."
    )

    @classmethod
    def IS_CHANGED(cls, *args, **kwargs):
        # ComfyUI's cache keys do not include hidden inputs; NaN never equals itself, so this node always re-runs
        # and a cached id from an earlier job can never reach this one.
        return float("nan")

    def job_info(self, extra_pnginfo=None, **_ignored):
        job = current_job(extra_pnginfo)
        return (job.job_id, job.attempt, job.batch_id, job.batch_index)


NODE_CLASS_MAPPINGS = {"ComfyMQJobInfo": ComfyMQJobInfo}
NODE_DISPLAY_NAME_MAPPINGS = {"ComfyMQJobInfo": "Job Info (ComfyMQ)"}
