"""Where Save Image (atomic) may write: its `root` input stays inside ComfyUI's output folder, ComfyMQ's
artifact_root or a folder of save_roots (comfy_nodes/nodes/save_image_atomic.py, resolve_root).

`root` comes from the prompt, and ComfyUI's /prompt is not guarded by ComfyMQ's token: every way out (absolute
paths, "..", backslashes, "~", symlinks, Windows drive and UNC paths, NUL) is tried here, and each must be refused
with an error naming the path and the key that would allow it, before anything is made on disk: the whole test
folder (output folder, the places the attempts aim at, a stand-in home) is compared before and after.
"""

from __future__ import annotations

import os
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from comfy_nodes.config import ConfigError, load_config
from comfy_nodes.nodes.save_image_atomic import ComfyMQSaveImageAtomic, RootRefused


@pytest.fixture
def place(tmp_path, monkeypatch) -> types.SimpleNamespace:
    """<tmp>/output is ComfyUI's output folder, <tmp>/user its user folder (an empty comfymq.toml there);
    <tmp>/outside and <tmp>/home (HOME) are folders nothing may be saved into; <tmp>/nas is a share the tests
    allow or not. No COMFYMQ_* variable of the machine is seen."""
    for name in [k for k in os.environ if k.startswith("COMFYMQ_")]:
        monkeypatch.delenv(name)
    p = types.SimpleNamespace(
        tmp=tmp_path,
        output=tmp_path / "output",
        user=tmp_path / "user",
        outside=tmp_path / "outside",
        home=tmp_path / "home",
        nas=tmp_path / "nas",
    )
    for folder in (p.output, p.user, p.outside, p.home, p.nas):
        folder.mkdir()
    (p.user / "comfymq.toml").write_text("")
    fake = types.ModuleType("folder_paths")
    fake.get_output_directory = lambda: str(p.output)
    fake.get_user_directory = lambda: str(p.user)
    monkeypatch.setitem(sys.modules, "folder_paths", fake)
    monkeypatch.setenv("HOME", str(p.home))
    return p


def tree(folder: Path) -> set[str]:
    """Every file, folder and link under `folder` (links not followed)."""
    found = set()
    for top, dirs, files in os.walk(folder):
        found.update(os.path.relpath(os.path.join(top, n), folder) for n in dirs + files)
    return found


def save(root):
    return ComfyMQSaveImageAtomic().save_images(np.zeros((1, 2, 2, 3), dtype=np.float32), root=root)


def saved_path(root) -> Path:
    [f] = save(root)["ui"]["comfymq_files"]
    return Path(f["full_path"])


def refused(place, root) -> str:
    """Asserts the save and VALIDATE_INPUTS refuse `root` and nothing appears anywhere; returns the message."""
    before = tree(place.tmp)
    with pytest.raises(RootRefused) as e:
        save(root)
    assert tree(place.tmp) == before, "a refused save made something on disk"
    problem = ComfyMQSaveImageAtomic.VALIDATE_INPUTS(root=root)
    assert problem == str(e.value)
    assert tree(place.tmp) == before
    return str(e.value)


ESCAPES = {
    "absolute": lambda p: str(p.outside / "x"),
    "absolute_parent_of_output": lambda p: str(p.tmp),
    "dotdot": lambda p: "../outside/x",
    "dotdot_after_a_folder": lambda p: "sub/../../outside",
    "dotdot_inside_an_absolute_path": lambda p: str(p.output) + "/../outside",
    "backslash_dotdot": lambda p: "..\\outside\\x",
    "tilde": lambda p: "~",
    "tilde_folder": lambda p: "~/x",
    "unc_slashes": lambda p: "/" + str(p.outside / "unc"),  # "//tmp/...": UNC on Windows, /tmp/... on POSIX
}


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_each_way_out_is_refused_naming_the_path_and_the_key_that_allows_it(place, name):
    root = ESCAPES[name](place)
    message = refused(place, root)
    assert repr(root.strip()) in message or "UNC" in message
    if "UNC" not in message:  # a path that resolves: the message says where to, and how to allow it
        assert "resolves to" in message and "outside" in message
        assert "save_roots" in message and "COMFYMQ_SAVE_ROOTS" in message and "comfymq.toml" in message
    assert not list(place.outside.iterdir()) and not list(place.home.iterdir())


@pytest.mark.parametrize(
    "root, why",
    [
        ("C:\\Users\\Public", "Windows drive"),
        ("C:/Users/Public", "Windows drive"),
        ("c:relative", "Windows drive"),
        ("\\\\server\\share\\x", "UNC"),
        ("//{outside}", "UNC"),  # like //server/share; a code that took it would write under <tmp>/outside
        ("out\x00put", "NUL byte"),
        ("\x00", "NUL byte"),
    ],
)
def test_windows_drives_unc_and_nul_are_refused_on_every_os(place, root, why):
    message = refused(place, root.replace("{outside}", str(place.outside).lstrip("/")))
    assert why in message and "root must be empty" in message  # the rule is stated


def test_a_symlink_in_the_output_folder_that_leads_out_is_refused(place):
    (place.output / "link").symlink_to(place.outside, target_is_directory=True)
    for root in ("link", "link/deeper", str(place.output / "link")):
        message = refused(place, root)
        assert str(place.outside) in message  # where it really goes
    (place.output / "up").symlink_to("..", target_is_directory=True)
    refused(place, "up/outside")
    assert not list(place.outside.iterdir())


def test_a_symlink_whose_target_is_allowed_is_taken(place, monkeypatch):
    (place.output / "to_nas").symlink_to(place.nas, target_is_directory=True)
    refused(place, "to_nas")
    monkeypatch.setenv("COMFYMQ_SAVE_ROOTS", str(place.nas))
    assert saved_path("to_nas").parent == place.nas


def test_a_folder_whose_name_only_starts_like_an_allowed_one_is_refused(place, monkeypatch):
    monkeypatch.setenv("COMFYMQ_SAVE_ROOTS", str(place.nas))
    message = refused(place, str(place.nas) + "-evil")
    assert f"save_roots {place.nas}" in message  # the folders that are allowed are listed
    refused(place, str(place.nas / ".." / "outside"))


def test_the_output_folder_and_folders_inside_it(place):
    assert saved_path("").parent == place.output
    assert saved_path("   ").parent == place.output
    assert saved_path(".").parent == place.output
    assert saved_path("a/b").parent == place.output / "a" / "b"
    assert saved_path("a\\c").parent == place.output / "a" / "c"  # a backslash is a separator everywhere
    assert saved_path("a/../d").parent == place.output / "d"
    assert saved_path(str(place.output / "e")).parent == place.output / "e"
    assert ComfyMQSaveImageAtomic.VALIDATE_INPUTS(root="a/b") is True
    assert not list(place.outside.iterdir())


def test_save_roots_from_the_environment_allow_their_folders(place, monkeypatch):
    other = place.tmp / "other"
    monkeypatch.setenv("COMFYMQ_SAVE_ROOTS", f"{place.nas}, {other}")
    assert saved_path(str(place.nas)).parent == place.nas
    assert saved_path(str(place.nas / "deep" / "er")).parent == place.nas / "deep" / "er"
    assert saved_path(str(other)).parent == other
    monkeypatch.setenv("HOME", str(place.nas))
    assert saved_path("~/h").parent == place.nas / "h"  # ~ is expanded, then the rule applies
    assert ComfyMQSaveImageAtomic.VALIDATE_INPUTS(root=str(place.nas)) is True
    refused(place, str(place.outside))


def test_save_roots_from_comfymq_toml_in_comfyui_s_user_folder(place):
    (place.user / "comfymq.toml").write_text(f"[comfymq]\nsave_roots = [{str(place.nas)!r}]\n")
    assert saved_path(str(place.nas / "x")).parent == place.nas / "x"
    refused(place, str(place.outside))


def test_artifact_root_is_allowed_without_listing_it(place, monkeypatch):
    monkeypatch.setenv("COMFYMQ_ARTIFACT_ROOT", str(place.nas))
    assert saved_path(str(place.nas / "0123456789abcdef")).parent == place.nas / "0123456789abcdef"
    assert "artifact_root" in refused(place, str(place.outside))


def test_a_bad_configuration_refuses_outside_roots_and_still_saves_in_the_output_folder(place, monkeypatch):
    monkeypatch.setenv("COMFYMQ_SAVE_ROOTS", "relative/share")
    message = refused(place, str(place.nas))
    assert "cannot be read" in message and "COMFYMQ_SAVE_ROOTS" in message and "not an absolute path" in message
    assert saved_path("inside").parent == place.output / "inside"


# ---- the config key ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["relative/share", "~/share", "share", "C:relative"])
def test_save_roots_must_be_absolute(tmp_path, value):
    with pytest.raises(ConfigError, match=r"save_roots: .* is not an absolute path .*\(from COMFYMQ_SAVE_ROOTS\)"):
        load_config({"COMFYMQ_SAVE_ROOTS": f"/ok,{value}"}, user_dir=str(tmp_path))
    toml = tmp_path / "comfymq.toml"
    toml.write_text(f"save_roots = [{value!r}]\n")
    with pytest.raises(ConfigError, match=re.escape(f"(in {toml})")):
        load_config({}, toml_path=toml)


def test_save_roots_are_read_normalized(tmp_path):
    cfg = load_config({"COMFYMQ_SAVE_ROOTS": " /mnt/nas/ , /srv//x/../y "}, user_dir=str(tmp_path))
    assert cfg.save_roots == ["/mnt/nas", "/srv/y"]
    assert load_config({}, user_dir=str(tmp_path)).save_roots == []
