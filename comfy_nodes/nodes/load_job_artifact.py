"""Load Job Artifact node: loads an image a finished ComfyMQ job produced, as IMAGE and MASK like LoadImage.

Artifacts live at <root>/<job id>/<name> (docs/protocol.md, "Files"). The root is the node's `root` input, else
ComfyMQ's configured artifact_root (COMFYMQ_ARTIFACT_ROOT or comfymq.toml, as the plugin reads it), else
<ComfyUI output folder>/comfymq.

Every input is untrusted (a shared workflow, or a page posting to ComfyUI's /prompt, may carry anything): the job
id must be 16 hex digits, the name one plain file name (no separator, "..", NUL, control character, leading
"."), the `root` input follows the save node's rule (ComfyUI's output folder, artifact_root or a save_roots
folder, symlinks and ".." resolved: save_image_atomic.resolve_root), and the resolved path, symlinks followed,
must stay inside the root.
"""

from __future__ import annotations

import hashlib
import os
import re

from .images import as_node_value, decode_image_file
from .job_info import CATEGORY
from .save_image_atomic import comfyui_user_directory, default_output_directory, resolve_root

ARTIFACT_ROOT_ENV = "COMFYMQ_ARTIFACT_ROOT"
ARTIFACT_SUBFOLDER = "comfymq"

_JOB_ID = re.compile(r"[0-9a-fA-F]{16}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def default_artifact_root() -> str:
    """ComfyMQ's artifact_root as the plugin reads it (env over comfymq.toml over <output>/comfymq); a bad
    configuration falls back to $COMFYMQ_ARTIFACT_ROOT, else <output>/comfymq."""
    from ..config import ConfigError, load_config  # here, not at import: the node module stays light

    try:
        return load_config(user_dir=comfyui_user_directory(), output_dir=default_output_directory()).artifact_root
    except ConfigError:
        env = os.environ.get(ARTIFACT_ROOT_ENV, "").strip()
        if env:
            return os.path.abspath(os.path.expanduser(env))
        return os.path.join(default_output_directory(), ARTIFACT_SUBFOLDER)


def check_job_id(job_id) -> str:
    """The job id, lowercased; ValueError unless it is 16 hex digits."""
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id.strip()):
        raise ValueError(f"job_id {job_id!r} is not a ComfyMQ job id (16 hex digits)")
    return job_id.strip().lower()


def check_name(name) -> str:
    """ValueError unless `name` is one plain file name."""
    if not isinstance(name, str) or not name:
        raise ValueError("name is empty: give the artifact's file name, e.g. 0123456789abcdef_00001.png")
    if "\x00" in name:
        raise ValueError(f"artifact name {name!r} contains a NUL byte")
    if "/" in name or "\\" in name:
        raise ValueError(f"artifact name {name!r} contains a path separator")
    if ".." in name:
        raise ValueError(f"artifact name {name!r} contains '..'")
    if _CONTROL.search(name):
        raise ValueError(f"artifact name {name!r} contains a control character")
    if name.startswith("."):
        raise ValueError(f"artifact name {name!r} starts with '.' (hidden and temp files are not artifacts)")
    return name


def artifact_path(job_id, name, root=None) -> str:
    """The checked, resolved path of job_id's artifact `name`; ValueError if it is refused or missing."""
    job = check_job_id(job_id)
    name = check_name(name)
    base = (root or "").strip()
    # a given root follows the save node's rule (RootRefused says which folders are allowed, and how to add one)
    base = resolve_root(base) if base else default_artifact_root()
    real_root = os.path.realpath(base)
    path = os.path.realpath(os.path.join(real_root, job, name))
    if not path.startswith(real_root.rstrip(os.sep) + os.sep):
        raise ValueError(f"artifact {job}/{name} resolves outside the artifact root {base}")
    if not os.path.isfile(path):
        raise ValueError(f"job {job} has no artifact named {name!r} under {base} (looked for {path})")
    return path


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ComfyMQLoadJobArtifact:
    """LoadImage for a ComfyMQ job's output file."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "job_id": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "The id of the job that produced the image "
                        "(16 hex digits, as the ComfyMQ panel shows it).",
                    },
                ),
                "name": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "The artifact's file name, e.g. 0123456789abcdef_00001.png (no folders).",
                    },
                ),
            },
            "optional": {
                "root": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "The artifact root holding <job id>/<name> (relative: "
                        "inside ComfyUI's output folder). Empty: "
                        "$COMFYMQ_ARTIFACT_ROOT, else ComfyUI's output "
                        "folder + /comfymq.",
                    },
                ),
            },
        }

    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "mask")
    OUTPUT_TOOLTIPS = (
        "The image as RGB, [frames, height, width, 3] in 0..1.",
        "1 - alpha, [frames, height, width]; zeros of 64 x 64 when the image has no alpha.",
    )
    FUNCTION = "load_artifact"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loads an image that a finished ComfyMQ job produced (from <artifact root>/<job id>/<name>) as "
        "IMAGE and MASK, like Load Image. Job id and name are checked: nothing outside the artifact "
        "root can be read."
    )

    @classmethod
    def VALIDATE_INPUTS(cls, job_id=None, name=None, root=None):
        # None: the input is linked to another node's output, known only when the prompt runs.
        try:
            if job_id is not None:
                check_job_id(job_id)
            if name is not None:
                check_name(name)
            if job_id is not None and name is not None:
                artifact_path(job_id, name, root)
        except ValueError as e:
            return str(e)
        return True

    @classmethod
    def IS_CHANGED(cls, job_id="", name="", root="", **_ignored):
        # The file's content decides; a refused or missing file gives its error text (the run then fails with it,
        # and the value changes once the file appears).
        try:
            return file_sha256(artifact_path(job_id, name, root))
        except (ValueError, OSError) as e:
            return f"unavailable: {e}"

    def load_artifact(self, job_id, name, root="", **_ignored):
        image, mask = decode_image_file(artifact_path(job_id, name, root))
        return (as_node_value(image), as_node_value(mask))


NODE_CLASS_MAPPINGS = {"ComfyMQLoadJobArtifact": ComfyMQLoadJobArtifact}
NODE_DISPLAY_NAME_MAPPINGS = {"ComfyMQLoadJobArtifact": "Load Job Artifact (ComfyMQ)"}
