"""ComfyMQ's ComfyUI nodes: Save Image (atomic), Job Info, Load Job Artifact.

The node classes are called directly, as ComfyUI's executor calls them. torch is not installed here, so IMAGE
inputs are numpy arrays [B, H, W, C] in 0..1 and the load node returns numpy arrays. ComfyUI's `folder_paths`
and `comfy.cli_args` are stood in for by small modules put in sys.modules (the nodes read only
folder_paths.get_output_directory() and args.disable_metadata). The save node takes a root outside the output
folder only when ComfyMQ's configuration allows it (save_roots): every test here starts from an empty
comfymq.toml and no COMFYMQ_* variables, and a test saving elsewhere allows that folder (allow_save_roots). The
rule itself is tested in test_save_roots.py.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT
from PIL import Image

from comfy_nodes import nodes as node_pack
from comfy_nodes.nodes import images as image_helpers
from comfy_nodes.nodes import save_image_atomic
from comfy_nodes.nodes.job_info import ComfyMQJobInfo, current_job
from comfy_nodes.nodes.load_job_artifact import ComfyMQLoadJobArtifact
from comfy_nodes.nodes.save_image_atomic import ComfyMQSaveImageAtomic

JOB = "0123456789abcdef"
OTHER_JOB = "fedcba9876543210"
PROMPT = {"9": {"class_type": "ComfyMQSaveImageAtomic", "inputs": {"filename_prefix": "ComfyMQ"}}}
WORKFLOW = {"nodes": [{"id": 9, "type": "ComfyMQSaveImageAtomic"}], "links": []}


def job_pnginfo(job_id=JOB, attempt=2, batch_id="b-7", batch_index=3, prompt_id="p-1") -> dict:
    return {
        "workflow": WORKFLOW,
        "comfymq": {
            "job_id": job_id,
            "attempt": attempt,
            "batch_id": batch_id,
            "batch_index": batch_index,
            "prompt_id": prompt_id,
        },
    }


def rgb_batch(n=1, h=6, w=5, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, h, w, 3), dtype=np.float32)


def save(images, root, **kwargs):
    return ComfyMQSaveImageAtomic().save_images(images, root=str(root), **kwargs)


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file())


def read_pixels(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def allow_save_roots(monkeypatch, *folders: Path) -> None:
    """Lets the save node write under `folders` (config key save_roots, through its environment variable)."""
    monkeypatch.setenv("COMFYMQ_SAVE_ROOTS", ",".join(map(str, folders)))


@pytest.fixture(autouse=True)
def isolated_config(tmp_path, monkeypatch) -> Path:
    """No COMFYMQ_* variable of the machine running the tests, and an empty comfymq.toml (not one lying around)."""
    for name in [k for k in os.environ if k.startswith("COMFYMQ_")]:
        monkeypatch.delenv(name)
    toml = tmp_path / "config" / "comfymq.toml"
    toml.parent.mkdir()
    toml.write_text("")
    monkeypatch.setenv("COMFYMQ_CONFIG", str(toml))
    return toml


@pytest.fixture
def output_dir(tmp_path, monkeypatch) -> Path:
    """A stand-in for ComfyUI's folder_paths, whose output folder is <tmp>/output."""
    out = tmp_path / "output"
    out.mkdir()
    fake = types.ModuleType("folder_paths")
    fake.get_output_directory = lambda: str(out)
    monkeypatch.setitem(sys.modules, "folder_paths", fake)
    return out


@pytest.fixture
def nas(tmp_path, monkeypatch) -> Path:
    """A root outside ComfyUI's output folder (a NAS share), allowed by save_roots."""
    allow_save_roots(monkeypatch, tmp_path / "nas")
    return tmp_path / "nas"


# ---- registration and node definitions ---------------------------------------------------------------------

NODES = {
    "ComfyMQSaveImageAtomic": (ComfyMQSaveImageAtomic, "Save Image (atomic, ComfyMQ)"),
    "ComfyMQJobInfo": (ComfyMQJobInfo, "Job Info (ComfyMQ)"),
    "ComfyMQLoadJobArtifact": (ComfyMQLoadJobArtifact, "Load Job Artifact (ComfyMQ)"),
}


def test_pack_exports_the_three_nodes_with_display_names():
    assert node_pack.NODE_CLASS_MAPPINGS == {name: cls for name, (cls, _) in NODES.items()}
    assert node_pack.NODE_DISPLAY_NAME_MAPPINGS == {name: shown for name, (_, shown) in NODES.items()}


@pytest.mark.parametrize("name", sorted(NODES))
def test_node_definition_follows_the_v1_api(name):
    cls = NODES[name][0]
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"}
    assert cls.CATEGORY == "ComfyMQ"
    assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 40
    assert callable(getattr(cls, cls.FUNCTION))
    assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) == len(cls.OUTPUT_TOOLTIPS)
    visible = {**spec.get("required", {}), **spec.get("optional", {})}
    for input_name, definition in visible.items():
        assert isinstance(definition, tuple) and len(definition) == 2, input_name
        assert definition[1].get("tooltip"), f"{name}.{input_name} has no tooltip"
    for input_name, kind in spec.get("hidden", {}).items():
        assert kind in {"PROMPT", "EXTRA_PNGINFO", "UNIQUE_ID"}, input_name


def test_input_types_of_each_node():
    save_spec = ComfyMQSaveImageAtomic.INPUT_TYPES()
    assert save_spec["required"]["images"][0] == "IMAGE"
    assert save_spec["required"]["filename_prefix"] == ("STRING", save_spec["required"]["filename_prefix"][1])
    assert save_spec["required"]["filename_prefix"][1]["default"] == "ComfyMQ"
    assert save_spec["optional"]["root"][1]["default"] == ""
    assert save_spec["optional"]["name_template"][1]["default"] == "{job}_{counter}"
    assert save_spec["hidden"] == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    assert ComfyMQSaveImageAtomic.OUTPUT_NODE is True

    assert ComfyMQJobInfo.INPUT_TYPES()["hidden"] == {"extra_pnginfo": "EXTRA_PNGINFO"}
    assert ComfyMQJobInfo.RETURN_TYPES == ("STRING", "INT", "STRING", "INT")
    assert ComfyMQJobInfo.RETURN_NAMES == ("job_id", "attempt", "batch_id", "batch_index")

    load_spec = ComfyMQLoadJobArtifact.INPUT_TYPES()
    assert list(load_spec["required"]) == ["job_id", "name"]
    assert list(load_spec["optional"]) == ["root"]
    assert ComfyMQLoadJobArtifact.RETURN_TYPES == ("IMAGE", "MASK")


BLOCK_IMPORTS = textwrap.dedent("""
    import sys, importlib.abc
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"numpy", "PIL", "torch", "folder_paths"}:
                raise ImportError("blocked: " + name)
    sys.meta_path.insert(0, Block())
    sys.path.insert(0, sys.argv[1])
    import comfy_nodes.nodes as pack
    print("NODES", sorted(pack.NODE_CLASS_MAPPINGS))
    print("LOADED", sorted(m for m in ("numpy", "PIL", "torch") if m in sys.modules))
    from comfy_nodes.nodes.job_info import ComfyMQJobInfo
    print("JOB", ComfyMQJobInfo().job_info(extra_pnginfo={"comfymq": {"job_id": "ab"}}))
    from comfy_nodes.nodes.save_image_atomic import ComfyMQSaveImageAtomic
    try:
        ComfyMQSaveImageAtomic().save_images([[[[0.0, 0.0, 0.0]]]], root=sys.argv[2])
    except RuntimeError as e:
        print("RUN", e)
""")


@pytest.mark.subprocess
def test_pack_imports_without_numpy_pillow_or_torch_and_fails_only_when_run(tmp_path, subprocess_env):
    r = subprocess.run(
        [sys.executable, "-c", BLOCK_IMPORTS, str(REPO_ROOT), str(tmp_path / "out")],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "NODES ['ComfyMQJobInfo', 'ComfyMQLoadJobArtifact', 'ComfyMQSaveImageAtomic']" in r.stdout
    assert "LOADED []" in r.stdout
    assert "JOB ('ab', 0, '', 0)" in r.stdout  # Job Info needs none of them
    assert "RUN ComfyMQ's image nodes need numpy (pip install numpy)" in r.stdout
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_save_without_pillow_names_the_missing_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(RuntimeError, match=r"need Pillow \(pip install pillow\)"):
        save(rgb_batch(), tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before the root was even created


# ---- Save Image (atomic) -----------------------------------------------------------------------------------


def test_save_writes_real_pngs_named_by_the_template(nas):
    images = rgb_batch(2)
    result = save(
        images,
        nas,
        filename_prefix="shot",
        name_template="{prefix}-{job}-{date}-b{batch}-{counter}",
        prompt=PROMPT,
        extra_pnginfo=job_pnginfo(),
    )
    today = time.strftime("%Y-%m-%d")
    expected = [f"shot-{JOB}-{today}-b0-00001.png", f"shot-{JOB}-{today}-b1-00002.png"]
    assert files_in(nas) == expected
    for i, name in enumerate(expected):
        with Image.open(nas / name) as img:
            assert img.format == "PNG" and img.mode == "RGB" and img.size == (5, 6)
        assert np.abs(read_pixels(nas / name) / 255.0 - images[i]).max() <= 0.5 / 255 + 1e-6
    assert result["result"][0] is images


def test_default_template_uses_the_job_id_in_a_job_and_the_prefix_outside_one(nas):
    save(rgb_batch(), nas, extra_pnginfo=job_pnginfo())
    save(rgb_batch(), nas)  # no extra_pnginfo: not a ComfyMQ job
    save(rgb_batch(), nas, extra_pnginfo={"workflow": {}})  # ComfyUI's own extra_pnginfo, no job
    assert files_in(nas) == [f"{JOB}_00001.png", "ComfyMQ_00001.png", "ComfyMQ_00002.png"]


def test_batch_of_three_gives_three_files_with_consecutive_counters(nas):
    result = save(rgb_batch(3), nas, extra_pnginfo=job_pnginfo())
    names = [f"{JOB}_{n:05d}.png" for n in (1, 2, 3)]
    assert files_in(nas) == names
    assert [f["name"] for f in result["ui"]["comfymq_files"]] == names
    # The next save continues after the highest counter in the folder.
    save(rgb_batch(1), nas, extra_pnginfo=job_pnginfo())
    assert files_in(nas)[-1] == f"{JOB}_00004.png"


def test_saving_the_same_name_twice_never_overwrites(nas):
    first, second = rgb_batch(seed=1), rgb_batch(seed=2)
    a = save(first, nas, name_template="fixed")["ui"]["comfymq_files"][0]
    b = save(second, nas, name_template="fixed")["ui"]["comfymq_files"][0]
    c = save(second, nas, name_template="fixed.png")["ui"]["comfymq_files"][0]  # ".png" is not doubled
    assert (a["name"], b["name"], c["name"]) == ("fixed.png", "fixed-1.png", "fixed-2.png")
    assert files_in(nas) == ["fixed-1.png", "fixed-2.png", "fixed.png"]
    assert np.array_equal(read_pixels(nas / "fixed.png"), np.rint(first[0] * 255).astype(np.uint8))
    assert np.array_equal(read_pixels(nas / "fixed-1.png"), np.rint(second[0] * 255).astype(np.uint8))


def test_counter_skips_names_taken_with_a_collision_suffix(nas):
    nas.mkdir()
    (nas / f"{JOB}_00007-1.png").write_bytes(b"x")
    (nas / f"{JOB}_00003.png").write_bytes(b"x")
    (nas / "unrelated_00099.png").write_bytes(b"x")
    save(rgb_batch(), nas, extra_pnginfo=job_pnginfo())
    assert (nas / f"{JOB}_00008.png").is_file()


def test_png_text_chunks_hold_prompt_workflow_and_job(nas):
    info = job_pnginfo()
    f = save(rgb_batch(), nas, prompt=PROMPT, extra_pnginfo=info)["ui"]["comfymq_files"][0]
    with Image.open(f["full_path"]) as img:
        text = dict(img.text)
    assert json.loads(text["prompt"]) == PROMPT
    assert json.loads(text["workflow"]) == WORKFLOW
    assert json.loads(text["comfymq"]) == info["comfymq"]


def test_disable_metadata_writes_no_text_chunks(nas, monkeypatch):
    cli_args = types.ModuleType("comfy.cli_args")
    cli_args.args = types.SimpleNamespace(disable_metadata=True)
    monkeypatch.setitem(sys.modules, "comfy.cli_args", cli_args)
    f = save(rgb_batch(), nas, prompt=PROMPT, extra_pnginfo=job_pnginfo())["ui"]["comfymq_files"][0]
    with Image.open(f["full_path"]) as img:
        assert not img.text


def test_files_are_reported_with_size_and_sha256(nas):
    result = save(rgb_batch(2), nas, filename_prefix="run/one", extra_pnginfo=job_pnginfo())
    files = result["ui"]["comfymq_files"]
    assert len(files) == 2
    for f in files:
        data = Path(f["full_path"]).read_bytes()
        assert f["size"] == len(data)
        assert f["sha256"] == hashlib.sha256(data).hexdigest()
        assert f["root"] == str(nas)
        assert f["subfolder"] == "run"
        assert f["path"] == "run/" + f["name"]
        assert Path(f["full_path"]) == nas / "run" / f["name"]
        assert f["mime"] == "image/png"
        assert f["in_output_dir"] is False  # no ComfyUI output folder here
        assert "filename" not in f and "type" not in f  # history scanners fetch only ui.images through /view


def test_ui_images_like_save_image_inside_the_output_folder(output_dir):
    result = save(rgb_batch(2), "", filename_prefix="portraits/ComfyMQ", extra_pnginfo=job_pnginfo())
    assert result["ui"]["images"] == [
        {"filename": f"{JOB}_00001.png", "subfolder": "portraits", "type": "output"},
        {"filename": f"{JOB}_00002.png", "subfolder": "portraits", "type": "output"},
    ]
    assert (output_dir / "portraits" / f"{JOB}_00001.png").is_file()
    assert [f["in_output_dir"] for f in result["ui"]["comfymq_files"]] == [True, True]
    json.dumps(result["ui"])  # goes into ComfyUI's history and websocket messages as JSON


def test_relative_root_is_inside_the_output_folder_and_previewed(output_dir):
    result = save(rgb_batch(), "comfymq/shared", extra_pnginfo=job_pnginfo())
    assert result["ui"]["images"] == [{"filename": f"{JOB}_00001.png", "subfolder": "comfymq/shared", "type": "output"}]
    f = result["ui"]["comfymq_files"][0]
    assert f["subfolder"] == "" and f["root"] == str(output_dir / "comfymq" / "shared")


def test_root_outside_the_output_folder_is_recorded_but_not_previewed(output_dir, nas):
    result = save(rgb_batch(), nas, extra_pnginfo=job_pnginfo())
    assert result["ui"]["images"] == []  # /view serves only output/input/temp: no entry naming a wrong file
    [f] = result["ui"]["comfymq_files"]
    assert f["in_output_dir"] is False and Path(f["full_path"]) == nas / f"{JOB}_00001.png"
    assert not list(output_dir.iterdir())


@pytest.mark.parametrize(
    "template, message",
    [
        ("{job}_{seed}", r"unknown placeholder \{seed\}"),
        ("{job}/{counter}", "contains a path separator"),
        ("{job}\\{counter}", "contains a path separator"),
        ("..{counter}", r"contains '\.\.'"),
        ("a..b", r"contains '\.\.'"),
        (".hidden_{counter}", r"starts with '\.'"),
        ("{counter:03}", "takes no format"),
        ("{job!r}", "takes no format"),
        ("{job", "malformed"),
        ("", "empty"),
        ("x" * 300, "longer than"),
    ],
)
def test_bad_templates_are_refused_before_writing(nas, template, message):
    with pytest.raises(ValueError, match=message):
        save(rgb_batch(), nas, name_template=template, extra_pnginfo=job_pnginfo())
    assert not nas.exists()  # refused before the root was even created
    problem = ComfyMQSaveImageAtomic.VALIDATE_INPUTS(filename_prefix="ComfyMQ", name_template=template)
    assert isinstance(problem, str) and re.search(message, problem)


def test_job_id_with_separator_cannot_escape_through_the_template(nas):
    with pytest.raises(ValueError, match="contains a path separator"):
        save(rgb_batch(), nas, extra_pnginfo=job_pnginfo(job_id="../../etc"))
    assert not nas.exists()


@pytest.mark.parametrize(
    "prefix, message", [("../up", r"'\.\.'"), ("/abs/x", "must be relative"), ("a/.git/x", "hidden folder")]
)
def test_bad_prefixes_are_refused(nas, prefix, message):
    with pytest.raises(ValueError, match=message):
        save(rgb_batch(), nas, filename_prefix=prefix)
    problem = ComfyMQSaveImageAtomic.VALIDATE_INPUTS(filename_prefix=prefix, name_template="{counter}")
    assert isinstance(problem, str) and re.search(message, problem)


def test_validate_inputs_of_save_node():
    assert ComfyMQSaveImageAtomic.VALIDATE_INPUTS(filename_prefix="a/b", name_template="{job}_{counter}") is True
    assert ComfyMQSaveImageAtomic.VALIDATE_INPUTS() is True  # linked inputs: checked when the prompt runs
    assert "unknown placeholder {x}" in ComfyMQSaveImageAtomic.VALIDATE_INPUTS(name_template="{x}")


def test_grey_and_rgba_images_keep_their_channels(nas):
    grey = np.full((1, 4, 4, 1), 0.5, dtype=np.float32)
    rgba = np.concatenate([rgb_batch(1, 4, 4), np.full((1, 4, 4, 1), 0.25, dtype=np.float32)], axis=-1)
    g = save(grey, nas, name_template="grey")["ui"]["comfymq_files"][0]
    a = save(rgba, nas, name_template="rgba")["ui"]["comfymq_files"][0]
    with Image.open(g["full_path"]) as img:
        assert img.mode == "L" and np.asarray(img)[0, 0] == 128
    with Image.open(a["full_path"]) as img:
        assert img.mode == "RGBA" and np.asarray(img)[0, 0, 3] == 64


def test_out_of_range_and_nan_values_are_clipped(nas):
    images = np.array([[[[-1.0, 2.0, np.nan]]]], dtype=np.float32)
    f = save(images, nas, name_template="clip")["ui"]["comfymq_files"][0]
    assert read_pixels(f["full_path"]).tolist() == [[[0, 255, 0]]]


def test_a_wrong_shape_is_a_clear_error(nas):
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        save(np.zeros((1, 4, 4, 2)), nas)


class FakeTensor:
    """Duck-types the torch.Tensor methods the helpers use (torch itself is not installed here)."""

    def __init__(self, array):
        self.array = array
        self.calls = []

    def detach(self):
        self.calls.append("detach")
        return self

    def float(self):
        self.calls.append("float")
        return self

    def cpu(self):
        self.calls.append("cpu")
        return self

    def numpy(self):
        self.calls.append("numpy")
        return self.array


def test_torch_like_tensors_are_converted(nas):
    tensor = FakeTensor(rgb_batch())
    f = save(tensor, nas, name_template="tensor")["ui"]["comfymq_files"][0]
    assert tensor.calls == ["detach", "float", "cpu", "numpy"]
    assert np.abs(read_pixels(f["full_path"]) / 255.0 - tensor.array[0]).max() <= 0.5 / 255 + 1e-6


CONCURRENT_SAVER = textwrap.dedent("""
    import json, os, sys, time
    sys.path.insert(0, sys.argv[1])
    import numpy as np
    from comfy_nodes.nodes.save_image_atomic import ComfyMQSaveImageAtomic
    root, go, who, count = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    node = ComfyMQSaveImageAtomic()
    node.save_images(np.zeros((1, 1, 1, 3)), root=root + "-warmup")  # load the native module before the start
    deadline = time.time() + 30
    while not os.path.exists(go):
        if time.time() > deadline:
            sys.exit("no start signal")
        time.sleep(0.001)
    written = []
    for i in range(count):
        # Pixel values say who wrote the file and when, so a lost or overwritten file is noticed.
        image = np.zeros((1, 4, 4, 3), dtype=np.float32)
        image[..., 0], image[..., 1] = who / 255.0, i / 255.0
        template = "clash" if i % 2 == 0 else "{prefix}_{counter}"
        ui = node.save_images(image, root=root, filename_prefix="shared", name_template=template)["ui"]
        written += [f["full_path"] for f in ui["comfymq_files"]]
    print(json.dumps(written))
""")


@pytest.mark.subprocess
def test_two_processes_saving_the_same_names_lose_nothing(tmp_path, subprocess_env, isolated_config):
    root, go, count = tmp_path / "shared", tmp_path / "go", 24
    env = {**subprocess_env, "COMFYMQ_SAVE_ROOTS": str(tmp_path), "COMFYMQ_CONFIG": str(isolated_config)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_SAVER, str(REPO_ROOT), str(root), str(go), str(who), str(count)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in (1, 2)
    ]
    time.sleep(0.5)
    go.write_text("go")
    reported = []
    for p in procs:
        out, err = p.communicate(timeout=90)
        assert p.returncode == 0, err
        reported += json.loads(out.strip().splitlines()[-1])
    assert len(reported) == 2 * count
    assert len(set(reported)) == 2 * count  # every save got its own file
    on_disk = files_in(root)
    assert len(on_disk) == 2 * count and not [n for n in on_disk if n.startswith(".")]
    assert sorted(os.path.basename(p) for p in reported) == on_disk
    seen = {tuple(read_pixels(root / n)[0, 0, :2].tolist()) for n in on_disk}
    assert seen == {(who, i) for who in (1, 2) for i in range(count)}  # nothing lost, nothing overwritten


# ---- Job Info --------------------------------------------------------------------------------------------


def test_job_info_reads_the_bridge_entry():
    assert ComfyMQJobInfo().job_info(extra_pnginfo=job_pnginfo()) == (JOB, 2, "b-7", 3)
    assert current_job(job_pnginfo()).prompt_id == "p-1"


@pytest.mark.parametrize(
    "extra",
    [None, {}, {"workflow": WORKFLOW}, {"comfymq": None}, {"comfymq": "x"}, {"comfymq": [1, 2]}, "not a dict", 42],
)
def test_job_info_is_empty_outside_a_job(extra):
    assert ComfyMQJobInfo().job_info(extra_pnginfo=extra) == ("", 0, "", 0)
    assert ComfyMQJobInfo().job_info() == ("", 0, "", 0)


def test_job_info_tolerates_missing_and_odd_values():
    odd = {"comfymq": {"job_id": JOB, "attempt": "3", "batch_id": None, "batch_index": float("nan")}}
    assert ComfyMQJobInfo().job_info(extra_pnginfo=odd) == (JOB, 3, "", 0)
    odd = {"comfymq": {"job_id": JOB, "attempt": True, "batch_id": {"x": 1}, "batch_index": "many"}}
    assert ComfyMQJobInfo().job_info(extra_pnginfo=odd) == (JOB, 0, "", 0)
    assert ComfyMQJobInfo().job_info(extra_pnginfo={"comfymq": {"attempt": 1}}) == ("", 1, "", 0)


def test_job_info_always_runs_again():
    value = ComfyMQJobInfo.IS_CHANGED(extra_pnginfo=job_pnginfo())
    assert isinstance(value, float) and math.isnan(value)
    assert value != ComfyMQJobInfo.IS_CHANGED()  # ComfyUI compares with !=: NaN never matches a cached run


# ---- Load Job Artifact ---------------------------------------------------------------------------------------


@pytest.fixture
def artifacts(tmp_path, monkeypatch) -> Path:
    allow_save_roots(monkeypatch, tmp_path / "artifacts")
    return tmp_path / "artifacts"


def save_artifact(artifacts: Path, images, job=JOB, template="{job}_{counter}") -> str:
    """Saves like a job's output lands in the artifact store: <root>/<job id>/<name>; returns the name."""
    result = save(images, artifacts / job, name_template=template, extra_pnginfo=job_pnginfo(job_id=job))
    return result["ui"]["comfymq_files"][0]["name"]


def load(job_id, name, root):
    return ComfyMQLoadJobArtifact().load_artifact(job_id, name, str(root))


def test_load_round_trips_a_saved_image(artifacts):
    images = rgb_batch(1, 7, 9, seed=5)
    name = save_artifact(artifacts, images)
    image, mask = load(JOB, name, artifacts)
    assert isinstance(image, np.ndarray)  # numpy without torch; torch tensors inside ComfyUI
    assert image.dtype == np.float32 and image.shape == (1, 7, 9, 3)
    assert np.abs(image - images).max() <= 1 / 255
    assert mask.shape == (1, 64, 64) and not mask.any()  # no alpha: LoadImage's empty 64 x 64 mask


def test_load_turns_alpha_into_mask(artifacts):
    rgb = rgb_batch(1, 4, 6)
    alpha = np.linspace(0, 1, 24, dtype=np.float32).reshape(1, 4, 6, 1)
    name = save_artifact(artifacts, np.concatenate([rgb, alpha], axis=-1))
    image, mask = load(JOB, name, artifacts)
    assert image.shape == (1, 4, 6, 3) and np.abs(image - rgb).max() <= 1 / 255
    assert mask.shape == (1, 4, 6)
    assert np.abs(mask - (1.0 - alpha[..., 0])).max() <= 1 / 255


def test_load_uppercase_job_id_and_env_root(artifacts, monkeypatch):
    name = save_artifact(artifacts, rgb_batch())
    monkeypatch.setenv("COMFYMQ_ARTIFACT_ROOT", str(artifacts))
    image, _ = ComfyMQLoadJobArtifact().load_artifact(JOB.upper(), name)
    assert image.shape == (1, 6, 5, 3)


def test_default_root_is_output_folder_comfymq(output_dir, monkeypatch):
    monkeypatch.delenv("COMFYMQ_ARTIFACT_ROOT", raising=False)
    name = save_artifact(output_dir / "comfymq", rgb_batch())
    image, _ = ComfyMQLoadJobArtifact().load_artifact(JOB, name)
    assert image.shape == (1, 6, 5, 3)


@pytest.mark.parametrize(
    "job_id, name, message",
    [
        ("../../../etc", "passwd", "not a ComfyMQ job id"),
        ("0123456789abcde", "x.png", "not a ComfyMQ job id"),
        ("0123456789abcdeg", "x.png", "not a ComfyMQ job id"),
        (JOB, "../" + OTHER_JOB + "/x.png", "path separator"),
        (JOB, "..", r"'\.\.'"),
        (JOB, "sub\\x.png", "path separator"),
        (JOB, "x\x00.png", "NUL"),
        (JOB, "x\n.png", "control character"),
        (JOB, ".cmq-tmp.host.1.x.png", r"starts with '\.'"),
        (JOB, "", "name is empty"),
    ],
)
def test_load_refuses_bad_ids_and_names(artifacts, job_id, name, message):
    save_artifact(artifacts, rgb_batch())
    with pytest.raises(ValueError, match=message):
        load(job_id, name, artifacts)
    assert isinstance(ComfyMQLoadJobArtifact.VALIDATE_INPUTS(job_id=job_id, name=name, root=str(artifacts)), str)


def test_load_reads_only_from_the_folders_the_save_node_may_use(output_dir, tmp_path, monkeypatch):
    """A workflow (or a page posting to ComfyUI's /prompt) cannot point the node at any folder of the machine: its
    root follows the save node's rule, and its default is the configured artifact_root, not only the env."""
    elsewhere = tmp_path / "home" / "someone"
    name = save_artifact(output_dir / "x", rgb_batch())  # a place the save node may write, to copy from
    (elsewhere / JOB).mkdir(parents=True)
    (elsewhere / JOB / name).write_bytes((output_dir / "x" / JOB / name).read_bytes())
    for root in (str(elsewhere), "../home/someone", "~/../../" + str(elsewhere)):
        with pytest.raises(ValueError, match="save_roots"):
            load(JOB, name, root)
        assert "save_roots" in ComfyMQLoadJobArtifact.VALIDATE_INPUTS(job_id=JOB, name=name, root=root)
    allow_save_roots(monkeypatch, elsewhere)
    assert load(JOB, name, elsewhere)[0].shape == (1, 6, 5, 3)
    # No root: artifact_root as comfymq.toml sets it (the plugin's own reading), not only COMFYMQ_ARTIFACT_ROOT.
    toml = Path(os.environ["COMFYMQ_CONFIG"])
    toml.write_text(f'artifact_root = "{elsewhere}"\n')
    monkeypatch.delenv("COMFYMQ_SAVE_ROOTS")
    image, _ = ComfyMQLoadJobArtifact().load_artifact(JOB, name)
    assert image.shape == (1, 6, 5, 3)


def test_load_refuses_a_symlink_leading_outside_the_root(artifacts, tmp_path):
    secret = tmp_path / "secret.png"
    Image.new("RGB", (2, 2)).save(secret)
    (artifacts / JOB).mkdir(parents=True)
    (artifacts / JOB / "link.png").symlink_to(secret)
    with pytest.raises(ValueError, match="outside the artifact root"):
        load(JOB, "link.png", artifacts)
    (artifacts / OTHER_JOB).symlink_to(tmp_path)  # a job folder that is a link out of the root
    with pytest.raises(ValueError, match="outside the artifact root"):
        load(OTHER_JOB, "secret.png", artifacts)


def test_load_missing_file_is_a_clear_error(artifacts):
    save_artifact(artifacts, rgb_batch())
    with pytest.raises(ValueError, match=f"job {JOB} has no artifact named 'nope.png'"):
        load(JOB, "nope.png", artifacts)
    with pytest.raises(ValueError, match=f"job {OTHER_JOB} has no artifact"):
        load(OTHER_JOB, f"{JOB}_00001.png", artifacts)


def test_load_is_changed_follows_the_file_content(artifacts):
    name = save_artifact(artifacts, rgb_batch(), template="same")
    path = artifacts / JOB / name
    assert ComfyMQLoadJobArtifact.IS_CHANGED(JOB, name, str(artifacts)) == hashlib.sha256(path.read_bytes()).hexdigest()
    missing = ComfyMQLoadJobArtifact.IS_CHANGED(JOB, "later.png", str(artifacts))
    assert missing.startswith("unavailable:") and "no artifact named 'later.png'" in missing
    refused = ComfyMQLoadJobArtifact.IS_CHANGED("nope", name, str(artifacts))
    assert refused.startswith("unavailable:")


def test_load_validate_inputs(artifacts):
    name = save_artifact(artifacts, rgb_batch())
    assert ComfyMQLoadJobArtifact.VALIDATE_INPUTS(job_id=JOB, name=name, root=str(artifacts)) is True
    assert ComfyMQLoadJobArtifact.VALIDATE_INPUTS() is True  # linked inputs: checked when the prompt runs
    assert ComfyMQLoadJobArtifact.VALIDATE_INPUTS(name="a/b") == "artifact name 'a/b' contains a path separator"
    assert "has no artifact" in ComfyMQLoadJobArtifact.VALIDATE_INPUTS(job_id=JOB, name="x.png", root=str(artifacts))


def test_load_palette_transparency_and_grey(artifacts):
    folder = artifacts / JOB
    folder.mkdir(parents=True)
    pal = Image.new("P", (3, 2), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.save(folder / "pal.png", transparency=0)
    Image.new("L", (3, 2), 51).save(folder / "grey.png")
    image, mask = load(JOB, "pal.png", artifacts)
    assert image[0, 0, 1].tolist() == [1.0, 0.0, 0.0]
    assert mask.shape == (1, 2, 3) and mask[0, 0, 0] == 1.0 and mask[0, 0, 1] == 0.0
    image, mask = load(JOB, "grey.png", artifacts)
    assert np.allclose(image, 0.2) and mask.shape == (1, 64, 64)


def test_as_node_value_is_numpy_without_torch():
    array = np.zeros((1, 2, 2, 3), dtype=np.float32)
    assert (image_helpers.optional_torch() is None) == (image_helpers.as_node_value(array) is array)


def test_writer_is_opened_once_per_root(nas):
    save(rgb_batch(), nas, name_template="a")
    w = save_image_atomic.writer_for(str(nas))
    save(rgb_batch(), nas, name_template="b")
    assert save_image_atomic.writer_for(str(nas)) is w


def test_history_scanners_see_each_previewable_file_once(output_dir, nas):
    # The worker bridge fetches every {filename, ...} dict under any key of a node's history output through
    # /view: only ui.images may look like that, or files would be fetched twice (or from a folder /view
    # cannot serve).
    for root in ("", nas):
        ui = save(rgb_batch(2), root, extra_pnginfo=job_pnginfo())["ui"]
        fetchable = [
            item
            for items in ui.values()
            if isinstance(items, list)
            for item in items
            if isinstance(item, dict) and item.get("filename")
        ]
        assert fetchable == ui["images"]
