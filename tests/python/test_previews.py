"""Preview images: ComfyUI's binary frames read for the job they belong to (worker/previews.py), and the host's
newest-per-job cache for the v2 stream (api/v2/previews.py), bounded and dropped when a job ends."""

from __future__ import annotations

import base64
import json
import struct

from comfy_nodes.api.v2.previews import MAX_JOBS, LatestPreviews
from comfy_nodes.worker import previews

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 60


def with_metadata(meta: dict, image: bytes = JPEG) -> bytes:
    m = json.dumps(meta).encode()
    return struct.pack(">I", 4) + struct.pack(">I", len(m)) + m + image


def test_both_frame_forms_are_read():
    old = previews.parse(struct.pack(">I", 1) + struct.pack(">I", 1) + JPEG)
    assert old == {"prompt_id": None, "node_id": None, "content_type": "image/jpeg", "data": JPEG}
    meta = {"node_id": "2", "prompt_id": "p-1", "display_node_id": "2", "image_type": "image/jpeg"}
    new = previews.parse(with_metadata(meta))
    assert new == {"prompt_id": "p-1", "node_id": "2", "content_type": "image/jpeg", "data": JPEG}
    png = previews.parse(struct.pack(">II", 1, 2) + b"\x89PNG....")
    assert png["content_type"] == "image/png"


def test_anything_else_is_no_preview():
    bad = [
        b"",
        b"\x00\x00\x00\x01",
        struct.pack(">II", 2, 1) + JPEG,  # unencoded preview
        struct.pack(">II", 1, 9) + JPEG,  # unknown image type
        struct.pack(">II", 1, 1),  # no bytes
        struct.pack(">II", 4, 1 << 30) + b"{}",  # a metadata length past the frame
        struct.pack(">II", 4, 5) + b"nojso" + JPEG,
        struct.pack(">II", 4, 2) + b"[]" + JPEG,
        with_metadata({"image_type": "text/html", "prompt_id": "p"}),
        struct.pack(">II", 1, 1) + b"\xff" * (previews.MAX_BYTES + 1),
        "not bytes",
    ]
    for frame in bad:
        assert previews.parse(frame) is None, frame[:16]


def progress_event(job: str, data: bytes = JPEG, ctype: str = "image/jpeg") -> dict:
    pv = {"node_id": "2", "content_type": ctype, "data_base64": base64.b64encode(data).decode()}
    return {"type": "progress", "job_id": job, "progress": {"value": 1, "preview": pv}}


def test_the_newest_preview_per_job_bounded_and_gone_with_the_job():
    cache = LatestPreviews()
    cache(progress_event("a"))
    seq, payload = cache.get("a")
    assert payload["data_base64"] == base64.b64encode(JPEG).decode() and payload["node_id"] == "2"
    cache(progress_event("a", JPEG + b"x"))
    assert cache.get("a")[0] > seq
    cache({"type": "progress", "job_id": "a", "progress": {"value": 2}})  # no preview: the last one stays
    assert cache.get("a") is not None
    cache({"type": "job", "job_id": "a", "state": "succeeded"})
    assert cache.get("a") is None
    for i in range(MAX_JOBS + 10):
        cache(progress_event(f"j{i}"))
    assert cache.get("j0") is None and cache.get(f"j{MAX_JOBS + 9}") is not None
    cache(progress_event("big", b"x" * 400_000))
    cache(progress_event("odd", ctype="text/html"))
    assert cache.get("big") is None and cache.get("odd") is None
