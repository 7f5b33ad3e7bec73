"""Workflow templates, the pure logic (comfy_nodes/templates): parsing a template and its parameters against
ComfyUI's /object_info, checking values, the JSON Schema of the params, rendering a prompt and sweeping values,
and loading a folder of templates files (ours, and seed 003's task_types config read as it is).

fixtures/object_info_templates.json holds KSampler, CheckpointLoaderSimple, LoadImage and SaveImage exactly as
recorded from a real ComfyUI v0.8.0's GET /object_info (the project's recordings, comfyui-api/
object_info_excerpt.json). CLIPTextEncode and EmptyLatentImage were not recorded, so their inputs here are
typed from the workflow's values: both ways of inferring a type are exercised by one workflow.

No network, no native module: these are pure functions over dicts and files in tmp_path.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from jsonschema import Draft202012Validator

from comfy_nodes.templates import documents
from comfy_nodes.templates import render as render_module
from comfy_nodes.templates.definition import (
    NAME_RE,
    PARAM_NAME_RE,
    PARAM_TYPES,
    TemplateError,
    check_value,
    parse_template,
)
from comfy_nodes.templates.folder import load_folder
from comfy_nodes.templates.render import render, sweep
from comfy_nodes.templates.schema import json_schema

OBJECT_INFO = json.loads((Path(__file__).parent / "fixtures" / "object_info_templates.json").read_text("utf-8"))

# ComfyUI's default txt2img graph as "Export (API)" writes it, plus a LoadImage that feeds nothing.
WORKFLOW = {
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 156680208700286,
            "steps": 20,
            "cfg": 8,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
    "6": {
        "class_type": "CLIPTextEncode",
        "inputs": {"text": "beautiful scenery, purple galaxy bottle", "clip": ["4", 1]},
    },
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    "10": {"class_type": "LoadImage", "inputs": {"image": "example.png"}, "_meta": {"title": "Load Image"}},
}


def workflow() -> dict:
    return copy.deepcopy(WORKFLOW)


def template(parameters: dict, **extra) -> dict:
    return {"name": "txt2img", "workflow": workflow(), "parameters": parameters, **extra}


def parse(parameters: dict, object_info=OBJECT_INFO, **extra) -> dict:
    return parse_template(template(parameters, **extra), object_info=object_info)


def refused(parameters: dict, object_info=OBJECT_INFO, **extra) -> TemplateError:
    with pytest.raises(TemplateError) as e:
        parse(parameters, object_info, **extra)
    return e.value


FULL = {
    "prompt": {"target": "6.text", "title": "Prompt", "description": "What to draw"},
    "negative": {"target": "7.text", "default": "blurry"},
    "seed": {"target": "3.seed"},
    "steps": {"target": "3.steps", "min": 1, "max": 60, "default": 25},
    "cfg": {"target": "3.cfg", "max": 20},
    "sampler": {"target": "3.sampler_name", "choices": ["euler", "dpmpp_2m"]},
    "scheduler": {"target": "3.scheduler"},
    "checkpoint": {"target": "4.ckpt_name"},
    "size": {"targets": ["5.width", "5.height"], "step": 64},
    "image": {"target": "10.image"},
    "prefix": {"target": "9.filename_prefix"},
}


# ---- parse_template: the normal form --------------------------------------------------------------------


def test_fixture_is_the_recorded_object_info():
    assert set(OBJECT_INFO) == {"KSampler", "CheckpointLoaderSimple", "LoadImage", "SaveImage"}
    assert OBJECT_INFO["KSampler"]["input"]["required"]["steps"][0] == "INT"
    assert OBJECT_INFO["LoadImage"]["input"]["required"]["image"][1] == {"image_upload": True}


def test_normal_form_types_and_limits_from_object_info():
    t = parse(FULL, description="Text to image", category="text_to_image")
    assert (t["name"], t["description"], t["category"]) == ("txt2img", "Text to image", "text_to_image")
    assert t["workflow"] == WORKFLOW
    p = t["parameters"]
    assert list(p) == list(FULL)
    assert p["prompt"] == {"type": "string", "targets": ["6.text"], "title": "Prompt", "description": "What to draw"}
    assert p["negative"]["default"] == "blurry" and p["negative"]["title"] == "negative"
    assert p["seed"] == {
        "type": "integer",
        "targets": ["3.seed"],
        "title": "seed",
        "description": "",
        "min": 0,
        "max": 18446744073709551615,
    }
    assert (p["steps"]["min"], p["steps"]["max"], p["steps"]["default"]) == (1, 60, 25)
    # cfg: FLOAT from /object_info although the workflow wrote 8; ComfyUI's min and step kept, max narrowed
    assert p["cfg"]["type"] == "number" and (p["cfg"]["min"], p["cfg"]["max"], p["cfg"]["step"]) == (0.0, 20, 0.1)
    assert p["sampler"] == {**p["sampler"], "type": "combo", "choices": ["euler", "dpmpp_2m"]}
    assert p["scheduler"]["choices"][:3] == ["simple", "sgm_uniform", "karras"] and len(p["scheduler"]["choices"]) == 9
    # this ComfyUI had no checkpoints: an empty choice list is "not known", so any name stays possible
    assert p["checkpoint"]["type"] == "combo" and "choices" not in p["checkpoint"]
    assert p["size"] == {
        "type": "integer",
        "targets": ["5.width", "5.height"],
        "title": "size",
        "description": "",
        "step": 64,
    }
    assert p["image"]["type"] == "image" and "choices" not in p["image"]  # an upload input takes any file
    assert p["prefix"]["type"] == "string"


def test_result_shares_nothing_with_the_raw_template():
    raw = template(
        {"steps": {"target": "3.steps", "default": 30}, "sampler": {"target": "3.sampler_name", "choices": ["euler"]}}
    )
    t = parse_template(raw, object_info=OBJECT_INFO)
    raw["workflow"]["3"]["inputs"]["steps"] = 99
    raw["parameters"]["sampler"]["choices"].append("heun")
    assert t["workflow"]["3"]["inputs"]["steps"] == 20
    assert t["parameters"]["sampler"]["choices"] == ["euler"]


def test_target_forms_are_equivalent():
    forms = [
        {"target": "3.steps"},
        {"targets": ["3.steps"]},
        {"targets": [{"node": "3", "input": "steps"}]},
        {"targets": [{"node": 3, "input": "steps"}]},
        {"node_id": "3", "input_name": "steps"},
        {"node_id": 3, "input_name": "steps"},
    ]
    for form in forms:
        assert parse({"steps": form})["parameters"]["steps"]["targets"] == ["3.steps"], form


def test_seed_003_parameter_form():
    p = parse(
        {
            "prompt": {"node_id": "6", "input_name": "text", "default_value": ""},
            "width": {"node_id": 5, "input_name": "width", "default_value": 512},
        }
    )["parameters"]
    assert p["prompt"] == {"type": "string", "targets": ["6.text"], "title": "prompt", "description": "", "default": ""}
    assert p["width"]["targets"] == ["5.width"] and p["width"]["default"] == 512
    e = refused({"p": {"node_id": "6", "input_name": "text", "default": "a", "default_value": "b"}})
    assert "not both" in str(e)


def test_targets_split_at_the_last_dot():
    wf = {
        "12:3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a"}},
        "a.b": {"class_type": "X", "inputs": {"v": 1}},
    }
    t = parse_template(
        {"name": "groups", "workflow": wf, "parameters": {"t": {"target": "12:3.text"}, "v": {"target": "a.b.v"}}}
    )
    assert t["parameters"]["t"]["targets"] == ["12:3.text"] and t["parameters"]["v"]["targets"] == ["a.b.v"]
    r = render(t, {"t": "b", "v": 2})
    assert r["12:3"]["inputs"]["text"] == "b" and r["a.b"]["inputs"]["v"] == 2


def test_types_from_workflow_values_without_object_info():
    wf = {
        "1": {"class_type": "Custom", "inputs": {"b": True, "i": 3, "f": 0.5, "s": "x", "ref": {"comfymq_input": "ab"}}}
    }
    t = parse_template(
        {"name": "values", "workflow": wf, "parameters": {k: {"target": f"1.{k}"} for k in ("b", "i", "f", "s")}}
    )
    assert {k: p["type"] for k, p in t["parameters"].items()} == {
        "b": "boolean",
        "i": "integer",
        "f": "number",
        "s": "string",
    }
    with pytest.raises(TemplateError, match="cannot tell its type from target '1.ref'.*give 'type'") as e:
        parse_template({"name": "values", "workflow": wf, "parameters": {"ref": {"target": "1.ref"}}})
    assert e.value.parameter == "ref"
    t = parse_template({"name": "values", "workflow": wf, "parameters": {"ref": {"target": "1.ref", "type": "image"}}})
    assert t["parameters"]["ref"]["type"] == "image"


def test_targets_must_agree_in_type():
    e = refused({"x": {"targets": ["3.steps", "6.text"]}})
    assert (
        "disagree" in str(e)
        and "'3.steps' is integer (object_info)" in str(e)
        and "'6.text' is string (workflow)" in str(e)
    )
    # 8 and 7.5 in two inputs typed only by their values: JSON wrote one without a fraction, so both are numbers
    wf = {"1": {"class_type": "A", "inputs": {"x": 8}}, "2": {"class_type": "A", "inputs": {"x": 7.5}}}
    t = parse_template({"name": "n", "workflow": wf, "parameters": {"x": {"targets": ["1.x", "2.x"]}}})
    assert t["parameters"]["x"]["type"] == "number"
    # ... but /object_info's INT is not widened
    e = refused({"x": {"targets": ["3.steps", "3.cfg"]}})
    assert "disagree" in str(e)


def test_declared_type_is_checked_against_object_info_and_values():
    assert parse({"cfg": {"target": "3.cfg", "type": "number"}})["parameters"]["cfg"]["type"] == "number"
    e = refused({"steps": {"target": "3.steps", "type": "number"}})
    assert "declared number, but ComfyUI's /object_info says target '3.steps' is integer" in str(e)
    e = refused({"image": {"target": "10.image", "type": "combo"}})
    assert "is image" in str(e)
    e = refused({"steps": {"target": "3.steps", "type": "float"}})
    assert "'type' must be one of string, integer" in str(e)
    # from values: a number may feed an int-looking value, a combo a string, a media type a string
    p = parse(
        {
            "w": {"target": "5.width", "type": "number"},
            "t": {"target": "6.text", "type": "combo", "choices": ["a", "b"]},
            "i": {"target": "7.text", "type": "image"},
        }
    )["parameters"]
    assert [p[k]["type"] for k in ("w", "t", "i")] == ["number", "combo", "image"]
    e = refused({"w": {"target": "5.width", "type": "boolean"}})
    assert "the workflow's value says target '5.width' is integer" in str(e)
    assert set(PARAM_TYPES) == {"string", "integer", "number", "boolean", "combo", "image", "video", "audio"}


# ---- limits ---------------------------------------------------------------------------------------------


def test_limits_narrow_object_info_and_must_lie_within_it():
    p = parse(
        {"steps": {"target": "3.steps", "min": 5, "max": 50, "step": 5}, "denoise": {"target": "3.denoise", "min": 0.5}}
    )["parameters"]
    assert (p["steps"]["min"], p["steps"]["max"], p["steps"]["step"]) == (5, 50, 5)
    assert (p["denoise"]["min"], p["denoise"]["max"], p["denoise"]["step"]) == (0.5, 1.0, 0.01)
    e = refused({"steps": {"target": "3.steps", "min": 0}})
    assert "'min' 0 is below 1, ComfyUI's minimum for KSampler.steps" in str(e) and e.parameter == "steps"
    e = refused({"steps": {"target": "3.steps", "max": 10001}})
    assert "'max' 10001 is above 10000, ComfyUI's maximum for KSampler.steps" in str(e)
    e = refused({"denoise": {"target": "3.denoise", "max": 1.5}})
    assert "above 1.0" in str(e)
    e = refused({"steps": {"target": "3.steps", "min": 30, "max": 20}})
    assert "'min' 30 is above 'max' 20" in str(e)


def test_declared_choices_must_be_among_comfyuis():
    e = refused({"sampler": {"target": "3.sampler_name", "choices": ["euler", "my_sampler"]}})
    assert "'my_sampler'" in str(e) and "not offered by ComfyUI for KSampler.sampler_name" in str(e)
    e = refused({"sampler": {"target": "3.sampler_name", "choices": ["euler", "euler"]}})
    assert "twice" in str(e)
    e = refused({"sampler": {"target": "3.sampler_name", "choices": []}})
    assert "non-empty list" in str(e)
    e = refused({"sampler": {"target": "3.sampler_name", "choices": ["euler", True]}})
    assert "a choice must be a string or a number" in str(e)
    e = refused({"sampler": {"target": "3.sampler_name", "choices": ["x"] * 10001}})
    assert "10001 choices, more than the limit of 10000" in str(e)


def test_limits_kept_as_given_without_object_info():
    p = parse({"steps": {"target": "3.steps", "min": 0, "max": 100000, "step": 3}}, object_info=None)["parameters"][
        "steps"
    ]
    assert (p["type"], p["min"], p["max"], p["step"]) == ("integer", 0, 100000, 3)
    p = parse({"text": {"target": "6.text", "type": "combo", "choices": ["a", "b"]}}, object_info=None)["parameters"][
        "text"
    ]
    assert p["choices"] == ["a", "b"]
    for bad, message in [
        ({"min": 5, "max": 1}, "'min' 5 is above 'max' 1"),
        ({"step": 0}, "'step' must be more than 0"),
        ({"step": -1}, "'step' must be more than 0"),
        ({"type": "number", "min": math.nan}, "'min' must be a finite number"),
        ({"type": "number", "max": math.inf}, "'max' must be a finite number"),
        ({"min": math.nan}, "'min' must be an integer, got nan"),
        ({"min": 1.5}, "'min' must be an integer"),
        ({"min": True}, "'min' must be a number, got a boolean"),
        ({"choices": ["a"]}, "'choices' does not apply to an integer parameter"),
        ({"multiline": True}, "'multiline' does not apply"),
    ]:
        e = refused({"w": {"target": "5.width", **bad}}, object_info=None)
        assert message in str(e), (bad, str(e))
    # cfg 8 reads as an integer without /object_info: declaring it a number allows fractional limits
    p = parse({"c": {"target": "3.cfg", "type": "number", "min": 0.5, "max": 9.5}}, object_info=None)["parameters"]["c"]
    assert (p["type"], p["min"], p["max"]) == ("number", 0.5, 9.5)


def test_multiline_and_limits_that_do_not_apply():
    info = {
        "CLIPTextEncode": {"input": {"required": {"text": ["STRING", {"multiline": True, "dynamicPrompts": True}]}}}
    }
    p = parse(
        {"prompt": {"target": "6.text"}, "prefix": {"target": "9.filename_prefix"}}, object_info={**OBJECT_INFO, **info}
    )["parameters"]
    assert p["prompt"]["multiline"] is True and "multiline" not in p["prefix"]
    p = parse({"prompt": {"target": "6.text", "multiline": False}}, object_info=info)["parameters"]
    assert p["prompt"]["multiline"] is False
    assert "'min' does not apply to an image parameter" in str(refused({"i": {"target": "10.image", "min": 1}}))
    assert "'multiline' must be true or false" in str(refused({"p": {"target": "6.text", "multiline": "yes"}}))


def test_combo_spec_shapes_and_multiple_targets():
    info = {
        "A": {"input": {"required": {"mode": ["COMBO", {"options": ["x", "y", "z"]}]}}},
        "B": {"input": {"optional": {"mode": [["y", "z", "w"], {}]}}},
        "C": {"input": {"required": {"mode": [["q"], {}]}}},
        "V": {
            "input": {
                "required": {
                    "file": [["a.mp4"], {"video_upload": True}],
                    "sound": ["COMBO", {"options": [], "audio_upload": True}],
                }
            }
        },
    }
    wf = {
        "1": {"class_type": "A", "inputs": {"mode": "y"}},
        "2": {"class_type": "B", "inputs": {"mode": "z"}},
        "3": {"class_type": "C", "inputs": {"mode": "q"}},
        "4": {"class_type": "V", "inputs": {"file": "a.mp4", "sound": ""}},
    }
    t = parse_template(
        {
            "name": "c",
            "workflow": wf,
            "parameters": {
                "m": {"targets": ["1.mode", "2.mode"]},
                "v": {"target": "4.file"},
                "s": {"target": "4.sound"},
            },
        },
        object_info=info,
    )
    assert t["parameters"]["m"]["choices"] == ["y", "z"]  # what both accept, in the first's order
    assert (t["parameters"]["v"]["type"], t["parameters"]["s"]["type"]) == ("video", "audio")
    with pytest.raises(TemplateError, match="share no choice"):
        parse_template(
            {"name": "c", "workflow": wf, "parameters": {"m": {"targets": ["1.mode", "3.mode"]}}}, object_info=info
        )


# ---- defaults -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "param, message",
    [
        ({"target": "3.steps", "default": 0}, "default 0 is below the minimum 1"),
        ({"target": "3.steps", "default": 10001}, "default 10001 is above the maximum 10000"),
        ({"target": "3.steps", "default": True}, "default must be an integer, got a boolean"),
        ({"target": "5.width", "default": 512.0}, "default must be an integer, got the number 512.0"),
        ({"target": "3.steps", "default": "20"}, "default must be an integer, got a string"),
        ({"target": "3.cfg", "default": False}, "default must be a number, got a boolean"),
        ({"target": "3.sampler_name", "default": "fast"}, "default 'fast' is not one of the 44 choices"),
        (
            {"target": "3.sampler_name", "choices": ["euler"], "default": "heun"},
            "default 'heun' is not one of the 1 choices",
        ),
        ({"target": "6.text", "default": 5}, "default must be a string, got an integer"),
        ({"target": "10.image", "default": ""}, "default must name an image"),
        ({"target": "10.image", "default": {"asset_hash": "blake3:00", "asset_id": "x"}}, "exactly one of"),
    ],
)
def test_invalid_defaults_are_refused(param, message):
    e = refused({"p": param})
    assert message in str(e) and e.parameter == "p" and e.template == "txt2img" and e.where == "request"


def test_valid_defaults_are_kept():
    p = parse({
        "cfg": {"target": "3.cfg", "default": 7},  # an int is a number
        "img": {"target": "10.image", "default": {"asset_hash": "blake3:" + "0" * 64}},
        "img2": {"target": "9.filename_prefix", "type": "image", "default": "blake3:" + "a" * 64},
    })["parameters"]  # fmt: skip
    assert p["cfg"]["default"] == 7 and p["img"]["default"] == {"asset_hash": "blake3:" + "0" * 64}


# ---- targets --------------------------------------------------------------------------------------------


def test_links_are_not_targets():
    e = refused({"m": {"target": "3.model"}})
    assert "target '3.model' (KSampler.model) is a link from node '4' output 0, not a value to set" in str(e)
    wf = workflow()
    wf["6"]["inputs"]["text"] = ["x", "y", "z"]
    with pytest.raises(TemplateError, match="a list, which ComfyUI reads as a link"):
        parse_template({"name": "l", "workflow": wf, "parameters": {"t": {"target": "6.text"}}})


def test_unknown_target_node_or_input():
    e = refused({"p": {"target": "99.text"}})
    assert str(e) == "request: template 'txt2img', parameter 'p': target '99.text': the workflow has no node '99'"
    e = refused({"p": {"target": "6.txt"}})
    assert "target '6.txt': node '6' (CLIPTextEncode) has no input 'txt' (it has 'clip', 'text')" in str(e)
    for bad in ("6text", ".text", "6.", ""):
        assert "must be '<node_id>.<input>'" in str(refused({"p": {"target": bad}}))
    assert "exactly the keys 'node' and 'input'" in str(refused({"p": {"targets": [{"node": "6"}]}}))
    assert "give exactly one of" in str(refused({"p": {"target": "6.text", "targets": ["7.text"]}}))
    assert "give exactly one of" in str(refused({"p": {"default": "x"}}))
    assert "'node_id' needs 'input_name'" in str(refused({"p": {"node_id": "6"}}))
    assert "'input_name' needs 'node_id'" in str(refused({"p": {"input_name": "text"}}))
    assert "listed twice" in str(refused({"p": {"targets": ["6.text", "6.text"]}}))
    assert "17 targets, more than the limit of 16" in str(
        refused({"p": {"targets": [f"6.text{i}" for i in range(17)]}})
    )
    e = refused({"a": {"target": "6.text"}, "b": {"target": "6.text"}})
    assert "target '6.text' is already set by parameter 'a'" in str(e) and e.parameter == "b"


# ---- the template's own shape ---------------------------------------------------------------------------


def test_template_shape_errors():
    def err(raw) -> str:
        with pytest.raises(TemplateError) as e:
            parse_template(raw)
        return str(e.value)

    assert err([]) == "request: a template must be an object, got a list"
    assert "unknown key(s) 'extra'; a template has name, description" in err({**template({}), "extra": 1})
    assert "'name' must be 1 to 64" in err({**template({}), "name": "bad name"})
    assert "'name' must be 1 to 64" in err({**template({}), "name": "x" * 65})
    assert "'workflow' is missing" in err({"name": "n"})
    assert "non-empty API-format workflow" in err({"name": "n", "workflow": {}})
    assert "no class_type" in err({"name": "n", "workflow": {"1": {"inputs": {}}}})
    assert "must have 'inputs'" in err({"name": "n", "workflow": {"1": {"class_type": "A"}}})
    assert "must be an object with class_type" in err({"name": "n", "workflow": {"1": 5}})
    assert "5001 nodes, more than the limit of 5000" in err(
        {"name": "n", "workflow": {str(i): {"class_type": "A", "inputs": {}} for i in range(5001)}}
    )
    assert "JSON cannot carry" in err({"name": "n", "workflow": {"1": {"class_type": "A", "inputs": {"x": math.nan}}}})
    assert "'description' is longer than 2000" in err(template({}, description="d" * 2001))
    assert "'title' is longer than 200" in err(template({"p": {"target": "6.text", "title": "t" * 201}}))
    assert "257 parameters, more than the limit of 256" in err(
        template({f"p{i}": {"target": "6.text"} for i in range(257)})
    )
    assert "parameter name '9lives' must be" in err(template({"9lives": {"target": "6.text"}}))
    assert "unknown key(s) 'node'" in err(template({"p": {"target": "6.text", "node": "6"}}))
    assert "must be an object with 'targets'" in err(template({"p": "6.text"}))
    assert "'parameters' must be an object" in err(template([]))


def test_ui_format_workflow_refused_with_export_api_hint():
    ui = {
        "last_node_id": 9,
        "nodes": [{"id": 3, "type": "KSampler"}],
        "links": [[1, 4, 0, 3, 0, "MODEL"]],
        "version": 0.4,
    }
    with pytest.raises(TemplateError, match=r'"Export \(API\)"') as e:
        parse_template({"name": "ui", "workflow": ui})
    assert "UI-format workflow" in str(e.value) and e.value.template == "ui"


def test_names():
    for good in ("a", "txt2img", "SDXL-1.0_base", "9", "a" * 64):
        assert NAME_RE.fullmatch(good)
    for bad in ("", "-a", ".a", "a b", "a/b", "a" * 65, "文生图"):
        assert not NAME_RE.fullmatch(bad)
    for good in ("prompt", "_x", "Width2"):
        assert PARAM_NAME_RE.fullmatch(good)
    for bad in ("", "2x", "a-b", "a.b", "x" * 65):
        assert not PARAM_NAME_RE.fullmatch(bad)


def test_error_message_shape():
    e = TemplateError("bad", where="a/b.yaml", template="t", parameter="p")
    assert str(e) == "a/b.yaml: template 't', parameter 'p': bad" and (e.where, e.template, e.parameter) == (
        "a/b.yaml",
        "t",
        "p",
    )
    assert str(TemplateError("bad", where="f.json", template="t")) == "f.json: template 't': bad"
    assert str(TemplateError("bad")) == "request: bad"
    assert isinstance(e, ValueError)


# ---- check_value ----------------------------------------------------------------------------------------


def test_check_value_per_type():
    t = parse(FULL)
    p = t["parameters"]
    ok = [
        ("prompt", "a cat"), ("seed", 0), ("seed", 2**64 - 1), ("cfg", 7), ("cfg", 7.5), ("sampler", "dpmpp_2m"),
        ("checkpoint", "any.safetensors"), ("image", "photo.png"), ("image", "blake3:" + "f" * 64),
        ("image", {"comfymq_input": "0" * 64, "name": "photo.png"}), ("image", {"asset_id": "abc"}),
    ]  # fmt: skip
    for name, value in ok:
        assert check_value(p[name], value, name=name) is value
    bad = [
        ("seed", True, "must be an integer, got a boolean"),
        ("seed", 1.0, "must be an integer, got the number 1.0"),
        ("seed", -1, "-1 is below the minimum 0"),
        ("seed", 2**64, "above the maximum 18446744073709551615"),
        ("steps", 61, "61 is above the maximum 60"),
        ("cfg", math.nan, "must be a finite number, got nan"),
        ("cfg", math.inf, "must be a finite number"),
        ("cfg", True, "must be a number, got a boolean"),
        ("cfg", "7", "must be a number, got a string"),
        ("sampler", "heun", "'heun' is not one of the 2 choices ('euler', 'dpmpp_2m')"),
        ("checkpoint", True, "must be a string or a number, got a boolean"),
        ("checkpoint", None, "must be a string or a number, got null"),
        ("prompt", None, "must be a string, got null"),
        ("prompt", "x" * ((1 << 20) + 1), "longer than 1 MiB"),
        ("prompt", "é" * ((1 << 19) + 1), "longer than 1 MiB"),  # 2 bytes each in UTF-8
        ("image", 5, "must be a file name or an asset reference"),
        ("image", {"name": "x.png"}, "exactly one of comfymq_input, asset_hash, asset_id"),
        ("image", "x" * 4097, "longer than 4096"),
    ]
    for name, value, message in bad:
        with pytest.raises(TemplateError) as e:
            check_value(p[name], value, name=name)
        assert message in str(e.value), (name, str(e.value))
        assert e.value.parameter == name
    assert check_value({"type": "boolean"}, False, name="b") is False
    with pytest.raises(TemplateError, match="must be true or false, got an integer"):
        check_value({"type": "boolean"}, 1, name="b")
    big = 10**5000  # too long for str(): the message shows its size instead
    with pytest.raises(TemplateError, match="an integer of 16610 bits is above the maximum"):
        check_value(p["seed"], big, name="seed")


def test_step_is_a_hint_not_enforced():
    p = parse({"size": {"targets": ["5.width", "5.height"], "step": 64}})["parameters"]["size"]
    assert check_value(p, 500, name="size") == 500  # ComfyUI itself rounds nothing to a step


# ---- render ---------------------------------------------------------------------------------------------


def test_render_precedence_request_then_default_then_workflow():
    t = parse(FULL)
    r = render(t, {"prompt": "a red fox", "steps": 40})
    n = r["3"]["inputs"]
    assert r["6"]["inputs"]["text"] == "a red fox"  # request
    assert n["steps"] == 40  # request over the default 25
    assert r["7"]["inputs"]["text"] == "blurry"  # default over the workflow's "text, watermark"
    assert n["seed"] == 156680208700286 and n["cfg"] == 8  # no request value, no default: the workflow's own
    assert render(t, {})["3"]["inputs"]["steps"] == 25  # the default
    r = render(t, {"size": 768})
    assert r["5"]["inputs"]["width"] == r["5"]["inputs"]["height"] == 768  # every target
    assert t["workflow"] == WORKFLOW  # the template is not touched
    r["3"]["inputs"]["model"].append("x")
    assert t["workflow"]["3"]["inputs"]["model"] == ["4", 0]  # a deep copy


def test_render_refuses_unknown_and_bad_values():
    t = parse(FULL)
    with pytest.raises(TemplateError) as e:
        render(t, {"prompt": "x", "stepz": 3, "cfgg": 1})
    assert "unknown parameter(s) 'stepz', 'cfgg'" in str(e.value) and "'prompt', 'negative', 'seed'" in str(e.value)
    with pytest.raises(TemplateError, match="parameter 'steps': value 0 is below the minimum 1"):
        render(t, {"steps": 0})
    with pytest.raises(TemplateError, match="params must be an object"):
        render(t, ["steps"])
    with pytest.raises(TemplateError, match="257 names, more than the limit of 256"):
        render(t, {f"p{i}": 1 for i in range(257)})


def test_render_resolves_media_values_and_requires_empty_media():
    wf = workflow()
    wf["10"]["inputs"]["image"] = ""
    t = parse_template(
        {
            "name": "img2img",
            "workflow": wf,
            "parameters": {"image": {"target": "10.image"}, "prompt": {"target": "6.text"}},
        },
        object_info=OBJECT_INFO,
    )
    with pytest.raises(TemplateError, match="parameter 'image': needs a value"):
        render(t, {})
    seen = []

    def resolve(value, name):
        seen.append((value, name))
        return {"comfymq_input": "1" * 64, "name": "photo.png"}

    ref = {"asset_hash": "blake3:" + "2" * 64}
    r = render(t, {"image": ref, "prompt": "p"}, resolve_asset=resolve)
    assert seen == [(ref, "image")]  # only media parameters go through the resolver
    assert r["10"]["inputs"]["image"] == {"comfymq_input": "1" * 64, "name": "photo.png"}
    assert render(t, {"image": "cat.png"})["10"]["inputs"]["image"] == "cat.png"  # no resolver: as given


# ---- sweep ----------------------------------------------------------------------------------------------


def test_sweep_product_in_stable_order():
    t = parse(FULL)
    combos = sweep(t, {"prompt": "fox", "steps": 30}, {"cfg": [5, 7.5], "seed": [1, 2, 3], "steps": [10]}, limit=6)
    assert combos == [
        {"prompt": "fox", "steps": 10, "cfg": cfg, "seed": seed} for cfg in (5, 7.5) for seed in (1, 2, 3)
    ]  # the first swept parameter varies slowest; a swept name overrides the base
    assert sweep(t, {"steps": 30}, {}, limit=1) == [{"steps": 30}]
    assert [render(t, c)["3"]["inputs"]["cfg"] for c in combos] == [5, 5, 5, 7.5, 7.5, 7.5]


def test_sweep_limit_is_refused_before_building(monkeypatch):
    t = parse_template(
        {"name": "wide", "workflow": {"1": {"class_type": "A", "inputs": {f"x{i}": 0 for i in range(10)}}},
         "parameters": {f"x{i}": {"target": f"1.x{i}"} for i in range(10)}}
    )  # fmt: skip

    def never(*args):
        raise AssertionError("the product was built")

    monkeypatch.setattr(render_module.itertools, "product", never)
    with pytest.raises(TemplateError) as e:
        sweep(t, {}, {f"x{i}": list(range(10)) for i in range(10)}, limit=1000)
    assert "would make 10000000000 combinations, more than the limit of 1000" in str(e.value)


def test_sweep_checks_lists_and_values():
    t = parse(FULL)
    with pytest.raises(TemplateError, match="parameter 'steps': sweep value #2 0 is below the minimum 1"):
        sweep(t, {}, {"steps": [5, 0]}, limit=10)
    with pytest.raises(TemplateError, match="parameter 'steps': sweep must give a non-empty list"):
        sweep(t, {}, {"steps": []}, limit=10)
    with pytest.raises(TemplateError, match="10001 values, more than the limit of 10000"):
        sweep(t, {}, {"steps": [5] * 10001}, limit=20000)
    with pytest.raises(TemplateError, match="sweep names unknown parameter"):
        sweep(t, {}, {"stepz": [5]}, limit=10)
    with pytest.raises(TemplateError, match="value 99 is above the maximum 60"):
        sweep(t, {"steps": 99}, {"cfg": [1]}, limit=10)
    wide = parse_template(
        {"name": "wide", "workflow": {"1": {"class_type": "A", "inputs": {f"x{i}": 0 for i in range(256)}}},
         "parameters": {f"x{i}": {"target": f"1.x{i}"} for i in range(256)}}
    )  # fmt: skip
    values = list(range(10000))
    with pytest.raises(TemplateError, match=r"would make about 10\^1024 combinations, more than the limit of 10000"):
        sweep(wide, {}, {f"x{i}": values for i in range(256)}, limit=10000)


def test_sweep_values_against_a_long_choices_list():
    choices = [f"c{i}" for i in range(10000)]
    wf = {"1": {"class_type": "A", "inputs": {"c": "c0"}}}
    raw = {"name": "many", "workflow": wf, "parameters": {"c": {"target": "1.c", "type": "combo", "choices": choices}}}
    t = parse_template(raw)
    assert len(sweep(t, {}, {"c": list(reversed(choices))}, limit=10000)) == 10000
    with pytest.raises(TemplateError, match="sweep value #10000 'nope' is not one of the 10000 choices"):
        sweep(t, {}, {"c": choices[:9999] + ["nope"]}, limit=10000)
    other = parse_template(
        {**raw, "parameters": {"c": {"target": "1.c", "type": "combo", "choices": ["x", *choices[1:]]}}}
    )
    with pytest.raises(TemplateError, match="'c0' is not one of"):  # each list is checked on its own
        sweep(other, {}, {"c": choices[:40]}, limit=100)


# ---- json_schema ----------------------------------------------------------------------------------------


def test_schema_is_valid_and_checks_params():
    t = parse(FULL, description="Text to image")
    schema = json_schema(t)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object" and schema["additionalProperties"] is False and "required" not in schema
    props = schema["properties"]
    assert props["steps"] == {
        "type": "integer", "minimum": 1, "maximum": 60, "title": "steps", "default": 25,
        "x-comfymq-type": "integer", "x-comfymq-targets": ["3.steps"],
    }  # fmt: skip
    assert (
        props["cfg"]["type"] == "number" and props["cfg"]["x-comfymq-step"] == 0.1 and "multipleOf" not in props["cfg"]
    )
    assert props["sampler"]["enum"] == ["euler", "dpmpp_2m"]
    assert props["checkpoint"]["type"] == ["string", "number"]
    assert props["image"]["x-comfymq-kind"] == "image" and "oneOf" in props["image"]
    assert props["prompt"]["description"] == "What to draw" and props["prompt"]["title"] == "Prompt"
    # a form pre-fills the value a job would run with: the default, else the workflow's own
    assert props["negative"]["default"] == "blurry"
    assert props["prompt"]["default"] == "beautiful scenery, purple galaxy bottle"
    assert props["seed"]["default"] == 156680208700286 and props["size"]["default"] == 512
    assert props["image"]["default"] == "example.png"
    v = Draft202012Validator(schema)
    good = {"prompt": "x", "seed": 5, "cfg": 7.5, "sampler": "euler", "image": {"asset_hash": "blake3:" + "0" * 64}}
    assert not list(v.iter_errors(good))
    assert not list(v.iter_errors({}))
    assert not list(v.iter_errors({"image": "cat.png", "checkpoint": "m.safetensors", "size": 1000}))
    for bad in [
        {"stepz": 1}, {"steps": 0}, {"steps": 61}, {"steps": 2.5}, {"cfg": "7"}, {"cfg": 21}, {"sampler": "heun"},
        {"prompt": 5}, {"image": ""}, {"image": 5}, {"image": {"name": "x"}},
        {"image": {"asset_hash": "a", "asset_id": "b"}}, {"checkpoint": True},
    ]:  # fmt: skip
        assert list(v.iter_errors(bad)), bad
    # every default the schema shows passes the schema (what a form pre-fills is submittable)
    assert not list(v.iter_errors({k: p["default"] for k, p in props.items() if "default" in p}))


def test_schema_defaults_and_required_media():
    wf = workflow()
    wf["10"]["inputs"]["image"] = ""
    wf["3"]["inputs"]["steps"] = 100  # outside the template's range: not shown as a default
    t = parse_template(
        {
            "name": "i2i",
            "workflow": wf,
            "parameters": {
                "image": {"target": "10.image"},
                "steps": {"target": "3.steps", "max": 50},
                "flag": {"target": "6.text", "type": "video", "default": "v.mp4"},
            },
        },
        object_info=OBJECT_INFO,
    )
    schema = json_schema(t)
    Draft202012Validator.check_schema(schema)
    assert schema["required"] == ["image"]
    assert "default" not in schema["properties"]["image"] and "default" not in schema["properties"]["steps"]
    assert schema["properties"]["flag"]["default"] == "v.mp4"
    assert list(Draft202012Validator(schema).iter_errors({}))
    assert json_schema(parse_template({"name": "none", "workflow": workflow()}))["properties"] == {}


# ---- files: YAML safety ---------------------------------------------------------------------------------

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_yaml_aliases_anchors_and_depth_are_refused():
    with pytest.raises(TemplateError, match="anchors") as e:
        documents.parse_text(BILLION_LAUGHS, "bomb.yaml")
    assert e.value.where == "bomb.yaml"
    with pytest.raises(TemplateError, match=r"aliases \(\*name\) are not allowed"):
        documents.parse_text("a: 1\nb: *a\n", "alias.yaml")
    with pytest.raises(TemplateError, match="nested deeper than 64"):
        documents.parse_text("[" * 65 + "]" * 65, "deep.yaml")
    assert documents.parse_text("[" * 63 + "]" * 63, "ok.yaml") is not None
    with pytest.raises(TemplateError, match="nested deeper than 64"):
        documents.parse_text("[" * 65 + "]" * 65, "deep.json")
    with pytest.raises(TemplateError, match="nested deeper than 64"):  # past the JSON decoder's own recursion bound
        documents.parse_text("[" * 100000, "deeper.json")
    # dates stay text (a prompt "2024-01-01" is a string), and more than one document is refused
    assert documents.parse_text("d: 2024-01-01\n", "d.yaml") == {"d": "2024-01-01"}
    with pytest.raises(TemplateError, match="invalid YAML"):
        documents.parse_text("a: 1\n---\nb: 2\n", "two.yaml")
    with pytest.raises(TemplateError, match="NaN is not JSON"):
        documents.parse_text('{"a": NaN}', "nan.json")


def test_yaml_without_pyyaml(tmp_path, monkeypatch):
    (tmp_path / "t.yaml").write_text("name: x\n")
    (tmp_path / "j.json").write_text(json.dumps(template({})))
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml now raises ImportError
    templates, errors = load_folder(tmp_path)
    assert [t["name"] for t in templates] == ["txt2img"]
    assert [str(e) for e in errors] == ["t.yaml: reading YAML templates needs PyYAML (pip install pyyaml)"]


def test_importing_templates_needs_neither_native_nor_yaml():
    code = (
        "import sys; sys.modules['yaml'] = None\n"
        "from comfy_nodes.templates import definition, documents, folder, render, schema, specs, values\n"
        "assert not [m for m in sys.modules if m.startswith('comfy_nodes.') and 'native' in m], sys.modules\n"
        "assert definition.parse_template({'name': 'n', 'workflow': {'1': {'class_type': 'A', 'inputs': {}}}})\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


# ---- load_folder ----------------------------------------------------------------------------------------

SEED_CONFIG = """\
# MySQL / Redis / ComfyUI nodes: ComfyMQ does not look at these
mysql:
  client:
    host: localhost
    port: 3306
    user: root
    password: "123456"
    database: comfyui_client
redis:
  host: localhost
  port: 6379
  db: 0
nodes:
  static_nodes:
    - node_id: "comfyui-worker-1"
      host: "192.168.1.101"
      port: 8188
      max_concurrent: 4
      capabilities: ["text_to_image", "image_to_video"]

task_types:
  text_to_image:
    workflows:
      sd_basic:
        workflow_file: "workflows/text_to_image/文生图.json"
        parameter_mapping:
          prompt:
            node_id: "314"
            input_name: "text"
            default_value: ""
          width:
            node_id: "135"
            input_name: "width"
            default_value: 512
      sd_plain:
        workflow_file: "workflows/text_to_image/文生图.json"
"""

SEED_WORKFLOW = {
    "314": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": ["4", 1]}},
    "135": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
    "3": copy.deepcopy(WORKFLOW["3"]),
    "4": copy.deepcopy(WORKFLOW["4"]),
}


def write(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content, ensure_ascii=False), "utf-8")
    return path


def seed_folder(root: Path) -> Path:
    write(root / "config.yaml", SEED_CONFIG)
    write(root / "workflows" / "text_to_image" / "文生图.json", SEED_WORKFLOW)
    return root


def test_seed_003_config_read_as_it_is(tmp_path):
    templates, errors = load_folder(seed_folder(tmp_path), object_info=OBJECT_INFO)
    assert errors == []
    by_name = {t["name"]: t for t in templates}
    assert list(by_name) == ["sd_basic", "sd_plain"]
    sd = by_name["sd_basic"]
    assert (sd["category"], sd["source"], sd["description"]) == ("text_to_image", "config.yaml", "")
    assert sd["workflow"] == SEED_WORKFLOW
    assert sd["parameters"]["prompt"] == {
        "type": "string",
        "targets": ["314.text"],
        "title": "prompt",
        "description": "",
        "default": "",
    }
    assert sd["parameters"]["width"]["default"] == 512 and sd["parameters"]["width"]["type"] == "integer"
    assert by_name["sd_plain"]["parameters"] == {}
    # seed 003's precedence: the request, then the configured default, then the workflow's own value
    r = render(sd, {"prompt": "a castle"})
    assert (r["314"]["inputs"]["text"], r["135"]["inputs"]["width"], r["135"]["inputs"]["height"]) == (
        "a castle",
        512,
        1024,
    )
    assert render(sd, {})["314"]["inputs"]["text"] == ""


def test_folder_of_our_own_forms(tmp_path):
    write(tmp_path / "one.json", template({"steps": {"target": "3.steps", "default": 30}}))
    write(
        tmp_path / "two.yaml",
        "name: inline_yaml\ncategory: tests\nworkflow:\n  1:\n    class_type: A\n    inputs: {x: 1}\nparameters:\n  x: {target: '1.x', min: 0}\n",
    )
    write(tmp_path / "sub" / "list.yml", json.dumps([
        {"name": "from_file", "workflow_file": "../wf/api.json", "parameters": {"prompt": {"target": "6.text"}}},
        {"name": "from_file_2", "workflow_file": "../wf/api.json"},
    ]))  # fmt: skip
    write(tmp_path / "wf" / "api.json", WORKFLOW)
    write(tmp_path / ".hidden.json", "not even json")
    write(tmp_path / ".git" / "x.json", "not even json")
    write(tmp_path / "notes.txt", "ignored")
    templates, errors = load_folder(tmp_path, object_info=OBJECT_INFO)
    assert errors == []
    assert [(t["name"], t["source"]) for t in templates] == [
        ("txt2img", "one.json"), ("inline_yaml", "two.yaml"), ("from_file", "sub/list.yml"), ("from_file_2", "sub/list.yml")
    ]  # fmt: skip
    assert templates[1]["workflow"] == {"1": {"class_type": "A", "inputs": {"x": 1}}}  # YAML's int key made a string
    assert templates[2]["workflow"] == WORKFLOW and templates[2]["parameters"]["prompt"]["type"] == "string"
    assert load_folder(tmp_path, object_info=OBJECT_INFO) == (templates, errors)  # deterministic


def test_workflow_file_must_stay_inside_the_folder(tmp_path):
    root = tmp_path / "templates"
    outside = write(tmp_path / "outside.json", WORKFLOW)
    write(root / "workflows" / "inside.json", WORKFLOW)
    (root / "workflows" / "link.json").symlink_to(outside)
    (root / "workflows" / "linkdir").symlink_to(tmp_path, target_is_directory=True)
    write(root / "t.json", [
        {"name": "dotdot", "workflow_file": "../outside.json"},
        {"name": "symlink", "workflow_file": "workflows/link.json"},
        {"name": "symlinked_dir", "workflow_file": "workflows/linkdir/outside.json"},
        {"name": "absolute", "workflow_file": str(outside)},
        {"name": "windows", "workflow_file": "C:\\outside.json"},
        {"name": "missing", "workflow_file": "workflows/nope.json"},
        {"name": "ok", "workflow_file": "workflows/../workflows/inside.json"},
        {"name": "both", "workflow_file": "workflows/inside.json", "workflow": WORKFLOW},
    ])  # fmt: skip
    templates, errors = load_folder(root)
    assert [t["name"] for t in templates] == ["ok"]
    got = {e.template: e.what for e in errors}
    assert got["dotdot"] == "workflow_file '../outside.json' leads out of the templates folder"
    assert got["symlink"] == "workflow_file 'workflows/link.json' leads out of the templates folder"
    assert "leads out" in got["symlinked_dir"]
    assert "not absolute" in got["absolute"] and "not absolute" in got["windows"]
    assert "does not exist" in got["missing"]
    assert "not both" in got["both"]
    # the symlink itself, met while listing the folder, is refused too (a template file may not lead out either)
    assert any(e.where == "workflows/link.json" and "symlink leading out" in e.what for e in errors)
    assert all(e.where in ("t.json", "workflows/link.json") for e in errors)


def test_duplicate_names_across_files(tmp_path):
    write(tmp_path / "a.json", template({}))
    write(tmp_path / "b" / "c.json", {**template({}), "description": "second"})
    write(tmp_path / "d.json", [template({}), template({})])
    templates, errors = load_folder(tmp_path)
    assert [(t["source"], t["description"]) for t in templates] == [("a.json", "")]
    assert [str(e) for e in errors] == [
        "d.json: template 'txt2img': is defined in a.json and in d.json; the first is kept",
        "d.json: template 'txt2img': is defined in a.json and in d.json; the first is kept",
        "b/c.json: template 'txt2img': is defined in a.json and in b/c.json; the first is kept",
    ]


def test_errors_name_file_template_and_parameter_and_do_not_stop_others(tmp_path):
    seed_folder(tmp_path / "seed")
    write(
        tmp_path / "bad_param.yaml",
        "name: broken\nworkflow_file: seed/workflows/text_to_image/文生图.json\nparameters:\n  width: {node_id: '135', input_name: width, default_value: 512.0}\n",
    )
    write(tmp_path / "bad_json.json", '{"name": "x",\n "workflow": }')
    (tmp_path / "latin1.json").write_bytes('{"name": "caf\xe9"}'.encode("latin-1"))
    write(tmp_path / "bomb.yaml", BILLION_LAUGHS)
    write(tmp_path / "ui.json", {"name": "ui_inline", "workflow": {"nodes": [], "links": []}})
    write(tmp_path / "ui_file.json", {"name": "ui_file", "workflow_file": "ui_workflow.json"})
    write(tmp_path / "ui_workflow.json", {"nodes": [], "links": [], "version": 0.4})
    write(tmp_path / "stray_workflow.json", WORKFLOW)
    write(tmp_path / "uses_broken.json", {"name": "uses_broken", "workflow_file": "wf/broken.json"})
    write(tmp_path / "wf" / "broken.json", {"3": {"inputs": {}}})  # not a workflow, nor a template
    write(tmp_path / "scalar.json", "5")
    write(tmp_path / "good.json", template({"steps": {"target": "3.steps"}}))
    templates, errors = load_folder(tmp_path, object_info=OBJECT_INFO)
    assert [(t["name"], t["source"]) for t in templates] == [
        ("txt2img", "good.json"), ("sd_basic", "seed/config.yaml"), ("sd_plain", "seed/config.yaml")
    ]  # fmt: skip
    by_file = {e.where: e for e in errors}
    e = by_file["bad_param.yaml"]
    assert (e.template, e.parameter) == ("broken", "width")
    assert (
        str(e)
        == "bad_param.yaml: template 'broken', parameter 'width': default must be an integer, got the number 512.0 (write integers without a fraction)"
    )
    assert str(by_file["bad_json.json"]).startswith("bad_json.json: invalid JSON: Expecting value at line 2, column 14")
    assert "is not UTF-8" in str(by_file["latin1.json"])
    assert "anchors" in str(by_file["bomb.yaml"])
    assert '"Export (API)"' in str(by_file["ui.json"]) and by_file["ui.json"].template == "ui_inline"
    e = by_file["ui_file.json"]
    assert str(e).startswith(
        "ui_file.json: template 'ui_file': workflow_file ui_workflow.json: this is a UI-format workflow"
    )
    assert "ui_workflow.json" not in by_file  # named by a template: reported with it, not twice
    assert "is a workflow that no template names" in str(by_file["stray_workflow.json"])
    assert "the file holds an integer" in str(by_file["scalar.json"])
    e = by_file["uses_broken.json"]
    assert (
        str(e) == "uses_broken.json: template 'uses_broken': workflow node '3' has no class_type (a non-empty string)"
    )
    assert "wf/broken.json" not in by_file  # named by a template: its problems are that template's
    assert [e.where for e in errors] == [  # in the order files are listed: each folder's files, then its subfolders
        "bad_json.json", "bad_param.yaml", "bomb.yaml", "latin1.json", "scalar.json", "stray_workflow.json",
        "ui.json", "ui_file.json", "uses_broken.json",
    ]  # fmt: skip


def test_file_size_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(documents, "MAX_FILE_BYTES", 1000)
    write(tmp_path / "big.json", [template({})] * 10)
    write(tmp_path / "small.json", {"name": "small", "workflow": {"1": {"class_type": "A", "inputs": {}}}})
    templates, errors = load_folder(tmp_path)
    assert [t["name"] for t in templates] == ["small"]
    assert len(errors) == 1 and str(errors[0]).startswith("big.json: is larger than the limit of 1000 bytes (")


def test_too_many_files_and_missing_folder(tmp_path, monkeypatch):
    from comfy_nodes.templates import folder

    monkeypatch.setattr(folder, "MAX_FILES", 3)
    for i in range(5):
        write(tmp_path / f"t{i}.json", {**template({}), "name": f"t{i}"})
    templates, errors = load_folder(tmp_path)
    assert [t["name"] for t in templates] == ["t0", "t1", "t2"]
    assert [e.what for e in errors] == ["has more than 3 templates files; the rest were not read"]
    templates, errors = load_folder(tmp_path / "nope")
    assert templates == [] and len(errors) == 1 and errors[0].where == str(tmp_path / "nope")
    templates, errors = load_folder(tmp_path / "t0.json")
    assert "is not a folder" in str(errors[0])


def test_fifo_is_not_read(tmp_path):
    os.mkfifo(tmp_path / "pipe.json")
    write(tmp_path / "ok.json", template({}))
    templates, errors = load_folder(tmp_path)
    assert [t["name"] for t in templates] == ["txt2img"]
    assert [str(e) for e in errors] == ["pipe.json: is not a regular file"]
