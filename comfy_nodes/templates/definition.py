"""A template: a stored ComfyUI API-format workflow plus named parameters, each mapped to node inputs.
Parsing and checking only (no storage, no HTTP).

    parse_template(raw, object_info=None, where="request") -> the normalized template, or TemplateError

The normalized form, which every other module of this package reads and nobody modifies afterwards:

    {"name": "sd_basic", "description": "", "category": "text_to_image",
     "workflow": {"3": {"class_type": "KSampler", "inputs": {...}}, ...},     (a copy: JSON values only)
     "parameters": {"steps": {"type": "integer", "targets": ["3.steps"], "title": "steps", "description": "",
                              "default": 30, "min": 1, "max": 10000}}}

A parameter's optional keys: default, min, max, step (integer and number), choices (combo), multiline (string).
A parameter as written names its targets in one of these forms (a target is "<node_id>.<input>", split at the
LAST dot, so "12:3.text" is node "12:3"):

    {"targets": ["3.seed", "9.seed"]}   {"targets": [{"node": "3", "input": "seed"}]}   {"target": "3.seed"}
    {"node_id": "314", "input_name": "text", "default_value": ""}     (seed 003's parameter_mapping entries)

Each target's node must exist and have that input, holding a value (not a link, [node_id, output]); no two
parameters set the same input. The type is the one given, else inferred: from ComfyUI's /object_info for the
target's class and input when it is given and knows it (specs.py), else from the workflow's value (bool,
int, float, str). All targets must agree. Limits come from /object_info, narrowed by what the template says:
a declared min/max must lie within ComfyUI's range, declared choices must be among ComfyUI's; without
/object_info the declared limits are kept as written (min <= max, step > 0, finite). A default must fit the
type and limits (values.py). At submit a request value wins over the default, which wins over the
workflow's own value (render.py).
"""

from __future__ import annotations

import json
import math
import re

from .errors import TemplateError, kind, names, shown
from .specs import input_spec
from .values import MEDIA_TYPES, PARAM_TYPES, check_value

__all__ = ["NAME_RE", "PARAM_NAME_RE", "PARAM_TYPES", "TemplateError", "check_value", "parse_template", "split_target"]

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # template names (fullmatch)
PARAM_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")  # parameter names (fullmatch)

MAX_PARAMETERS = 256
MAX_TARGETS = 16
MAX_DESCRIPTION = 2000
MAX_TITLE = 200
MAX_CATEGORY = 200
MAX_CHOICES = 10000
MAX_NODES = 5000
MAX_TARGET_CHARS = 300

TEMPLATE_KEYS = ("name", "description", "category", "workflow", "parameters")
PARAM_KEYS = (
    "type", "targets", "target", "node_id", "input_name", "default", "default_value",
    "title", "description", "min", "max", "step", "choices", "multiline",
)  # fmt: skip
LIMIT_KEYS = {"integer": ("min", "max", "step"), "number": ("min", "max", "step"), "combo": ("choices",)}
LIMIT_KEYS["string"] = ("multiline",)

UI_FORMAT_HINT = (
    "this is a UI-format workflow (it has 'nodes' and 'links'); a template needs the API format: in ComfyUI"
    ' use Workflow > "Export (API)" and give that file'
)


class _Place:
    """Where errors are reported: the source (request or file), and the template once its name is valid."""

    def __init__(self, where: str, template: str | None = None):
        self.where = where
        self.template = template

    def error(self, what: str, parameter: str | None = None) -> TemplateError:
        return TemplateError(what, where=self.where, template=self.template, parameter=parameter)


def split_target(target: str) -> tuple[str, str]:
    """ "<node_id>.<input>" -> (node_id, input), split at the last dot; ValueError when either part is empty."""
    node_id, dot, input_name = target.rpartition(".")
    if not dot or not node_id or not input_name:
        raise ValueError(f"target {shown(target)} must be '<node_id>.<input>', e.g. '3.seed'")
    return node_id, input_name


def _text(place: _Place, raw: dict, key: str, limit: int, parameter: str | None = None, default: str = "") -> str:
    value = raw.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise place.error(f"'{key}' must be a string, got {kind(value)}", parameter)
    if len(value) > limit:
        raise place.error(f"'{key}' is longer than {limit} characters", parameter)
    return value


# ---- the workflow ---------------------------------------------------------------------------------------


def _check_workflow(place: _Place, workflow) -> dict:
    """A JSON-only copy of an API-format workflow, node ids as strings; TemplateError otherwise."""
    if workflow is None:
        raise place.error("'workflow' is missing: give the API-format workflow (ComfyUI's \"Export (API)\")")
    if isinstance(workflow, dict) and isinstance(workflow.get("nodes"), list) and "links" in workflow:
        raise place.error(UI_FORMAT_HINT)
    if not isinstance(workflow, dict) or not workflow:
        raise place.error(
            f"'workflow' must be a non-empty API-format workflow {{node_id: {{class_type, inputs}}}}, got {kind(workflow)}"
        )
    if len(workflow) > MAX_NODES:
        raise place.error(f"the workflow has {len(workflow)} nodes, more than the limit of {MAX_NODES}")
    nodes: dict = {}
    for node_id, node in workflow.items():
        if isinstance(node_id, bool) or not isinstance(node_id, (str, int)) or node_id == "":
            raise place.error(f"the workflow has a node id that is not a non-empty string: {shown(node_id)}")
        key = str(node_id)
        if key in nodes:
            raise place.error(f"the workflow has node '{key}' twice")
        if not isinstance(node, dict):
            raise place.error(f"workflow node '{key}' must be an object with class_type and inputs, got {kind(node)}")
        class_type = node.get("class_type")
        if not isinstance(class_type, str) or not class_type:
            raise place.error(f"workflow node '{key}' has no class_type (a non-empty string)")
        inputs = node.get("inputs")
        if not isinstance(inputs, dict) or not all(isinstance(k, str) for k in inputs):
            raise place.error(f"workflow node '{key}' ({class_type}) must have 'inputs', an object of named values")
        nodes[key] = node
    from .documents import MAX_DEPTH, _too_deep

    if _too_deep(nodes):  # the store refuses a prompt nested deeper (its JSON limit): refused now, not per job
        raise place.error(f"the workflow nests deeper than {MAX_DEPTH} levels of objects and arrays (the limit)")
    try:
        return json.loads(json.dumps(nodes, allow_nan=False))
    except RecursionError:
        raise place.error("the workflow is nested too deeply") from None
    except (TypeError, ValueError) as e:
        raise place.error(f"the workflow holds a value JSON cannot carry ({e})") from None


# ---- targets --------------------------------------------------------------------------------------------


def _target_items(place: _Place, pname: str, praw: dict) -> list:
    forms = [k for k in ("targets", "target", "node_id") if k in praw]
    if "input_name" in praw and "node_id" not in praw:
        raise place.error("'input_name' needs 'node_id'", pname)
    if len(forms) != 1:
        raise place.error("give exactly one of 'targets', 'target', or 'node_id' with 'input_name'", pname)
    if forms[0] == "target":
        return [praw["target"]]
    if forms[0] == "node_id":
        if "input_name" not in praw:
            raise place.error("'node_id' needs 'input_name'", pname)
        return [{"node": praw["node_id"], "input": praw["input_name"]}]
    items = praw["targets"]
    if not isinstance(items, list) or not items:
        raise place.error(f"'targets' must be a non-empty list, got {kind(items)}", pname)
    if len(items) > MAX_TARGETS:
        raise place.error(f"has {len(items)} targets, more than the limit of {MAX_TARGETS}", pname)
    return items


def _target(place: _Place, pname: str, item) -> tuple[str, str]:
    if isinstance(item, dict):
        if set(item) != {"node", "input"}:
            raise place.error(f"a target object has exactly the keys 'node' and 'input', got {names(item)}", pname)
        node_id, input_name = item["node"], item["input"]
        if isinstance(node_id, bool) or not isinstance(node_id, (str, int)) or node_id == "":
            raise place.error(f"a target's node must be a node id (a string), got {shown(node_id)}", pname)
        if not isinstance(input_name, str) or not input_name:
            raise place.error(f"a target's input must be an input name (a string), got {shown(input_name)}", pname)
        node_id = str(node_id)
    elif isinstance(item, str):
        try:
            node_id, input_name = split_target(item)
        except ValueError as e:
            raise place.error(str(e), pname) from None
    else:
        raise place.error(f"a target must be '<node_id>.<input>' or {{node, input}}, got {kind(item)}", pname)
    if len(node_id) + len(input_name) + 1 > MAX_TARGET_CHARS:
        raise place.error(f"a target is longer than {MAX_TARGET_CHARS} characters", pname)
    return node_id, input_name


def _check_target(place: _Place, pname: str, workflow: dict, node_id: str, input_name: str):
    """The workflow's current value at the target; TemplateError when the target cannot be set."""
    label = f"{node_id}.{input_name}"
    node = workflow.get(node_id)
    if node is None:
        raise place.error(f"target '{label}': the workflow has no node '{node_id}'", pname)
    inputs = node["inputs"]
    if input_name not in inputs:
        raise place.error(
            f"target '{label}': node '{node_id}' ({node['class_type']}) has no input '{input_name}'"
            f" (it has {names(sorted(inputs)) or 'none'})",
            pname,
        )
    value = inputs[input_name]
    if isinstance(value, list):
        if len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int):
            what = f"a link from node '{value[0]}' output {value[1]}"
        else:
            what = "a list, which ComfyUI reads as a link"
        raise place.error(f"target '{label}' ({node['class_type']}.{input_name}) is {what}, not a value to set", pname)
    return value


# ---- type -----------------------------------------------------------------------------------------------


def _value_type(value) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _fits(declared: str, inferred: str | None, source: str) -> bool:
    """Whether a declared type may set an input of the inferred type. /object_info is strict (its type is
    what ComfyUI validates); a workflow value only hints (cfg 8 is an int in JSON, yet a FLOAT input)."""
    if inferred is None or declared == inferred:
        return True
    if declared in MEDIA_TYPES and inferred == "string":
        return True  # a file name into a string input (custom loaders)
    if source == "workflow":
        return (declared == "number" and inferred == "integer") or (
            declared == "combo" and inferred in ("string", "integer", "number")
        )
    return False


def _param_type(place: _Place, pname: str, declared, found: list) -> str:
    """found: (label, inferred type or None, source "object_info" | "workflow") per target."""
    if declared is not None:
        if declared not in PARAM_TYPES:
            raise place.error(f"'type' must be one of {', '.join(PARAM_TYPES)}, got {shown(declared)}", pname)
        for label, inferred, source in found:
            if not _fits(declared, inferred, source):
                said = "ComfyUI's /object_info says" if source == "object_info" else "the workflow's value says"
                raise place.error(f"is declared {declared}, but {said} target '{label}' is {inferred}", pname)
        return declared
    for label, inferred, _ in found:
        if inferred is None:
            raise place.error(
                f"cannot tell its type from target '{label}' (neither /object_info nor the workflow's value"
                f" says); give 'type' ({', '.join(PARAM_TYPES)})",
                pname,
            )
    types = {inferred for _, inferred, _ in found}
    if len(types) == 1:
        return types.pop()
    if types == {"integer", "number"} and all(s == "workflow" for _, t, s in found if t == "integer"):
        return "number"  # 8 and 7.5 in two FLOAT inputs: JSON wrote one of them without a fraction
    listed = ", ".join(f"'{label}' is {inferred} ({source})" for label, inferred, source in found)
    raise place.error(f"its targets disagree in type: {listed}; give 'type' or split the parameter", pname)


# ---- limits ---------------------------------------------------------------------------------------------


def _declared_number(place: _Place, pname: str, key: str, value, integer: bool):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise place.error(f"'{key}' must be a number, got {kind(value)}", pname)
    if integer and isinstance(value, float):
        raise place.error(f"'{key}' must be an integer, got {shown(value)}", pname)
    if isinstance(value, float) and not math.isfinite(value):
        raise place.error(f"'{key}' must be a finite number, got {shown(value)}", pname)
    if key == "step" and value <= 0:
        raise place.error(f"'step' must be more than 0, got {shown(value)}", pname)
    return value


def _numeric_limits(place: _Place, pname: str, ptype: str, praw: dict, specs: list) -> dict:
    """specs: (label "Class.input", spec) of the targets /object_info describes with this type."""
    integer = ptype == "integer"
    low = high = step = None  # (value, label) of ComfyUI's bounds, the narrowest over the targets
    for label, spec in specs:
        if "min" in spec and (low is None or spec["min"] > low[0]):
            low = (spec["min"], label)
        if "max" in spec and (high is None or spec["max"] < high[0]):
            high = (spec["max"], label)
        if "step" in spec and step is None:
            step = spec["step"]
    if low is not None and high is not None and low[0] > high[0]:
        raise place.error(f"its targets accept no common value: {low[1]} >= {low[0]}, {high[1]} <= {high[0]}", pname)
    out: dict = {}
    for key in ("min", "max"):
        if key in praw:
            value = _declared_number(place, pname, key, praw[key], integer)
            if low is not None and value < low[0]:
                raise place.error(
                    f"'{key}' {shown(value)} is below {shown(low[0])}, ComfyUI's minimum for {low[1]}", pname
                )
            if high is not None and value > high[0]:
                raise place.error(
                    f"'{key}' {shown(value)} is above {shown(high[0])}, ComfyUI's maximum for {high[1]}", pname
                )
            out[key] = value
        elif (low if key == "min" else high) is not None:
            out[key] = (low if key == "min" else high)[0]
    if "step" in praw:
        out["step"] = _declared_number(place, pname, "step", praw["step"], integer)
    elif step is not None:
        out["step"] = step
    if "min" in out and "max" in out and out["min"] > out["max"]:
        raise place.error(f"'min' {shown(out['min'])} is above 'max' {shown(out['max'])}", pname)
    return out


def _combo_limits(place: _Place, pname: str, praw: dict, specs: list) -> dict:
    offered = None  # the choices every target accepts, in the first target's order
    for label, spec in specs:
        if "choices" in spec:
            if offered is None:
                offered = list(spec["choices"])
            else:
                theirs = set(spec["choices"])
                offered = [c for c in offered if c in theirs]
                if not offered:
                    raise place.error(f"its targets share no choice ({label} has none of the others')", pname)
    if "choices" not in praw:
        return {} if offered is None else {"choices": offered}
    choices = praw["choices"]
    if not isinstance(choices, list) or not choices:
        raise place.error(f"'choices' must be a non-empty list, got {kind(choices)}", pname)
    if len(choices) > MAX_CHOICES:
        raise place.error(f"has {len(choices)} choices, more than the limit of {MAX_CHOICES}", pname)
    for c in choices:
        if (
            isinstance(c, bool)
            or not isinstance(c, (str, int, float))
            or (isinstance(c, float) and not math.isfinite(c))
        ):
            raise place.error(f"a choice must be a string or a number, got {shown(c)}", pname)
    if len(set(choices)) != len(choices):
        raise place.error("'choices' lists a value twice", pname)
    if offered is not None:
        allowed = set(offered)
        missing = [c for c in choices if c not in allowed]
        if missing:
            where = ", ".join(label for label, spec in specs if "choices" in spec)
            raise place.error(
                f"choices {', '.join(shown(c) for c in missing[:5])}{' ...' if len(missing) > 5 else ''}"
                f" are not offered by ComfyUI for {where}",
                pname,
            )
    return {"choices": list(choices)}


def _limits(place: _Place, pname: str, ptype: str, praw: dict, specs: list) -> dict:
    allowed = LIMIT_KEYS.get(ptype, ())
    for key in ("min", "max", "step", "choices", "multiline"):
        if key in praw and key not in allowed:
            article = "an" if ptype[0] in "aeiou" else "a"
            raise place.error(f"'{key}' does not apply to {article} {ptype} parameter", pname)
    specs = [(label, spec) for label, spec in specs if spec is not None and spec["type"] == ptype]
    if ptype in ("integer", "number"):
        return _numeric_limits(place, pname, ptype, praw, specs)
    if ptype == "combo":
        return _combo_limits(place, pname, praw, specs)
    if ptype == "string":
        if "multiline" in praw:
            if not isinstance(praw["multiline"], bool):
                raise place.error(f"'multiline' must be true or false, got {kind(praw['multiline'])}", pname)
            return {"multiline": praw["multiline"]}
        return {"multiline": True} if any(spec.get("multiline") for _, spec in specs) else {}
    return {}


def _json_copy(place: _Place, pname: str, value):
    """A copy of a default that shares nothing with the caller's dict, or TemplateError when JSON cannot carry it."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except RecursionError:
        raise place.error("default is nested too deeply", pname) from None
    except (TypeError, ValueError) as e:
        raise place.error(f"default holds a value JSON cannot carry ({e})", pname) from None


# ---- parameters and templates ---------------------------------------------------------------------------


def _parse_parameter(place: _Place, pname: str, praw, workflow: dict, object_info) -> dict:
    if not isinstance(praw, dict):
        raise place.error(f"must be an object with 'targets' (and type, default, ...), got {kind(praw)}", pname)
    unknown = [k for k in praw if k not in PARAM_KEYS]
    if unknown:
        raise place.error(f"unknown key(s) {names(unknown)}; a parameter has {', '.join(PARAM_KEYS)}", pname)
    targets: list[tuple[str, str]] = []
    found, specs = [], []
    for item in _target_items(place, pname, praw):
        node_id, input_name = _target(place, pname, item)
        if (node_id, input_name) in targets:
            raise place.error(f"target '{node_id}.{input_name}' is listed twice", pname)
        value = _check_target(place, pname, workflow, node_id, input_name)
        targets.append((node_id, input_name))
        class_type = workflow[node_id]["class_type"]
        spec = input_spec(object_info, class_type, input_name)
        label = f"{node_id}.{input_name}"
        if spec is not None:
            found.append((label, spec["type"], "object_info"))
        else:
            found.append((label, _value_type(value), "workflow"))
        specs.append((f"{class_type}.{input_name}", spec))
    ptype = _param_type(place, pname, praw.get("type"), found)
    param = {
        "type": ptype,
        "targets": [f"{n}.{i}" for n, i in targets],
        "title": _text(place, praw, "title", MAX_TITLE, pname, default=pname) or pname,
        "description": _text(place, praw, "description", MAX_DESCRIPTION, pname),
    }
    limits = _limits(place, pname, ptype, praw, specs)
    if "default" in praw and "default_value" in praw:
        raise place.error("give 'default' or 'default_value', not both", pname)
    for key in ("default", "default_value"):
        if key in praw:
            check_value(
                {"type": ptype, **limits},
                praw[key],
                name=pname,
                where=place.where,
                template=place.template,
                label="default",
            )
            param["default"] = _json_copy(place, pname, praw[key])
    param.update(limits)
    return param


def parse_template(raw: dict, *, object_info: dict | None = None, where: str = "request") -> dict:
    """The normalized template (module docstring) from a template as written; TemplateError naming `where`,
    the template and the parameter otherwise. object_info: ComfyUI's GET /object_info (or part of it), for
    types and limits; without it types come from the workflow's values and limits are taken as written.
    The result shares nothing with `raw`."""
    place = _Place(where)
    if not isinstance(raw, dict):
        raise place.error(f"a template must be an object, got {kind(raw)}")
    unknown = [k for k in raw if k not in TEMPLATE_KEYS]
    if unknown:
        raise place.error(f"unknown key(s) {names(unknown)}; a template has {', '.join(TEMPLATE_KEYS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise place.error(
            f"'name' must be 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit; got {shown(name)}"
        )
    place = _Place(where, name)
    description = _text(place, raw, "description", MAX_DESCRIPTION)
    category = _text(place, raw, "category", MAX_CATEGORY)
    workflow = _check_workflow(place, raw.get("workflow"))
    params_raw = raw.get("parameters")
    if params_raw is None:
        params_raw = {}
    if not isinstance(params_raw, dict):
        raise place.error(f"'parameters' must be an object {{name: parameter}}, got {kind(params_raw)}")
    if len(params_raw) > MAX_PARAMETERS:
        raise place.error(f"has {len(params_raw)} parameters, more than the limit of {MAX_PARAMETERS}")
    parameters: dict = {}
    owner: dict[str, str] = {}  # target -> the parameter that sets it
    for pname, praw in params_raw.items():
        if not isinstance(pname, str) or not PARAM_NAME_RE.fullmatch(pname):
            raise place.error(
                f"parameter name {shown(pname)} must be 1 to 64 letters, digits or '_', not starting with a digit"
            )
        param = _parse_parameter(place, pname, praw, workflow, object_info)
        for target in param["targets"]:
            if target in owner:
                raise place.error(f"target '{target}' is already set by parameter '{owner[target]}'", pname)
            owner[target] = pname
        parameters[pname] = param
    return {
        "name": name,
        "description": description,
        "category": category,
        "workflow": workflow,
        "parameters": parameters,
    }
