"""What ComfyUI's GET /object_info says of one node input, reduced to what a template parameter needs.

    input_spec(object_info, "KSampler", "steps")  -> {"type": "integer", "min": 1, "max": 10000}
    input_spec(object_info, "LoadImage", "image") -> {"type": "image"}
    input_spec(object_info, "Unknown", "x")       -> None   (object_info says nothing usable: infer elsewhere)

The spec shapes read (object_info[class]["input"]["required" | "optional"][name]):

    ["INT", {"min", "max", "step", ...}]     -> integer      ["FLOAT", {...}]   -> number
    ["STRING", {"multiline": true}]          -> string       ["BOOLEAN", {...}] -> boolean
    [["a", "b"], {...}]  or  ["COMBO", {"options": ["a", "b"]}]                 -> combo with those choices
    a combo flagged image_upload / video_upload / audio_upload                   -> image / video / audio

Choices follow worker/capabilities.py's reading of COMBO specs: a combo flagged as taking free values
(`allow_custom`, `remote`, an upload) has no fixed choices, and neither has one whose list is empty (an instance
with no model files lists none, yet a file name may be right on another worker). Limits that are not finite
numbers, and connection types (MODEL, LATENT, ...), are ignored: they say nothing a widget value must meet.
Pure functions; object_info is never modified.
"""

from __future__ import annotations

import math

_SCALARS = {"INT": "integer", "FLOAT": "number", "STRING": "string", "BOOLEAN": "boolean"}
_UPLOAD_FLAGS = {"image_upload": "image", "video_upload": "video", "audio_upload": "audio"}
_FREE_VALUE_FLAGS = ("allow_custom", "remote", "upload", *_UPLOAD_FLAGS)


def _raw_spec(object_info, class_type: str, input_name: str):
    if not isinstance(object_info, dict):
        return None
    node = object_info.get(class_type)
    if not isinstance(node, dict) or not isinstance(node.get("input"), dict):
        return None
    for section in ("required", "optional"):
        inputs = node["input"].get(section)
        if isinstance(inputs, dict) and input_name in inputs:
            return inputs[input_name]
    return None


def _finite(value, integer: bool):
    """value as a limit, or None when it is not a usable one (bool, NaN, infinite, not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if integer:
            return int(value) if value.is_integer() else None
    return value


def _media_kind(opts: dict) -> str | None:
    for flag, kind in _UPLOAD_FLAGS.items():
        if opts.get(flag):
            return kind
    upload = opts.get("upload")  # newer node definitions name the kind: {"upload": "image"}
    return upload if upload in ("image", "video", "audio") else None


def _choices(values: list, opts: dict) -> list | None:
    if any(opts.get(flag) for flag in _FREE_VALUE_FLAGS):
        return None
    kept = [
        v
        for v in values
        if isinstance(v, (str, int, float))
        and not isinstance(v, bool)
        and not (isinstance(v, float) and not math.isfinite(v))
    ]
    return kept or None


def input_spec(object_info, class_type: str, input_name: str) -> dict | None:
    """The parameter-level reading of one input's spec (see the module docstring), or None."""
    spec = _raw_spec(object_info, class_type, input_name)
    if not isinstance(spec, (list, tuple)) or not spec:
        return None
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    head = spec[0]
    if isinstance(head, list) or head == "COMBO":
        values = head if isinstance(head, list) else opts.get("options")
        kind = _media_kind(opts)
        if kind is not None:
            return {"type": kind}
        out: dict = {"type": "combo"}
        choices = _choices(values if isinstance(values, list) else [], opts)
        if choices is not None:
            out["choices"] = choices
        return out
    if not isinstance(head, str) or head not in _SCALARS:
        return None
    out = {"type": _SCALARS[head]}
    if out["type"] in ("integer", "number"):
        for key in ("min", "max", "step"):
            value = _finite(opts.get(key), out["type"] == "integer")
            if value is not None and not (key == "step" and value <= 0):
                out[key] = value
    elif out["type"] == "string" and opts.get("multiline") is True:
        out["multiline"] = True
    return out
