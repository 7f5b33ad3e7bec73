"""ComfyUI's binary preview frames (its websocket), read for the job they belong to.

A frame is u32 big-endian event type, then
  1 (PREVIEW_IMAGE):               u32 image type (1 JPEG, 2 PNG), the image bytes    (no prompt named)
  4 (PREVIEW_IMAGE_WITH_METADATA): u32 metadata length, metadata JSON ({node_id, prompt_id, image_type, ...}),
                                   the image bytes   (sent to clients that said supports_preview_metadata)
Anything else (unencoded previews, text frames, other types) is not a preview here. Bounded: a frame over
MAX_BYTES is ignored (a preview is a small JPEG; the host's progress messages carry it, 256 KiB at most).
"""

from __future__ import annotations

import json
import struct

MAX_BYTES = 192 << 10  # the image bytes: base64 adds a third, within the 256 KiB a progress message may hold
IMAGE_TYPES = {1: "image/jpeg", 2: "image/png"}


def parse(frame: bytes) -> dict | None:
    """{"prompt_id" (None for a type-1 frame), "node_id", "content_type", "data"} or None."""
    if not isinstance(frame, (bytes, bytearray)) or len(frame) < 8 or len(frame) > MAX_BYTES + 4096:
        return None
    (kind,) = struct.unpack_from(">I", frame, 0)
    if kind == 1:
        (image_type,) = struct.unpack_from(">I", frame, 4)
        data = bytes(frame[8:])
        ctype = IMAGE_TYPES.get(image_type)
        if ctype is None or not data or len(data) > MAX_BYTES:
            return None
        return {"prompt_id": None, "node_id": None, "content_type": ctype, "data": data}
    if kind == 4:
        (n,) = struct.unpack_from(">I", frame, 4)
        if n > 4096 or 8 + n > len(frame):
            return None
        try:
            meta = json.loads(bytes(frame[8 : 8 + n]))
        except ValueError:
            return None
        if not isinstance(meta, dict):
            return None
        data = bytes(frame[8 + n :])
        ctype = meta.get("image_type")
        if ctype not in IMAGE_TYPES.values() or not data or len(data) > MAX_BYTES:
            return None
        pid, node = meta.get("prompt_id"), meta.get("node_id")
        return {
            "prompt_id": pid if isinstance(pid, str) else None,
            "node_id": str(node) if isinstance(node, (str, int)) else None,
            "content_type": ctype,
            "data": data,
        }
    return None
