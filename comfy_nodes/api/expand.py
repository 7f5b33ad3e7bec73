"""Expanding one submitted prompt into many jobs: `count` copies and `sweep` combinations. Pure functions.

    sweep = {"3.cfg": [5, 7.5], "3.sampler_name": ["euler", "dpmpp_2m"]}, count = 2   -> 2 x 2 x 2 = 8 jobs

Order: the cartesian product of the sweep axes in the order given (the last axis varies fastest), and
within each combination its copies. Each job gets its own prompt dict; nodes that are not changed are
shared between them (nobody mutates a prompt after expansion).

Seeds: with count > 1, every integer input named `seed` or `noise_seed` gets a fresh random value per copy
(copies never share a value), unless keep_seeds is set or the input is swept. Copy k of every combination
gets the same seeds, so a sweep with count > 1 is a comparable grid per seed. A single copy (count = 1,
with or without a sweep) keeps the prompt's own seeds: a sweep compares settings on one image.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

MAX_JOBS = 10000  # default jobs one request may create (count x combinations); limits.py
MAX_EXPANDED_BYTES = 64 << 20  # default prompt + workflow bytes one request may store; limits.py
SEED_INPUTS = ("seed", "noise_seed")
# Fresh seeds are drawn from [0, 2**32): valid for every sampler and for custom nodes that hand the seed to
# numpy (which refuses seeds >= 2**32); 4 billion values keep copies apart.
SEED_LIMIT = 2**32


class ExpansionError(ValueError):
    """The count or sweep cannot be applied to this prompt (a 400)."""


class TooManyJobs(ExpansionError):
    """The request would create more jobs (or prompt bytes) than allowed (a 413)."""


@dataclass(frozen=True)
class Axis:
    """One sweep axis: the values of one input of one node."""

    key: str  # as given: "<node_id>.<input>"
    node_id: str
    input: str
    values: tuple


@dataclass
class Expanded:
    """One job of an expansion."""

    prompt: dict
    params: dict = field(default_factory=dict)  # sweep key -> value of this job
    copy: int = 0  # 0-based copy index within its combination
    seeds: dict = field(default_factory=dict)  # "<node_id>.<input>" -> seed given to this job


def check_count(count: Any, max_jobs: int | None = None) -> int:
    """count as an int in 1..max_jobs (MAX_JOBS), or ExpansionError (TooManyJobs above max_jobs)."""
    max_jobs = MAX_JOBS if max_jobs is None else max_jobs
    if count is None:
        return 1
    if isinstance(count, bool) or not isinstance(count, int):
        raise ExpansionError(f"count must be an integer, got {type(count).__name__}")
    if count < 1:
        raise ExpansionError(f"count must be at least 1, got {count}")
    if count > max_jobs:
        shown = str(count) if count < 10**12 else f"of {len(str(count))} digits"
        raise TooManyJobs(f"count {shown} is more than the limit of {max_jobs} jobs per request (max_jobs_per_request)")
    return count


def _split_key(prompt: dict, key: str) -> tuple[str, str]:
    """ "<node_id>.<input>" -> (node_id, input). Node ids may contain dots (rare), so every dot is tried and
    the split whose node exists in the prompt wins."""
    if "." not in key:
        raise ExpansionError(f"sweep key '{key}' must be '<node_id>.<input_name>', e.g. '3.cfg'")
    dots = [i for i, c in enumerate(key) if c == "."]
    for i in dots:
        node_id, name = key[:i], key[i + 1 :]
        if node_id in prompt and name:
            return node_id, name
    node_id = key[: dots[0]]
    raise ExpansionError(f"sweep key '{key}': the prompt has no node '{node_id}'")


def parse_sweep(prompt: dict, sweep: Any) -> list[Axis]:
    """Checks a sweep object against the prompt: every key names an existing node and one of its inputs,
    every value is a non-empty list. Returns the axes in the order given."""
    if sweep is None:
        return []
    if not isinstance(sweep, dict):
        raise ExpansionError(
            f'sweep must be an object {{"<node_id>.<input>": [values...]}}, got {type(sweep).__name__}'
        )
    axes = []
    for key, values in sweep.items():
        node_id, name = _split_key(prompt, key)
        node = prompt[node_id]
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict) or name not in inputs:
            known = ", ".join(sorted(inputs)) if isinstance(inputs, dict) and inputs else "none"
            raise ExpansionError(f"sweep key '{key}': node '{node_id}' has no input '{name}' (its inputs: {known})")
        if not isinstance(values, list):
            raise ExpansionError(f"sweep '{key}' must be a list of values, got {type(values).__name__}")
        if not values:
            raise ExpansionError(f"sweep '{key}' is an empty list; give at least one value")
        axes.append(Axis(key, node_id, name, tuple(values)))
    if len({(a.node_id, a.input) for a in axes}) != len(axes):
        raise ExpansionError("sweep names the same input twice")
    return axes


def job_count(count: int, axes: Sequence[Axis], max_jobs: int | None = None) -> int:
    """count x the number of combinations; TooManyJobs past max_jobs (MAX_JOBS) without building anything."""
    max_jobs = MAX_JOBS if max_jobs is None else max_jobs
    total = count
    for a in axes:
        total *= len(a.values)
        if total > max_jobs:
            sizes = " x ".join([str(count)] + [str(len(x.values)) for x in axes])
            raise TooManyJobs(
                f"this request would create {sizes} jobs, more than the limit of {max_jobs} "
                "per request (max_jobs_per_request); split it"
            )
    return total


def seed_inputs(prompt: dict, exclude: Iterable[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """(node_id, input) of every integer input named seed / noise_seed (links and other types are left
    alone), in prompt order, minus `exclude`."""
    skip = set(exclude)
    found = []
    for node_id, node in prompt.items():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            continue
        for name in SEED_INPUTS:
            v = inputs.get(name)
            if isinstance(v, int) and not isinstance(v, bool) and (node_id, name) not in skip:
                found.append((node_id, name))
    return found


def draw_seeds(n: int, rng: random.Random | None = None) -> list[int]:
    """n distinct seeds from [0, SEED_LIMIT)."""
    rng = rng or random.SystemRandom()
    return rng.sample(range(SEED_LIMIT), n)


def apply_values(prompt: dict, values: dict[tuple[str, str], Any]) -> dict:
    """A copy of prompt with the given (node_id, input) values set; untouched nodes are shared."""
    if not values:
        return prompt
    out = dict(prompt)
    by_node: dict[str, dict[str, Any]] = {}
    for (node_id, name), v in values.items():
        by_node.setdefault(node_id, {})[name] = v
    for node_id, changes in by_node.items():
        node = dict(prompt[node_id])
        node["inputs"] = {**node["inputs"], **changes}
        out[node_id] = node
    return out


def expand(
    prompt: dict,
    *,
    count: int = 1,
    axes: Sequence[Axis] = (),
    keep_seeds: bool = False,
    rng: random.Random | None = None,
    max_jobs: int | None = None,
) -> list[Expanded]:
    """The jobs for `count` copies of every combination of `axes` (see the module doc for order and seeds)."""
    count = check_count(count, max_jobs)
    job_count(count, axes, max_jobs)
    swept = {(a.node_id, a.input) for a in axes}
    seeds = [] if keep_seeds or count == 1 else seed_inputs(prompt, exclude=swept)
    # per seed input, one distinct value per copy
    drawn = {key: draw_seeds(count, rng) for key in seeds}
    combos: list[tuple] = [()]
    for a in axes:
        combos = [c + (v,) for c in combos for v in a.values]
    jobs = []
    for combo in combos:
        params = {a.key: v for a, v in zip(axes, combo, strict=True)}
        base = {(a.node_id, a.input): v for a, v in zip(axes, combo, strict=True)}
        for k in range(count):
            seed_values = {key: drawn[key][k] for key in seeds}
            job_prompt = apply_values(prompt, {**base, **seed_values})
            jobs.append(
                Expanded(
                    prompt=job_prompt, params=params, copy=k, seeds={f"{n}.{i}": v for (n, i), v in seed_values.items()}
                )
            )
    return jobs


def derived_prompt_ids(prefix: str, n: int) -> list[str]:
    """prefix-0001 ... prefix-NNNN (1-based, at least 4 digits) for the n jobs of one request."""
    width = max(4, len(str(n)))
    return [f"{prefix}-{i:0{width}d}" for i in range(1, n + 1)]


def check_size(job_bytes: int, jobs: int, limit: int | None = None) -> None:
    """TooManyJobs when `jobs` jobs storing up to job_bytes each (prompt + workflow) would exceed limit
    (MAX_EXPANDED_BYTES) bytes."""
    limit = MAX_EXPANDED_BYTES if limit is None else limit
    if job_bytes * jobs > limit:
        raise TooManyJobs(
            f"{jobs} jobs of up to {job_bytes} bytes each (prompt + workflow) are more than the limit "
            f"of {limit} bytes per request (max_stored_bytes_per_request); send fewer jobs per request"
        )


def prompt_object(prompt: Any) -> dict:
    """A prompt given as a JSON string or object, as a dict (the caller validated it already)."""
    if isinstance(prompt, dict):
        return prompt
    try:
        # (read as the store reads it, which skips a leading byte order mark: inputs/graph.parse_graph)
        value = json.loads(prompt.removeprefix("\ufeff") if isinstance(prompt, str) else prompt)
    except (TypeError, ValueError, RecursionError) as e:
        raise ExpansionError(f"prompt is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise ExpansionError(f"prompt must be a JSON object, got {type(value).__name__}")
    return value
