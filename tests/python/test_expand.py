"""Unit tests of the count / sweep expansion (comfy_nodes.api.expand): pure functions, no store."""

from __future__ import annotations

import copy
import json
import random

import pytest

from comfy_nodes.api import expand as ex


def prompt() -> dict:
    return {
        "3": {
            "class_type": "KSampler",
            "inputs": {"seed": 42, "steps": 20, "cfg": 7.0, "sampler_name": "euler", "model": ["4", 0]},
        },
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
        "7": {"class_type": "SamplerCustom", "inputs": {"noise_seed": 5, "cfg": 8.0}},
        "9": {"class_type": "Seeded", "inputs": {"seed": ["12", 0]}},  # a link: never touched
        "10": {"class_type": "Flag", "inputs": {"seed": True}},  # not an int
        "a.b": {"class_type": "Dotted", "inputs": {"x.y": 1, "z": 2}},  # dots in ids and names
    }


# ---- check_count -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [(None, 1), (1, 1), (7, 7), (ex.MAX_JOBS, ex.MAX_JOBS)])
def test_check_count_accepts(value, expected):
    assert ex.check_count(value) == expected


@pytest.mark.parametrize(
    "value, kind",
    [
        (0, ex.ExpansionError),
        (-3, ex.ExpansionError),
        (1.5, ex.ExpansionError),
        ("2", ex.ExpansionError),
        (True, ex.ExpansionError),
        (ex.MAX_JOBS + 1, ex.TooManyJobs),
    ],
)
def test_check_count_refuses(value, kind):
    with pytest.raises(kind) as info:
        ex.check_count(value)
    assert "count" in str(info.value)


# ---- parse_sweep -----------------------------------------------------------------------------------------


def test_parse_sweep_axes_in_order():
    axes = ex.parse_sweep(prompt(), {"3.cfg": [5, 6], "4.ckpt_name": ["a", "b", "c"]})
    assert [(a.key, a.node_id, a.input, a.values) for a in axes] == [
        ("3.cfg", "3", "cfg", (5, 6)),
        ("4.ckpt_name", "4", "ckpt_name", ("a", "b", "c")),
    ]
    assert ex.parse_sweep(prompt(), None) == []
    assert ex.parse_sweep(prompt(), {}) == []


def test_parse_sweep_dotted_ids_and_names():
    axes = ex.parse_sweep(prompt(), {"a.b.z": [1], "a.b.x.y": [2]})
    assert [(a.node_id, a.input) for a in axes] == [("a.b", "z"), ("a.b", "x.y")]


@pytest.mark.parametrize(
    "sweep, needle",
    [
        ([1, 2], "object"),
        ({"3cfg": [1]}, "'3cfg'"),
        ({"99.cfg": [1]}, "no node '99'"),
        ({"3.nope": [1]}, "no input 'nope'"),
        ({"3.": [1]}, "'3.'"),
        ({"3.cfg": []}, "empty"),
        ({"3.cfg": 5}, "list"),
        ({"3.cfg": {"a": 1}}, "list"),
    ],
)
def test_parse_sweep_refuses(sweep, needle):
    with pytest.raises(ex.ExpansionError) as info:
        ex.parse_sweep(prompt(), sweep)
    assert needle in str(info.value)


# ---- job_count / size ------------------------------------------------------------------------------------


def test_job_count_is_the_product_and_capped():
    axes = ex.parse_sweep(prompt(), {"3.cfg": [1, 2, 3], "3.steps": [10, 20]})
    assert ex.job_count(1, axes) == 6
    assert ex.job_count(4, axes) == 24
    assert ex.job_count(5, []) == 5
    big = ex.parse_sweep(prompt(), {"3.cfg": list(range(100)), "3.steps": list(range(101))})
    with pytest.raises(ex.TooManyJobs) as info:
        ex.job_count(1, big)
    assert "10000" in str(info.value) and "1 x 100 x 101" in str(info.value)
    assert ex.job_count(1, big, max_jobs=20000) == 10100


def test_check_size():
    ex.check_size(1000, 10, limit=10000)
    with pytest.raises(ex.TooManyJobs):
        ex.check_size(1001, 10, limit=10000)


# ---- seeds -----------------------------------------------------------------------------------------------


def test_seed_inputs_only_ints_named_seed():
    assert ex.seed_inputs(prompt()) == [("3", "seed"), ("7", "noise_seed")]
    assert ex.seed_inputs(prompt(), exclude=[("3", "seed")]) == [("7", "noise_seed")]


def test_draw_seeds_distinct_and_in_range():
    seeds = ex.draw_seeds(5000, random.Random(1))
    assert len(set(seeds)) == 5000
    assert all(0 <= s < ex.SEED_LIMIT for s in seeds)


# ---- apply_values ----------------------------------------------------------------------------------------


def test_apply_values_copies_only_what_changes():
    p = prompt()
    before = copy.deepcopy(p)
    out = ex.apply_values(p, {("3", "cfg"): 9.5})
    assert out["3"]["inputs"]["cfg"] == 9.5
    assert p == before  # the original is untouched
    assert out["4"] is p["4"]  # untouched nodes are shared
    assert out["3"] is not p["3"]
    assert ex.apply_values(p, {}) is p


# ---- expand ----------------------------------------------------------------------------------------------


def test_expand_single_copy_keeps_prompt():
    jobs = ex.expand(prompt(), count=1)
    assert len(jobs) == 1
    assert jobs[0].prompt == prompt()
    assert jobs[0].seeds == {}


def test_expand_count_gives_distinct_random_seeds():
    jobs = ex.expand(prompt(), count=50, rng=random.Random(7))
    assert len(jobs) == 50
    seeds3 = [j.prompt["3"]["inputs"]["seed"] for j in jobs]
    seeds7 = [j.prompt["7"]["inputs"]["noise_seed"] for j in jobs]
    assert len(set(seeds3)) == 50 and len(set(seeds7)) == 50
    assert [j.copy for j in jobs] == list(range(50))
    for j in jobs:
        assert j.seeds == {
            "3.seed": j.prompt["3"]["inputs"]["seed"],
            "7.noise_seed": j.prompt["7"]["inputs"]["noise_seed"],
        }
        # everything else as given
        assert j.prompt["9"]["inputs"]["seed"] == ["12", 0]
        assert j.prompt["10"]["inputs"]["seed"] is True
        assert j.prompt["3"]["inputs"]["steps"] == 20
        json.dumps(j.prompt)  # serialisable


def test_expand_keep_seeds():
    jobs = ex.expand(prompt(), count=3, keep_seeds=True)
    assert [j.prompt for j in jobs] == [prompt()] * 3
    assert all(j.seeds == {} for j in jobs)


def test_expand_sweep_is_cartesian_last_axis_fastest():
    axes = ex.parse_sweep(prompt(), {"3.cfg": [5, 6], "3.sampler_name": ["euler", "ddim", "lcm"]})
    jobs = ex.expand(prompt(), axes=axes)
    assert len(jobs) == 6
    got = [(j.prompt["3"]["inputs"]["cfg"], j.prompt["3"]["inputs"]["sampler_name"]) for j in jobs]
    assert got == [(5, "euler"), (5, "ddim"), (5, "lcm"), (6, "euler"), (6, "ddim"), (6, "lcm")]
    assert jobs[4].params == {"3.cfg": 6, "3.sampler_name": "ddim"}
    # a sweep alone keeps the seeds (a comparison on one image)
    assert {j.prompt["3"]["inputs"]["seed"] for j in jobs} == {42}


def test_expand_sweep_with_count_shares_seeds_per_copy():
    axes = ex.parse_sweep(prompt(), {"3.cfg": [5, 6, 7]})
    jobs = ex.expand(prompt(), count=4, axes=axes, rng=random.Random(3))
    assert len(jobs) == 12
    assert [(j.params["3.cfg"], j.copy) for j in jobs] == [(c, k) for c in (5, 6, 7) for k in range(4)]
    by_copy = {}
    for j in jobs:
        by_copy.setdefault(j.copy, set()).add(j.prompt["3"]["inputs"]["seed"])
    assert all(len(s) == 1 for s in by_copy.values())  # same seed across the sweep for one copy
    assert len({next(iter(s)) for s in by_copy.values()}) == 4  # copies differ


def test_expand_swept_seed_is_not_randomised():
    axes = ex.parse_sweep(prompt(), {"3.seed": [1, 2]})
    jobs = ex.expand(prompt(), count=3, axes=axes)
    assert [j.prompt["3"]["inputs"]["seed"] for j in jobs] == [1, 1, 1, 2, 2, 2]
    assert len({j.prompt["7"]["inputs"]["noise_seed"] for j in jobs[:3]}) == 3
    assert all("3.seed" not in j.seeds for j in jobs)


def test_expand_refuses_too_many():
    axes = ex.parse_sweep(prompt(), {"3.cfg": list(range(200))})
    with pytest.raises(ex.TooManyJobs):
        ex.expand(prompt(), count=51, axes=axes)


def test_expand_does_not_mutate_input():
    p = prompt()
    before = copy.deepcopy(p)
    axes = ex.parse_sweep(p, {"3.cfg": [1, 2]})
    ex.expand(p, count=3, axes=axes)
    assert p == before


# ---- prompt ids, prompt text -----------------------------------------------------------------------------


def test_derived_prompt_ids():
    assert ex.derived_prompt_ids("p", 3) == ["p-0001", "p-0002", "p-0003"]
    ids = ex.derived_prompt_ids("x", 10000)
    assert ids[0] == "x-00001" and ids[-1] == "x-10000"
    assert len(set(ids)) == 10000


def test_prompt_object():
    assert ex.prompt_object({"1": {}}) == {"1": {}}
    assert ex.prompt_object('{"1": {"class_type": "A", "inputs": {}}}') == {"1": {"class_type": "A", "inputs": {}}}
    with pytest.raises(ex.ExpansionError, match="JSON"):
        ex.prompt_object("{nope")
    with pytest.raises(ex.ExpansionError, match="object"):
        ex.prompt_object("[1]")
