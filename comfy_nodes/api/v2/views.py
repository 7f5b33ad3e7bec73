"""Our jobs and files as the Comfy API v2 shows them (the contract: Comfy-Org/comfy-api-proxy spec/openapi.yaml;
tests/python/test_api_v2.py checks answers against the pinned `comfy-api-proxy` package's models).

`queue_position`: for a pending job ready to run, how many jobs dispatch takes before it (priority, then age);
null for one that waits for other jobs, and once it runs.
States, one to one:  pending -> queued   running -> running   succeeded -> succeeded   failed -> failed
                     cancelled -> canceled   (canceling and expired never show: a cancel ends a run at once, and
                     a job past retention is gone, a 404)
A job's outputs are its recorded files (artifacts), each an asset whose id names the job and the file's place
(asset_o<job id>_<index>), served at <mount>/assets/{id}/content. What the farm adds goes in `comfymq` (worker,
attempts, max_attempts, priority, batch_id, after, waiting), an extension the contract's objects allow.
"""

from __future__ import annotations

import mimetypes
from datetime import datetime, timezone

from ...inputs.outputs import node_files

STATUS = {
    "pending": "queued",
    "running": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "canceled",
}
TERMINAL = ("succeeded", "failed", "canceled")
FAR = "9999-12-31T23:59:59Z"  # no retention deadline: kept until deleted
OUTPUT_PREFIX = "asset_o"


def iso(ms: int | None) -> str | None:
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def output_asset_id(job_id: str, index: int) -> str:
    return f"{OUTPUT_PREFIX}{job_id}_{index}"


def parse_output_asset_id(asset_id: str) -> tuple[str, int] | None:
    """(job id, index) of an output's asset id, or None."""
    if not asset_id.startswith(OUTPUT_PREFIX):
        return None
    job, _, index = asset_id[len(OUTPUT_PREFIX) :].partition("_")
    if len(job) != 16 or any(c not in "0123456789abcdef" for c in job) or not (index.isascii() and index.isdigit()):
        return None
    if len(index) > 6:
        return None
    return job, int(index)


def output_mime(artifact: dict) -> str:
    """The media type of a recorded file: as recorded, else by its name."""
    name = artifact["path"].rsplit("/", 1)[-1]
    return artifact.get("mime") or mimetypes.guess_type(name)[0] or "application/octet-stream"


def output_type(mime: str | None) -> str:
    major = (mime or "").split("/")[0]
    return {"image": "image", "video": "video", "audio": "audio", "text": "text"}.get(major, "file")


def expires_at(job: dict, retention_days: float) -> str:
    if retention_days <= 0:
        return FAR
    base = job.get("finished_at") or job.get("updated_at") or job.get("enqueued_at")
    return iso(int(base + retention_days * 86400_000)) or FAR


def progress_view(job: dict) -> dict | None:
    """Our progress ({value, max, nodes_done, nodes_total, node, class_type, title}) as v2's snapshot."""
    p = job.get("progress")
    if job["state"] != "running" or not isinstance(p, dict):
        return None
    total = p.get("nodes_total") or 0
    done = p.get("nodes_done") or 0
    step, steps = p.get("value"), p.get("max")
    within = step / steps if isinstance(step, (int, float)) and isinstance(steps, (int, float)) and steps > 0 else 0
    value = min(1.0, max(0.0, (done + within) / total)) if total else 0.0
    name = p.get("title") or p.get("class_type")
    return {
        "value": value,
        "nodes_done": int(done),
        "nodes_total": int(total),
        "current_node": p.get("node"),
        "current_node_class": p.get("class_type"),
        "step": int(step) if isinstance(step, (int, float)) and steps else None,
        "steps": int(steps) if isinstance(steps, (int, float)) and steps else None,
        "message": f"{name} {int(step)}/{int(steps)}" if name and steps else name,
    }


def outputs_view(job: dict, mount: str, expires: str, origin: str = "") -> list[dict]:
    """Every recorded file of a job, as v2 outputs (the node that reported it, when its outputs say)."""
    node_of = {}
    outputs = job.get("outputs") or {}
    for node_id in outputs if isinstance(outputs, dict) else ():
        for f in node_files(outputs, node_id):
            node_of.setdefault(f.rsplit("/", 1)[-1], node_id)
    out = []
    for i, a in enumerate(job.get("artifacts") or []):
        name = a["path"].rsplit("/", 1)[-1]
        mime = output_mime(a)
        asset = output_asset_id(job["id"], i)
        out.append(
            {
                "node_id": node_of.get(name, ""),
                "name": name,
                "type": output_type(mime),
                "content_type": mime,
                "size_bytes": a.get("size") or 0,
                "id": asset,
                "hash": None,  # blake3, computed on demand by GET .../assets/{id} (the contract allows null here)
                "url": f"{origin}{mount}/assets/{asset}/content",  # (absolute: the contract's format uri)
                "url_expires_at": expires,
            }
        )
    return out


def error_view(job: dict) -> dict | None:
    e = job.get("error")
    if not e or job["state"] not in ("failed", "cancelled"):
        return None
    return {
        "code": e.get("type") or "error",
        "message": e.get("message") or "",
        "node_id": e.get("node_id"),
        "class_type": ((job.get("prompt") or {}).get(e.get("node_id") or "", {}) or {}).get("class_type")
        if isinstance(job.get("prompt"), dict)
        else None,
        "traceback": e.get("traceback"),
    }


def job_view(
    job: dict,
    mount: str,
    *,
    labels: dict | None,
    retention_days: float,
    origin: str = "",
    waiting=None,
    queue_position: int | None = None,
) -> dict:
    """The v2 Job of one of ours. `origin`: scheme://host the request came to (outputs' URLs are absolute).
    `queue_position`: how many jobs dispatch takes before it (a pending job ready to run; else None)."""
    jid = job["id"]
    expires = expires_at(job, retention_days)
    started, finished, enqueued = job.get("started_at"), job.get("finished_at"), job.get("enqueued_at")
    return {
        "id": jid,
        "status": STATUS[job["state"]],
        "created_at": iso(enqueued),
        "started_at": iso(started),
        "completed_at": iso(finished),
        "expires_at": expires,
        "queue_position": queue_position if job["state"] == "pending" else None,
        "progress": progress_view(job),
        "outputs": outputs_view(job, mount, expires, origin),
        "error": error_view(job),
        "metrics": {
            "queue_ms": (started or finished or 0) - enqueued if (started or finished) else None,
            "execution_ms": finished - started if finished and started else None,
        },
        "urls": {
            "self": f"{mount}/jobs/{jid}",
            "events": f"{mount}/jobs/{jid}/events",
            "cancel": f"{mount}/jobs/{jid}/cancel",
        },
        "metadata": labels or {},
        "comfymq": {
            "worker": job.get("worker_id"),
            "attempts": job.get("attempts"),
            "max_attempts": job.get("max_attempts"),
            "priority": job.get("priority"),
            "batch_id": job.get("batch_id"),
            "after": job.get("after") or [],
            **({"waiting": waiting} if waiting is not None else {}),
        },
    }


def log_lines(before: dict, now: dict) -> list[dict]:
    """The SSE stream's `log` lines (LogEvent: level, message) for what changed between two reads of a job: a run
    started (on which worker, which attempt), a run that ended without a result (back in the queue), the end."""
    out = []
    was, state = before.get("state"), now.get("state")
    worker, attempts = now.get("worker_id"), now.get("attempts")
    if state == "running" and (was != "running" or before.get("attempts") != attempts):
        out.append({"level": "info", "message": f"attempt {attempts} running on worker {worker}"})
    if state == "pending" and was == "running":
        last = (now.get("history") or [{}])[-1]
        why = last.get("reason") or last.get("outcome") or "the run ended without a result"
        out.append({"level": "warning", "message": f"back in the queue: {why}"[:500]})
    if state != was and state in ("succeeded", "failed", "cancelled"):
        err = now.get("error") or {}
        if state == "succeeded":
            out.append({"level": "info", "message": f"succeeded on worker {worker}"})
        else:
            text = f"{err.get('type') or state}: {err.get('message') or ''}".strip().rstrip(":")
            out.append({"level": "error" if state == "failed" else "info", "message": text[:500]})
    return out
