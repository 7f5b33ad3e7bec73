"""Save Image (atomic) node: ComfyUI's SaveImage, written through ComfyMQ's atomic artifact writer.

What differs from SaveImage:
- Every PNG is written to a temp file, fsynced, renamed without replacing anything, and its folder fsynced
  (comfy_nodes._native.ArtifactWriter). A reader never sees half a file, and a name that is taken gets a
  "-1", "-2" ... suffix instead of being overwritten, so several ComfyUI processes (on several machines) can
  save into one shared folder (a NAS) at the same time without losing a file.
- `root` picks the folder (empty: ComfyUI's output folder); `name_template` picks the file names.

Where `root` may point (resolve_root; the prompt that sets it may come from anyone who reaches ComfyUI's /prompt,
which ComfyMQ's token does not guard): empty is ComfyUI's output folder; a relative path is taken inside the
output folder; `~` is expanded. The result, with "..", symlinks and any link in the output folder resolved
(os.path.realpath), must lie inside ComfyUI's output folder, ComfyMQ's artifact_root or one of save_roots (config
keys, comfy_nodes/config.py: COMFYMQ_SAVE_ROOTS or comfymq.toml). Refused outright, on every OS: a NUL byte and
Windows drive or UNC paths ("C:\\x", "C:x", "\\\\server\\share", "//server/share"); a backslash counts as a
separator. A refusal is a RootRefused (a ValueError: ComfyUI shows it as the node's error) naming the path, the
rule and the key that would allow it, raised before any folder is created or file written; VALIDATE_INPUTS
applies the same rule when the prompt is queued. The writer then gets the resolved folder, and refuses on its
own any link under it that leads out (native/include/comfymq/artifact_writer.h).

Name template placeholders (anything else is refused before a file is written):
  {job}      the ComfyMQ job id; outside a job (a prompt queued in ComfyUI directly) the prefix
  {prefix}   the last part of filename_prefix (its folders become subfolders, as in SaveImage)
  {batch}    the image's index in the IMAGE batch, from 0 (SaveImage's %batch_num%)
  {date}     today's local date, YYYY-MM-DD
  {counter}  5 digits, from 1 past the highest counter already in the folder for the same name, one per image
".png" is appended (a template already ending in ".png" keeps its own). A rendered name must not contain a path
separator or "..", nor start with ".".

What the node returns:
- ui.images: {filename, subfolder, type: "output"} for every file inside ComfyUI's output folder, exactly like
  SaveImage, so the UI previews them and ComfyUI's history lists them (the ComfyMQ worker bridge records a
  job's files from that history). A file saved under a root outside the output folder is NOT listed there:
  ComfyUI's /view serves only output/input/temp, and an entry relative to another folder would name a
  different (or no) file there.
- ui.comfymq_files: every file written, wherever it is: {name, subfolder and path (relative to root), root (the
  folder resolve_root gave, links resolved), full_path, size, sha256, mime, in_output_dir}, so the bridge can
  record the files (including those outside the output folder) without reading them again. These entries
  deliberately have no "filename"/"type" keys: tools that scan a prompt's history for {filename, subfolder, type}
  items to fetch through /view (the worker bridge does) must not fetch a file twice, nor try to fetch one /view
  cannot serve.
A batch is written image by image: if writing one fails, the images before it stay saved (each one whole).
"""

from __future__ import annotations

import os
import re
import string
import sys
import threading
import time
from typing import Any

from .. import native
from .images import encode_png, image_batch_to_uint8, png_text_chunks, require_pil
from .job_info import CATEGORY, current_job

DEFAULT_PREFIX = "ComfyMQ"
DEFAULT_TEMPLATE = "{job}_{counter}"
PLACEHOLDERS = ("job", "batch", "date", "counter", "prefix")
COUNTER_DIGITS = 5
EXTENSION = ".png"
MIME = "image/png"
MAX_NAME_BYTES = 180  # the writer allows 200 per path part and keeps room for a collision suffix

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# ---- where files go ---------------------------------------------------------------------------------------


def comfyui_output_directory() -> str | None:
    """ComfyUI's output folder when running inside ComfyUI (folder_paths is importable), else None."""
    try:
        import folder_paths  # ComfyUI's module for its folders; present on sys.path inside ComfyUI
    except ImportError:
        return None
    try:
        return os.path.abspath(folder_paths.get_output_directory())
    except Exception:  # noqa: BLE001 - an unexpected folder_paths is treated as absent
        return None


def default_output_directory() -> str:
    """ComfyUI's output folder; outside ComfyUI $COMFYMQ_OUTPUT_DIR, else ./output."""
    return comfyui_output_directory() or os.path.abspath(os.environ.get("COMFYMQ_OUTPUT_DIR") or "output")


def comfyui_user_directory() -> str | None:
    """ComfyUI's user folder (where comfymq.toml is looked for) inside ComfyUI, else None."""
    try:
        import folder_paths
    except ImportError:
        return None
    try:
        return os.path.abspath(folder_paths.get_user_directory())
    except Exception:  # noqa: BLE001 - an unexpected folder_paths is treated as absent
        return None


SAVE_ROOTS_KEY, SAVE_ROOTS_ENV = "save_roots", "COMFYMQ_SAVE_ROOTS"
ROOT_RULE = (
    "root must be empty (ComfyUI's output folder), a folder inside the output folder, or a folder inside "
    "ComfyMQ's artifact_root or one of its save_roots, with symlinks and '..' resolved"
)
_WINDOWS_DRIVE_OR_UNC = re.compile(r"^([A-Za-z]:|[\\/]{2})")


class RootRefused(ValueError):
    """The `root` input names a folder this node may not save into; the message says which, why, and how to allow it."""


def configured_roots() -> list[tuple[str, str]]:
    """(name, folder) for each folder the configuration allows besides the output folder: artifact_root, then every
    save_roots entry. Read with load_config as the plugin reads it (env over comfymq.toml, ComfyUI's folders for
    the defaults), at each call, so tests and a changed comfymq.toml need no restart; ConfigError if it is bad."""
    from ..config import load_config  # here, not at import: the node module imports only the standard library

    cfg = load_config(user_dir=comfyui_user_directory(), output_dir=default_output_directory())
    return [("artifact_root", cfg.artifact_root)] + [(SAVE_ROOTS_KEY, r) for r in cfg.save_roots]


def resolve_root(root: str | None) -> str:
    """The real folder (symlinks resolved) to save into for the `root` input, or RootRefused: the rule is in this
    module's docstring. Touches nothing on disk but reading links and comfymq.toml (only for a root outside the
    output folder)."""
    if root is not None and not isinstance(root, str):
        raise RootRefused(f"root must be text, got {type(root).__name__}")
    text = (root or "").strip()
    output = os.path.realpath(default_output_directory())
    if not text:
        return output
    if "\x00" in text:
        raise RootRefused(f"root {text!r} contains a NUL byte; {ROOT_RULE}")
    if _WINDOWS_DRIVE_OR_UNC.match(text):
        raise RootRefused(f"root {text!r} is a Windows drive or UNC path, which this node never takes; {ROOT_RULE}")
    path = text.replace("\\", "/")  # one meaning on every OS: "..\\x" climbs on Windows, so it climbs here too
    real = os.path.realpath(os.path.join(output, os.path.expanduser(path)))
    if _inside(real, output):
        return real
    try:
        allowed = configured_roots()
    except ValueError as e:  # ConfigError
        raise RootRefused(
            f"root {text!r} resolves to {real}, outside ComfyUI's output folder {output}, and ComfyMQ's "
            f"configuration, whose {SAVE_ROOTS_KEY} could allow it, cannot be read: {e}"
        ) from None
    if any(_inside(real, folder) for _, folder in allowed):
        return real
    listed = "; ".join(f"{name} {folder}" for name, folder in allowed)
    raise RootRefused(
        f"root {text!r} resolves to {real}, outside the folders this node may save into (ComfyUI's output "
        f"folder {output}; {listed}): {ROOT_RULE}. To allow it, add that folder (or one holding it) to "
        f"{SAVE_ROOTS_KEY}: {SAVE_ROOTS_ENV} (absolute paths, comma-separated) or {SAVE_ROOTS_KEY} in comfymq.toml"
    )


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


_writers: dict[str, Any] = {}
_writers_lock = threading.Lock()


def writer_for(root: str):
    """One ArtifactWriter per root per process (opening one scans the root for stale temp files)."""
    key = os.path.abspath(root)
    with _writers_lock:
        writer = _writers.get(key)
        if writer is None:
            writer = native.load().ArtifactWriter(root)
            _writers[key] = writer
        return writer


def metadata_disabled() -> bool:
    """True when ComfyUI was started with --disable-metadata (SaveImage then writes no text chunks)."""
    args = getattr(sys.modules.get("comfy.cli_args"), "args", None)
    return bool(getattr(args, "disable_metadata", False))


# ---- names ------------------------------------------------------------------------------------------------


def split_prefix(filename_prefix: str) -> tuple[str, str]:
    """filename_prefix "a/b/name" -> (subfolder "a/b", prefix "name"), as SaveImage splits it."""
    text = (filename_prefix or "").replace("\\", "/")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise ValueError(f"filename_prefix {filename_prefix!r} must be relative (use root for another folder)")
    if _CONTROL.search(text):
        raise ValueError(f"filename_prefix {filename_prefix!r} contains a control character")
    parts = text.split("/")
    folders = [p for p in parts[:-1] if p not in ("", ".")]
    if ".." in folders:
        raise ValueError(f"filename_prefix {filename_prefix!r} must not contain '..'")
    if any(p.startswith(".") for p in folders):
        raise ValueError(f"filename_prefix {filename_prefix!r} names a hidden folder")
    return "/".join(folders), parts[-1] or DEFAULT_PREFIX


def parse_template(template: str) -> list[tuple[str, str | None]]:
    """The template as (literal text, placeholder or None) pieces; ValueError naming any problem."""
    if not isinstance(template, str) or not template.strip():
        raise ValueError("name template is empty")
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(
            f"name template {template!r} is malformed: {e} (write {{{{ and }}}} for literal braces)"
        ) from None
    out = []
    for literal, field, spec, conversion in pieces:
        if field is not None:
            if field not in PLACEHOLDERS:
                shown = "{" + field + "}"
                raise ValueError(
                    f"name template {template!r} has an unknown placeholder {shown}; "
                    f"known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
                )
            if spec or conversion:
                raise ValueError(
                    f"name template {template!r}: placeholder {{{field}}} takes no format "
                    f"(found {'!' + conversion if conversion else ''}{':' + spec if spec else ''})"
                )
        out.append((literal, field))
    return out


def _template_body(pieces):
    """Drops a trailing ".png" from the template's last literal (it is added once, always)."""
    if pieces and pieces[-1][1] is None and pieces[-1][0].lower().endswith(EXTENSION):
        pieces = pieces[:-1] + [(pieces[-1][0][: -len(EXTENSION)], None)]
    return pieces


def render_name(pieces, values: dict) -> str:
    out = []
    for literal, field in _template_body(pieces):
        out.append(literal)
        if field == "counter":
            out.append(f"{values['counter']:0{COUNTER_DIGITS}d}")
        elif field is not None:
            out.append(str(values[field]))
    return "".join(out) + EXTENSION


def check_name(template: str, name: str) -> None:
    """ValueError unless `name` is one plain file name."""
    problem = None
    stem = name[: -len(EXTENSION)]
    if not stem:
        problem = "is empty"
    elif "/" in name or "\\" in name:
        problem = "contains a path separator"
    elif ".." in name:
        problem = "contains '..'"
    elif name.startswith("."):
        problem = "starts with '.' (a hidden file)"
    elif _CONTROL.search(name):
        problem = "contains a control character"
    elif len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        problem = f"is longer than {MAX_NAME_BYTES} bytes"
    if problem:
        raise ValueError(f"name template {template!r} renders the file name {name!r}, which {problem}")


def _counter_regex(pieces, values: dict):
    """Matches the names this template gives for any counter and batch index (with or without a collision suffix)."""
    out, seen_counter = [], False
    for literal, field in _template_body(pieces):
        out.append(re.escape(literal))
        if field == "counter":
            out.append("(?P=c)" if seen_counter else r"(?P<c>\d+)")
            seen_counter = True
        elif field == "batch":
            out.append(r"\d+")
        elif field is not None:
            out.append(re.escape(str(values[field])))
    return re.compile("".join(out) + r"(?:-\d+)?" + re.escape(EXTENSION))


def next_counter(directory: str, pieces, values: dict) -> int:
    """1 + the highest counter among the folder's files named by this template (1 for none).

    Two processes can pick the same counter at the same moment; the writer then gives the later file a
    collision suffix, so nothing is overwritten.
    """
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return 1
    regex = _counter_regex(pieces, values)
    best = 0
    for n in names:
        m = regex.fullmatch(n)
        if m:
            best = max(best, int(m.group("c")))
    return best + 1


def plan_names(
    name_template: str,
    filename_prefix: str,
    extra_pnginfo: Any,
    count: int,
    directory: str | None,
    today: str | None = None,
) -> tuple[str, list[str]]:
    """(subfolder, file names) for `count` images; ValueError for a bad template or prefix.

    With directory None the counter starts at 1 (used to validate without touching the disk).
    """
    pieces = parse_template(name_template)
    subfolder, prefix = split_prefix(filename_prefix)
    job = current_job(extra_pnginfo)
    values = {"job": job.job_id or prefix, "prefix": prefix, "date": today or time.strftime("%Y-%m-%d")}
    uses_counter = any(field == "counter" for _, field in pieces)
    first = 1
    if uses_counter and directory is not None:
        first = next_counter(os.path.join(directory, subfolder) if subfolder else directory, pieces, values)
    names = [render_name(pieces, {**values, "batch": i, "counter": first + i}) for i in range(count)]
    for name in names:
        check_name(name_template, name)
    return subfolder, names


# ---- the node ---------------------------------------------------------------------------------------------


class ComfyMQSaveImageAtomic:
    """SaveImage with atomic, never-overwriting writes, a chosen root folder and a file name template."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": (
                    "STRING",
                    {
                        "default": DEFAULT_PREFIX,
                        "tooltip": "The {prefix} of the file names. Folders in it ('portraits/ComfyMQ') become "
                        "subfolders of the root, as in Save Image.",
                    },
                ),
            },
            "optional": {
                "root": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "Folder to save into. Empty: ComfyUI's output folder; a relative path is taken "
                        "inside it. It must stay inside the output folder (symlinks and '..' resolved), ComfyMQ's "
                        "artifact_root, or a folder the admin lists in save_roots (COMFYMQ_SAVE_ROOTS or "
                        "comfymq.toml), e.g. a NAS folder shared by several ComfyUI machines; anything else is "
                        "refused. Files saved outside the output folder are not previewed in the UI.",
                    },
                ),
                "name_template": (
                    "STRING",
                    {
                        "default": DEFAULT_TEMPLATE,
                        "tooltip": "File name without extension. Placeholders: {job} (job id; the prefix outside a "
                        "ComfyMQ job), {prefix}, {batch} (index in the image batch), {date} (YYYY-MM-DD), "
                        "{counter} (5 digits). A name that exists gets a -1, -2 ... suffix; no file is "
                        "ever overwritten.",
                    },
                ),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The input images, unchanged.",)
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Saves images as PNG like Save Image, but atomically: each file appears whole or not at all, "
        "and an existing name is never overwritten (the new file gets a -1, -2 ... suffix), so several "
        "ComfyUI machines can save into one shared folder. The files are listed in the prompt's outputs, "
        "where the ComfyMQ worker records them on the current job. The workflow and prompt are embedded as PNG text, as Save Image does."
    )

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix=None, name_template=None, root=None):
        # None: the input is linked to another node's output, known only when the prompt runs.
        try:
            if name_template is not None:
                parse_template(name_template)
            if filename_prefix is not None:
                split_prefix(filename_prefix)
            if name_template is not None and filename_prefix is not None:
                plan_names(name_template, filename_prefix, None, 1, None)
            if root is not None:
                resolve_root(root)  # RootRefused is a ValueError
        except ValueError as e:
            return str(e)
        return True

    def save_images(
        self,
        images,
        filename_prefix=DEFAULT_PREFIX,
        root="",
        name_template=DEFAULT_TEMPLATE,
        prompt=None,
        extra_pnginfo=None,
        **_ignored,
    ):
        frames = image_batch_to_uint8(images)
        require_pil()  # a missing Pillow fails here, before the root is created
        plan_names(name_template, filename_prefix, extra_pnginfo, len(frames), None)  # refuse before any I/O
        base = resolve_root(root)  # RootRefused before any folder is made; the real path, links resolved
        writer = writer_for(base)
        subfolder, names = plan_names(name_template, filename_prefix, extra_pnginfo, len(frames), base)
        text = {} if metadata_disabled() else png_text_chunks(prompt, extra_pnginfo)
        output_dir = comfyui_output_directory()

        previews, files = [], []
        for frame, name in zip(frames, names, strict=True):
            info = writer.write(f"{subfolder}/{name}" if subfolder else name, encode_png(frame, text))
            full_path = info["full_path"]
            filename = os.path.basename(full_path)
            rel_dir = os.path.dirname(info["path"])
            in_output = output_dir is not None and _inside(full_path, output_dir)
            if in_output:
                out_rel = os.path.relpath(os.path.dirname(os.path.realpath(full_path)), os.path.realpath(output_dir))
                subfolder_in_output = "" if out_rel == "." else out_rel.replace(os.sep, "/")
                previews.append({"filename": filename, "subfolder": subfolder_in_output, "type": "output"})
            files.append(
                {
                    "name": filename,
                    "subfolder": rel_dir,
                    "path": info["path"],
                    "root": base,
                    "full_path": full_path,
                    "size": info["size"],
                    "sha256": info["sha256"],
                    "mime": MIME,
                    "in_output_dir": in_output,
                }
            )
        return {"ui": {"images": previews, "comfymq_files": files}, "result": (images,)}


NODE_CLASS_MAPPINGS = {"ComfyMQSaveImageAtomic": ComfyMQSaveImageAtomic}
NODE_DISPLAY_NAME_MAPPINGS = {"ComfyMQSaveImageAtomic": "Save Image (atomic, ComfyMQ)"}
