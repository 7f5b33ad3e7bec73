"""Parameter types, and the check of one value against one parameter (a default, a request value, a sweep value).

    check_value(param, value, name="steps")  -> value, unchanged; or TemplateError naming the parameter

What each type accepts:

    string   a str of at most 1 MiB (UTF-8)
    integer  an int, never a bool (true is not 1 here) nor a float (512.0 is refused), within min/max
    number   an int or a float, never a bool, finite, within min/max
    boolean  a bool
    combo    one of the choices when they are known, else a str, int or float (not a bool)
    image, video, audio
             a non-empty str (a file name as ComfyUI's input folder knows it, or an asset reference such as
             "blake3:<64 hex>"), or an object with exactly one of "comfymq_input", "asset_hash", "asset_id"
             (other keys, such as "name", may come with it); resolving it to a file is the caller's job

`step` is not enforced: ComfyUI itself only uses it to move a widget (its own validation rounds nothing), so it
is a hint for forms. A parameter is the normalized dict parse_template returns; it is never modified here.
"""

from __future__ import annotations

import math

from .errors import TemplateError, kind, shown

PARAM_TYPES = ("string", "integer", "number", "boolean", "combo", "image", "video", "audio")
MEDIA_TYPES = ("image", "video", "audio")
MEDIA_REF_KEYS = ("comfymq_input", "asset_hash", "asset_id")

_A_MEDIA = {"image": "an image", "video": "a video", "audio": "an audio file"}

MAX_STRING_BYTES = 1 << 20  # one string value, UTF-8
MAX_FILE_REF_CHARS = 4096  # a media value given as a string
MAX_REF_OBJECT_KEYS = 8  # a media value given as an object

# Membership in a long choices list is checked through a set made once per list: a sweep may check 10,000
# values against 10,000 choices. Keyed by id() with the list kept alive, so an id is never reused while cached.
# Safe across threads (a lost entry is only made again); a choices list must not change once parsed.
_CHOICE_SETS: dict[int, tuple[list, frozenset]] = {}
_CHOICE_SETS_MAX = 64
_SHORT_CHOICES = 32


def _in_choices(value, choices: list) -> bool:
    if len(choices) <= _SHORT_CHOICES:
        return value in choices
    entry = _CHOICE_SETS.get(id(choices))
    if entry is None or entry[0] is not choices:
        if len(_CHOICE_SETS) >= _CHOICE_SETS_MAX:
            _CHOICE_SETS.clear()
        entry = (choices, frozenset(choices))
        _CHOICE_SETS[id(choices)] = entry
    return value in entry[1]


def _check_range(param: dict, value, fail) -> None:
    low, high = param.get("min"), param.get("max")
    if low is not None and value < low:
        raise fail(f"{shown(value)} is below the minimum {shown(low)}")
    if high is not None and value > high:
        raise fail(f"{shown(value)} is above the maximum {shown(high)}")


def _check_media(ptype: str, value, fail) -> None:
    if isinstance(value, str):
        if not value:
            raise fail(f"must name {_A_MEDIA[ptype]}: a file name or an asset reference, got an empty string")
        if len(value) > MAX_FILE_REF_CHARS:
            raise fail(f"is longer than {MAX_FILE_REF_CHARS} characters")
        return
    if isinstance(value, dict):
        present = [k for k in MEDIA_REF_KEYS if k in value]
        if len(present) != 1 or len(value) > MAX_REF_OBJECT_KEYS:
            raise fail(
                f"as an object must have exactly one of {', '.join(MEDIA_REF_KEYS)}"
                f" (and at most {MAX_REF_OBJECT_KEYS} keys)"
            )
        ref = value[present[0]]
        if not isinstance(ref, str) or not ref or len(ref) > MAX_FILE_REF_CHARS:
            raise fail(f"{present[0]} must be a non-empty string (a hash or an asset id), got {kind(ref)}")
        return
    raise fail(f"must be a file name or an asset reference (a string or an object), got {kind(value)}")


def check_value(
    param: dict,
    value,
    *,
    name: str,
    where: str = "request",
    template: str | None = None,
    label: str = "value",
):
    """value, unchanged, when it fits the parameter's type and limits (see the module docstring); else a
    TemplateError naming where, the template and the parameter. `label` is what the message calls the value
    ("value", "default", "sweep value #3")."""

    def fail(what: str) -> TemplateError:
        return TemplateError(f"{label} {what}", where=where, template=template, parameter=name)

    ptype = param["type"]
    if ptype == "string":
        if not isinstance(value, str):
            raise fail(f"must be a string, got {kind(value)}")
        if len(value) > MAX_STRING_BYTES // 4 and len(value.encode("utf-8", "surrogatepass")) > MAX_STRING_BYTES:
            raise fail("is longer than 1 MiB")
    elif ptype == "integer":
        if isinstance(value, float) and not isinstance(value, bool):
            raise fail(f"must be an integer, got the number {shown(value)} (write integers without a fraction)")
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(f"must be an integer, got {kind(value)}")
        _check_range(param, value, fail)
    elif ptype == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail(f"must be a number, got {kind(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise fail(f"must be a finite number, got {shown(value)}")
        _check_range(param, value, fail)
    elif ptype == "boolean":
        if not isinstance(value, bool):
            raise fail(f"must be true or false, got {kind(value)}")
    elif ptype == "combo":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise fail(f"must be a string or a number, got {kind(value)}")
        choices = param.get("choices")
        if choices is not None and not _in_choices(value, choices):
            listed = ", ".join(shown(c) for c in choices[:8]) + (", ..." if len(choices) > 8 else "")
            raise fail(f"{shown(value)} is not one of the {len(choices)} choices ({listed})")
    elif ptype in MEDIA_TYPES:
        _check_media(ptype, value, fail)
    else:
        raise fail(f"cannot be checked: unknown parameter type {shown(ptype)}")
    return value
