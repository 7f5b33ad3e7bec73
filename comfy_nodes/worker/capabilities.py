"""What a ComfyUI can run, for the broker's routing: from GET /object_info.

  {"node_classes": [every class], "combos": {"Class.input": [choices]}}

A COMBO input is one whose spec is a list of choices (`[["a.safetensors", "b.safetensors"], {...}]`) or the
newer `["COMBO", {"options": [...]}]`; a model loader's choices are the model files that instance has, so a
job needing a checkpoint only goes where that checkpoint is. Inputs that accept uploads or free values
(`image_upload`, `allow_custom`-like flags) are not used for routing: any value may be valid there.
"""

from __future__ import annotations

_FREE_VALUE_FLAGS = ("image_upload", "video_upload", "audio_upload", "upload", "allow_custom", "remote")


def _choices(spec) -> list | None:
    if not isinstance(spec, (list, tuple)) or not spec:
        return None
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if any(opts.get(flag) for flag in _FREE_VALUE_FLAGS):
        return None
    if isinstance(spec[0], list):
        values = spec[0]
    elif spec[0] == "COMBO" and isinstance(opts.get("options"), list):
        values = opts["options"]
    else:
        return None
    return [v for v in values if isinstance(v, (str, int, float, bool))]


def from_object_info(info: dict) -> dict:
    classes: list[str] = []
    combos: dict[str, list] = {}
    for cls, node in (info or {}).items():
        if not isinstance(node, dict):
            continue
        classes.append(cls)
        inputs = node.get("input") or {}
        for section in ("required", "optional"):
            for name, spec in (inputs.get(section) or {}).items():
                values = _choices(spec)
                if values is not None:
                    combos[f"{cls}.{name}"] = values
    return {"node_classes": sorted(classes), "combos": combos}


def summary(caps: dict) -> str:
    models = sum(len(v) for k, v in caps.get("combos", {}).items() if k.split(".", 1)[-1].endswith("_name"))
    return f"{len(caps.get('node_classes', []))} node classes, {models} model choices"
