"""The JSON Schema (draft 2020-12) of a template's parameters object, for forms and for clients to check with.

    json_schema(template) -> {"$schema": ..., "type": "object", "additionalProperties": false,
                              "properties": {name: {...}}, "required": [...]}

Per parameter type:

    integer, number, string, boolean   that JSON type; minimum / maximum from the limits
    combo                              "enum" of its choices when known, else a string or a number
    image, video, audio                "oneOf": a file name or asset reference (a string, with a
                                       contentMediaType hint such as "image/*"), or a reference object with
                                       exactly one of comfymq_input / asset_hash / asset_id; and
                                       "x-comfymq-kind": the media type

Every property carries title, description, "x-comfymq-type" (the parameter type), "x-comfymq-targets"
("<node_id>.<input>" list), "x-comfymq-step" when a step is known (a widget hint: ComfyUI does not enforce
steps, so neither does the schema, hence no multipleOf) and "x-comfymq-multiline" for multiline strings.

JSON Schema counts 512.0 as an integer; check_value does not (a request must write 512), so a client that
validates with this schema can still be refused there for that one case.

"default" is the value a form should pre-fill: the template's default, else the workflow's own value at the
first target when that value passes the parameter's checks (the value a job runs with when the parameter is
left out). No parameter is required, except a media parameter with neither a default nor a workflow value
(render.py refuses a request without it): every other one falls back to a value.
"""

from __future__ import annotations

import copy

from .errors import TemplateError
from .values import MEDIA_REF_KEYS, MEDIA_TYPES, check_value

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

_JSON_TYPES = {"integer": "integer", "number": "number", "string": "string", "boolean": "boolean"}
_MEDIA_TYPES = {"image": "image/*", "video": "video/*", "audio": "audio/*"}


def workflow_value(template: dict, param: dict):
    """The workflow's own value at a parameter's first target (what a job runs with when it is left out)."""
    node_id, _, input_name = param["targets"][0].rpartition(".")
    return template["workflow"][node_id]["inputs"][input_name]


def effective_default(template: dict, name: str) -> tuple[bool, object]:
    """(True, value) of the value a parameter falls back to when a request leaves it out, as a form shows
    it; (False, None) when there is none worth showing (no default, and the workflow's value is empty or
    does not fit the parameter)."""
    param = template["parameters"][name]
    if "default" in param:
        return True, param["default"]
    value = workflow_value(template, param)
    if value is None or value == "":
        return False, None
    try:
        check_value(param, value, name=name)
    except TemplateError:
        return False, None
    return True, value


def is_required(template: dict, name: str) -> bool:
    """Whether a request must give this parameter: a media parameter with no default and no workflow value."""
    param = template["parameters"][name]
    if param["type"] not in MEDIA_TYPES or "default" in param:
        return False
    value = workflow_value(template, param)
    return value is None or value == ""


def _value_schema(param: dict) -> dict:
    ptype = param["type"]
    if ptype in _JSON_TYPES:
        out: dict = {"type": _JSON_TYPES[ptype]}
        if "min" in param:
            out["minimum"] = param["min"]
        if "max" in param:
            out["maximum"] = param["max"]
        return out
    if ptype == "combo":
        if "choices" in param:
            return {"enum": list(param["choices"])}
        return {"type": ["string", "number"]}
    reference = {
        "type": "object",
        "oneOf": [{"required": [key]} for key in MEDIA_REF_KEYS],
        "maxProperties": 8,
    }
    file_name = {"type": "string", "minLength": 1, "maxLength": 4096, "contentMediaType": _MEDIA_TYPES[ptype]}
    return {"oneOf": [file_name, reference]}


def json_schema(template: dict) -> dict:
    """The schema of the params object a request sends for this template (module docstring)."""
    properties: dict = {}
    required: list[str] = []
    for name, param in template["parameters"].items():
        prop = _value_schema(param)
        prop["title"] = param["title"]
        if param["description"]:
            prop["description"] = param["description"]
        has_default, default = effective_default(template, name)
        if has_default:
            prop["default"] = copy.deepcopy(default)
        prop["x-comfymq-type"] = param["type"]
        if param["type"] in MEDIA_TYPES:
            prop["x-comfymq-kind"] = param["type"]
        prop["x-comfymq-targets"] = list(param["targets"])
        if "step" in param:
            prop["x-comfymq-step"] = param["step"]
        if param.get("multiline"):
            prop["x-comfymq-multiline"] = True
        properties[name] = prop
        if is_required(template, name):
            required.append(name)
    schema = {
        "$schema": SCHEMA_DIALECT,
        "title": template["name"],
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }
    if template.get("description"):
        schema["description"] = template["description"]
    if required:
        schema["required"] = required
    return schema
