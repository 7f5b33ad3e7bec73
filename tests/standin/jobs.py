"""ComfyUI's jobs API (GET /api/jobs, GET /api/jobs/{id}, POST /api/jobs/{id}/cancel, POST /api/jobs/cancel) as the
stand-in serves it, for the profiles that have it (see versions.py): a job is a queue entry or a history entry
seen through one shape.

    list_jobs(running, queued, history, profile, ...) -> (jobs, total)
    job_detail(prompt_id, running, queued, history, profile) -> job or None

`running` and `queued` are queue entries [number, prompt_id, prompt, extra_data, outputs_to_execute]; `history` is
{prompt_id: {"prompt": entry, "outputs": ..., "status": ..., "meta": ...}}. Fields whose value is None are left out
(ComfyUI's prune_dict). Differences between 0.8.0 and current are noted where they are made.
"""

from __future__ import annotations

import uuid

PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED = "pending", "in_progress", "completed", "failed", "cancelled"
THREE_D_EXTENSIONS = (".obj", ".fbx", ".gltf", ".glb", ".usdz")
TEXT_EXTENSIONS = (".txt", ".md", ".json")
TEXT_PREVIEW_MAX = 1024


def valid_job_id(value) -> bool:
    """current: a caller-chosen id must be a UUID in canonical lowercase hyphenated form."""
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _pruned(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def _metadata(extra_data: dict) -> tuple:
    extra_data = extra_data if isinstance(extra_data, dict) else {}
    pnginfo = extra_data.get("extra_pnginfo") or {}
    workflow = pnginfo.get("workflow") if isinstance(pnginfo, dict) else None
    return extra_data.get("create_time"), workflow.get("id") if isinstance(workflow, dict) else None


def _is_3d(name: str) -> bool:
    return name.lower().endswith(THREE_D_EXTENSIONS)


def _previewable(media_type: str, item: dict, profile) -> bool:
    kinds = ("images", "video", "audio", "3d", "text") if profile.jobs_cancel else ("images", "video", "audio")
    if media_type in kinds:
        return True
    fmt = item.get("format", "") or ""
    if fmt.startswith("video/") or fmt.startswith("audio/"):
        return True
    name = str(item.get("filename", "")).lower()
    extensions = THREE_D_EXTENSIONS + TEXT_EXTENSIONS if profile.jobs_cancel else THREE_D_EXTENSIONS[:4]
    return name.endswith(extensions)


def _as_item(item):
    """current: a 3D file named by a bare string becomes a file item; other strings are not files."""
    if isinstance(item, dict):
        return item
    if isinstance(item, str) and _is_3d(item):
        return {"filename": item, "type": "output", "subfolder": "", "mediaType": "3d"}
    return None


def outputs_summary(outputs: dict, profile) -> tuple:
    """(outputs_count, preview_output, previewable_count). The preview prefers a saved ("output") visual file,
    then any other visual file; current also falls back to a saved text file, then to a node's text."""
    count, previewable = 0, 0
    preview = fallback = text_file = text = None
    for node_id, node_outputs in (outputs or {}).items():
        if not isinstance(node_outputs, dict):
            continue
        for media_type, items in node_outputs.items():
            if media_type == "animated" or not isinstance(items, list):
                continue
            for item in items:
                if not isinstance(item, dict):
                    if not profile.jobs_cancel:
                        continue  # 0.8.0 counts and previews file items only
                    normalized = _as_item(item)
                    if normalized is None:
                        if media_type == "text" and text is None:
                            value = item[0] if isinstance(item, (list, tuple)) and item else str(item)
                            content = {"content": str(value)[:TEXT_PREVIEW_MAX]}
                            if len(str(value)) > TEXT_PREVIEW_MAX:
                                content["truncated"] = True
                            text = {**content, "nodeId": node_id, "mediaType": media_type}
                        continue
                    item = normalized
                count += 1
                if not _previewable(media_type, item, profile):
                    continue
                previewable += 1
                if preview is not None:
                    continue
                enriched = {**item, "nodeId": node_id}
                if "mediaType" not in item or not profile.jobs_cancel:
                    enriched["mediaType"] = media_type
                is_text = media_type == "text" or str(item.get("filename", "")).lower().endswith(TEXT_EXTENSIONS)
                if profile.jobs_cancel and is_text:
                    text_file = text_file or enriched
                elif item.get("type") == "output":
                    preview = enriched
                elif fallback is None:
                    fallback = enriched
    return count, preview or fallback or text_file or text, previewable


def from_queue(entry, status: str, profile, *, detail: bool = False) -> dict:
    number, prompt_id, prompt, extra_data = entry[0], entry[1], entry[2], entry[3]
    create_time, workflow_id = _metadata(extra_data)
    job = {
        "id": prompt_id,
        "status": status,
        "priority": number,
        "create_time": create_time,
        "outputs_count": 0,
    }
    if profile.jobs_cancel:
        job["previewable_outputs_count"] = 0
    job["workflow_id"] = workflow_id
    job = _pruned(job)
    if detail and profile.jobs_cancel:  # current: a queued job's detail carries its prompt, as a finished one's does
        job["workflow"] = {"prompt": prompt, "extra_data": extra_data}
    return job


def from_history(prompt_id: str, entry: dict, profile, *, detail: bool = False) -> dict:
    number, _, prompt, extra_data = entry["prompt"][:4]
    create_time, workflow_id = _metadata(extra_data)
    status_info = entry.get("status") or {}
    started = ended = error = None
    interrupted = False
    for message in status_info.get("messages") or []:
        if not (isinstance(message, (list, tuple)) and len(message) >= 2 and isinstance(message[1], dict)):
            continue
        kind, data = message[0], message[1]
        if kind == "execution_start":
            started = data.get("timestamp")
        elif kind in ("execution_success", "execution_error", "execution_interrupted"):
            ended = data.get("timestamp")
            if kind == "execution_error":
                error = data
            elif kind == "execution_interrupted":
                interrupted = True
    if status_info.get("status_str") == "error":
        status = CANCELLED if interrupted and profile.jobs_cancel else FAILED
    else:
        status = COMPLETED
    outputs = entry.get("outputs") or {}
    count, preview, previewable = outputs_summary(outputs, profile)
    job = {
        "id": prompt_id,
        "status": status,
        "priority": number,
        "create_time": create_time,
        "execution_start_time": started,
        "execution_end_time": ended,
        "execution_error": error,
        "outputs_count": count,
    }
    if profile.jobs_cancel:
        job["previewable_outputs_count"] = previewable
    job.update(preview_output=preview, workflow_id=workflow_id)
    job = _pruned(job)
    if detail:
        job["outputs"] = _normalized_outputs(outputs) if profile.jobs_cancel else outputs
        job["execution_status"] = status_info
        job["workflow"] = {"prompt": prompt, "extra_data": extra_data}
    return job


def _normalized_outputs(outputs: dict) -> dict:
    """current: the detail's outputs with None items dropped and 3D file names turned into file items."""
    out = {}
    for node_id, node_outputs in outputs.items():
        if not isinstance(node_outputs, dict):
            out[node_id] = node_outputs
            continue
        node = {}
        for media_type, items in node_outputs.items():
            if media_type == "animated" or not isinstance(items, list):
                node[media_type] = items
                continue
            node[media_type] = [_as_item(i) or i for i in items if i is not None]
        out[node_id] = node
    return out


def job_detail(prompt_id, running, queued, history, profile):
    if prompt_id in history:
        return from_history(prompt_id, history[prompt_id], profile, detail=True)
    for entry in running:
        if entry[1] == prompt_id:
            return from_queue(entry, IN_PROGRESS, profile, detail=True)
    for entry in queued:
        if entry[1] == prompt_id:
            return from_queue(entry, PENDING, profile, detail=True)
    return None


def list_jobs(
    running,
    queued,
    history,
    profile,
    *,
    statuses=None,
    workflow_id=None,
    sort_by="created_at",
    sort_order="desc",
    limit=None,
    offset=0,
):
    wanted = set(statuses if statuses is not None else profile.job_statuses)
    jobs = []
    if IN_PROGRESS in wanted:
        jobs += [from_queue(e, IN_PROGRESS, profile) for e in running]
    if PENDING in wanted:
        jobs += [from_queue(e, PENDING, profile) for e in queued]
    if wanted & {COMPLETED, FAILED, CANCELLED}:
        for prompt_id, entry in history.items():
            job = from_history(prompt_id, entry, profile)
            if job["status"] in wanted:
                jobs.append(job)
    if workflow_id:
        jobs = [j for j in jobs if j.get("workflow_id") == workflow_id]
    if sort_by == "execution_duration":

        def key(job):
            start, end = job.get("execution_start_time", 0), job.get("execution_end_time", 0)
            return end - start if start and end else 0

    else:

        def key(job):
            return job.get("create_time", 0)

    jobs = sorted(jobs, key=key, reverse=sort_order == "desc")
    total = len(jobs)
    if offset > 0:
        jobs = jobs[offset:]
    if limit is not None:
        jobs = jobs[:limit]
    return jobs, total
