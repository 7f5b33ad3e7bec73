"""A job as the /comfymq API shows it. Two shapes:

summary (lists, batch pages, answers to cancel/retry):
  id, state, priority, batch_id, prompt_id, owner,
  create_time, enqueued_at, updated_at, started_at, finished_at      (ms since the epoch, or null)
  attempts, max_attempts, timeout (seconds or null), worker, progress,
  after: [ids of the jobs it waits for: it runs once each has succeeded],
  error: {type, message, node_id} or null (message cut to 500 characters),
  outputs, artifacts: [{path, size, sha256, mime, url}]
full (GET /comfymq/jobs/{id}): the summary plus
  prompt, workflow, error with traceback and details, history, lease_expires_at,
  inputs: [{node, input, sha256, size, name}] (the stored inputs its prompt names: inputs/graph.py) and
  [{node, input, output_of: {job, index | filename}}] (outputs of jobs it waits for: inputs/outputs.py), and for
  pending jobs waiting: [why it does not run yet: the jobs it waits for, or why no connected worker takes it]
  (added by the route), template: {name, version, params} of the template it was made from (or null), and
  webhooks: its deliveries (webhooks/deliveries.py; added by the route).
The summary has no `inputs`: lists are read without prompts.

An artifact's url is where GET /comfymq/artifacts/{job}/{name} serves it (relative to the server root).
"""

from __future__ import annotations

from urllib.parse import quote

from ..inputs.graph import job_inputs
from ..inputs.outputs import job_output_inputs

ERROR_SUMMARY_CHARS = 500


def artifact_name(job_id: str, path: str) -> str:
    """The {name} part of an artifact's URL: its path without the "<job_id>/" the broker puts in front."""
    prefix = job_id + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path


def artifact_view(job_id: str, artifact: dict, prefix: str) -> dict:
    view = {k: artifact.get(k) for k in ("path", "size", "sha256", "mime")}
    name = artifact_name(job_id, artifact.get("path") or "")
    view["url"] = f"{prefix}/artifacts/{job_id}/{quote(name)}"
    return view


def error_summary(error: dict | None) -> dict | None:
    if not error:
        return None
    message = error.get("message") or ""
    if len(message) > ERROR_SUMMARY_CHARS:
        message = message[: ERROR_SUMMARY_CHARS - 1] + "…"
    return {"type": error.get("type"), "message": message, "node_id": error.get("node_id")}


def without_preview(p):
    """A progress value without the preview image a worker may send with it (the v2 API's SSE stream carries that;
    lists and the panel's events stay small)."""
    if isinstance(p, dict) and "preview" in p:
        return {k: v for k, v in p.items() if k != "preview"}
    return p


def progress_of(job: dict):
    """A job's progress as views show it (without_preview)."""
    return without_preview(job.get("progress"))


def summary_view(job: dict, prefix: str = "/comfymq") -> dict:
    return {
        "id": job["id"],
        "state": job["state"],
        "priority": job["priority"],
        "batch_id": job.get("batch_id"),
        "prompt_id": job.get("prompt_id"),
        "owner": job.get("owner"),
        "create_time": job.get("create_time"),
        "enqueued_at": job.get("enqueued_at"),
        "updated_at": job.get("updated_at"),
        "started_at": job.get("started_at"),
        "finished_at": job.get("finished_at"),
        "attempts": job.get("attempts"),
        "max_attempts": job.get("max_attempts"),
        "timeout": job.get("timeout"),
        "worker": job.get("worker_id"),
        "progress": progress_of(job),
        "after": job.get("after") or [],
        "error": error_summary(job.get("error")),
        "outputs": job.get("outputs"),
        "artifacts": [artifact_view(job["id"], a, prefix) for a in job.get("artifacts") or []],
    }


def full_view(job: dict, prefix: str = "/comfymq") -> dict:
    view = summary_view(job, prefix)
    view["error"] = job.get("error")
    view["prompt"] = job.get("prompt")
    view["inputs"] = job_inputs(job.get("prompt")) + job_output_inputs(job.get("prompt"))
    view["workflow"] = job.get("workflow")
    view["history"] = job.get("history") or []
    lease = job.get("lease")
    view["lease_expires_at"] = lease.get("expires_at") if lease else None
    template = (job.get("labels") or {}).get("comfymq/template")
    view["template"] = template if isinstance(template, dict) else None  # made from a template: name, version, params
    return view
