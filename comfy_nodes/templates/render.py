"""Applying parameter values to a template: one API prompt (render), or the grid of values to render (sweep).

    render(template, {"steps": 30}, resolve_asset=None) -> a new API prompt with the values set
    sweep(template, {"steps": 30}, {"cfg": [5, 7], "seed": [1, 2, 3]}, limit=100)
        -> [{"steps": 30, "cfg": 5, "seed": 1}, {"steps": 30, "cfg": 5, "seed": 2}, ..., {"cfg": 7, "seed": 3}]

Precedence for each parameter: the request's value, else the template's default, else the workflow's own
value (left as it is). A media parameter with none of the three (its workflow value empty) must be given.
Values are checked with values.check_value; names the template does not have are refused, listing them and
the known ones. Pure functions: the template is never modified and the prompt shares nothing with it or with
the params.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, Callable

from .errors import TemplateError, kind, names
from .schema import is_required
from .values import MEDIA_TYPES, check_value

MAX_PARAMS = 256  # names in one params object, and params swept at once
MAX_SWEEP_VALUES = 10000  # values of one swept parameter

# resolve_asset(value, parameter_name) -> the value to put into the workflow for a media parameter (say, an
# input reference for an asset hash); it may raise, and its exception reaches render's caller unchanged.
AssetResolver = Callable[[Any, str], Any]


def _check_names(template: dict, given, what: str) -> None:
    name = template["name"]
    if not isinstance(given, dict):
        raise TemplateError(f"{what} must be an object {{name: value}}, got {kind(given)}", template=name)
    if len(given) > MAX_PARAMS:
        raise TemplateError(f"{what} has {len(given)} names, more than the limit of {MAX_PARAMS}", template=name)
    known = template["parameters"]
    unknown = [k for k in given if not isinstance(k, str) or k not in known]
    if unknown:
        raise TemplateError(
            f"{what} names unknown parameter(s) {names(unknown)}; this template has {names(known) or 'none'}",
            template=name,
        )


def render(template: dict, params: dict, *, resolve_asset: AssetResolver | None = None) -> dict:
    """A new API prompt: a deep copy of the template's workflow with each parameter's value (module
    docstring) at every one of its targets. TemplateError (where "request") for unknown names, a value
    that does not fit, or a required media parameter left out."""
    _check_names(template, params, "params")
    name = template["name"]
    prompt = copy.deepcopy(template["workflow"])
    for pname, param in template["parameters"].items():
        if pname in params:
            value = check_value(param, params[pname], name=pname, template=name)
        elif "default" in param:
            value = param["default"]
        elif is_required(template, pname):
            raise TemplateError(
                f"needs a value: the workflow has no {param['type']} at {param['targets'][0]} and the template no default",
                template=name,
                parameter=pname,
            )
        else:
            continue
        if param["type"] in MEDIA_TYPES and resolve_asset is not None:
            value = resolve_asset(value, pname)
        for target in param["targets"]:
            node_id, _, input_name = target.rpartition(".")
            prompt[node_id]["inputs"][input_name] = copy.deepcopy(value)
    return prompt


def sweep(template: dict, base_params: dict, sweep: dict, *, limit: int) -> list[dict]:
    """The cartesian product of the swept values, each combination over base_params (a swept name overrides
    it), in a stable order: the first swept parameter varies slowest. More than `limit` combinations is a
    TemplateError saying how many, raised before any is built. Every value is checked (check_value); each
    list is non-empty and at most MAX_SWEEP_VALUES long. No sweep ({}) is one combination: base_params."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be an integer >= 0, got {limit!r}")
    name = template["name"]
    _check_names(template, base_params, "params")
    _check_names(template, sweep, "sweep")
    total = 1
    for pname, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise TemplateError(
                f"sweep must give a non-empty list of values, got {kind(values)}", template=name, parameter=pname
            )
        if len(values) > MAX_SWEEP_VALUES:
            raise TemplateError(
                f"sweep has {len(values)} values, more than the limit of {MAX_SWEEP_VALUES}",
                template=name,
                parameter=pname,
            )
        total *= len(values)
    if total > limit:
        shown_total = str(total) if total < 10**12 else f"about 10^{len(str(total)) - 1}"
        raise TemplateError(
            f"the sweep would make {shown_total} combinations, more than the limit of {limit}", template=name
        )
    params = template["parameters"]
    for pname, value in base_params.items():
        check_value(params[pname], value, name=pname, template=name)
    for pname, values in sweep.items():
        for i, value in enumerate(values):
            check_value(params[pname], value, name=pname, template=name, label=f"sweep value #{i + 1}")
    keys = list(sweep)
    return [{**base_params, **dict(zip(keys, combo, strict=True))} for combo in itertools.product(*sweep.values())]
