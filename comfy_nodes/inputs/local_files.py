"""Inside ComfyUI: a graph's upload inputs that name a file in ComfyUI's folders, copied into the input store.

A workflow from ComfyUI's canvas names its inputs by file: LoadImage `"image": "photo.png"`, the mask editor's
`"clipspace/clipspace-mask-123.png [input]"`, LoadImageOutput's `"x.png [output]"`, Load3D's `"3d/m.glb"`. That
file is only on this machine; for the job to run on any worker, the host copies it into the input store at
enqueue and commits the reference's stored form (graph.py) in its place.

Which inputs are uploads: ComfyUI's node definitions say, through an option of the input in INPUT_TYPES():
`image_upload`, `video_upload`, `audio_upload`, `file_upload` (v0.8.0: comfy_api's UploadType, LoadImage,
LoadImageMask, LoadImageOutput, LoadVideo, LoadAudio, Load3D), and `animated_image_upload` / `upload` as some
frontends and custom nodes spell it. upload_inputs_of() reads them; NodeUploadInputs caches them per node class.

Where the file is: ComfyUI's rule (folder_paths.get_annotated_filepath): a name ending in " [input]",
" [output]" or " [temp]" lies in that folder, any other in the input folder. The name is a relative path inside
the folder: absolute paths, '..' and symlinks leading out of the folder are refused, like a missing, unreadable
or non-regular file (BadReference naming the node, the input and the file: a 400, nothing queued).

    local = LocalFiles(store, NodeUploadInputs(lambda: nodes.NODE_CLASS_MAPPINGS), comfy_folders)
    graph.resolve_prompt(prompt, store, local)

The same rules serve a worker-role ComfyUI that sends such files to its host before forwarding a job
(forward_uploads.py): upload_inputs, locate, travel_name, unreadable and FileHashes are shared with it.

Tests pass any upload_inputs function and any folders (a temp folder as "ComfyUI's input folder").
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Collection, Mapping

from .graph import BadReference, Place, stored_form
from .names import safe_name, sniff_extension
from .store import InputStore, InputTooLarge

log = logging.getLogger("comfymq.inputs")

UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "file_upload", "animated_image_upload", "upload")
FOLDER_TYPES = ("input", "output", "temp")
_ANNOTATED = re.compile(r"^(.*?) ?\[(input|output|temp)\]$", re.DOTALL)
KNOWN_FILES = 4096  # files whose content hash is remembered (by inode, size and mtime), so a re-queue copies nothing


def upload_inputs_of(input_types: Any) -> frozenset[str]:
    """The names of the inputs that take an uploaded file, from a node class's INPUT_TYPES() result
    ({"required": {name: (type, {options})}, "optional": {...}})."""
    found = set()
    if not isinstance(input_types, dict):
        return frozenset()
    for section in ("required", "optional"):
        specs = input_types.get(section)
        if not isinstance(specs, dict):
            continue
        for name, spec in specs.items():
            options = spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 else None
            if isinstance(options, dict) and any(options.get(flag) for flag in UPLOAD_FLAGS):
                found.add(name)
    return frozenset(found)


class NodeUploadInputs:
    """upload_inputs(class_type) -> the class's upload inputs, read from node_classes() (ComfyUI's
    nodes.NODE_CLASS_MAPPINGS) on first sight of each class and kept while the class stays the same. A class
    whose INPUT_TYPES() fails has none (logged once)."""

    def __init__(self, node_classes: Callable[[], Mapping[str, Any]]):
        self._node_classes = node_classes
        self._known: dict[str, tuple[Any, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def __call__(self, class_type: str) -> frozenset[str]:
        cls = self._node_classes().get(class_type)
        if cls is None:
            return frozenset()
        with self._lock:
            known = self._known.get(class_type)
        if known is not None and known[0] is cls:
            return known[1]
        try:
            inputs = upload_inputs_of(cls.INPUT_TYPES())
        except Exception as e:  # noqa: BLE001 - a custom node's bug must not stop queueing
            log.warning("node %s: INPUT_TYPES() failed (%s); its inputs are not treated as uploads", class_type, e)
            inputs = frozenset()
        with self._lock:
            self._known[class_type] = (cls, inputs)
        return inputs


def split_annotation(name: str) -> tuple[str, str]:
    """(relative path, folder type) of a ComfyUI file name: "x.png [output]" -> ("x.png", "output"); a name
    without an annotation lies in the input folder."""
    m = _ANNOTATED.match(name)
    return (m.group(1), m.group(2)) if m else (name, "input")


def shown_name(name: str) -> str:
    """A file name as error messages quote it: at most 256 characters, control characters escaped."""
    return name[:256].encode("unicode_escape").decode("ascii")


def locate(name: str, folders: Mapping[str, str], where: Place) -> Path:
    """The real path of the file `name` names (the module doc), or BadReference saying why not."""
    relative, folder_type = split_annotation(name)
    shown = shown_name(name)

    def refuse(why: str) -> BadReference:
        return BadReference(f"{where}: file '{shown}' {why}; nothing was queued")

    base = folders.get(folder_type)
    if not base:
        raise refuse(f"is in ComfyUI's {folder_type} folder, which this host does not know")
    if not relative or "\x00" in relative:
        raise refuse("is not a file name")
    parts = re.split(r"[/\\]", relative)
    if os.path.isabs(relative) or relative.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", relative):
        raise refuse(f"is an absolute path: name a file inside ComfyUI's {folder_type} folder")
    if any(p == ".." for p in parts):
        raise refuse(f"leads out of ComfyUI's {folder_type} folder ('..')")
    root = os.path.realpath(base)
    full = os.path.realpath(os.path.join(root, *[p for p in parts if p not in ("", ".")]))
    if not full.startswith(root.rstrip(os.sep) + os.sep):
        raise refuse(f"leads out of ComfyUI's {folder_type} folder")
    if not os.path.isfile(full):
        raise refuse(f"is not in ComfyUI's {folder_type} folder ({base})")
    return Path(full)


def unreadable(value: str, where: Place, e: OSError) -> BadReference:
    """The refusal of a file `locate` found that cannot be read (unreadable, vanished)."""
    why = e.strerror or str(e)
    return BadReference(f"{where}: file '{shown_name(value)}' cannot be read ({why}); nothing was queued")


def travel_name(value: str, sha256: str, head: bytes = b"") -> str:
    """The name the file a graph names by `value` travels with (names.safe_name of its path without the folder
    annotation); head: its first bytes, for the fallback name's extension."""
    return safe_name(split_annotation(value)[0], sha256, sniff_extension(head))


class FileHashes:
    """The SHA-256 of files seen before, by (device, inode, size, mtime): a file unchanged since is not read
    again. The most recent KNOWN_FILES are kept. Thread-safe."""

    def __init__(self, capacity: int = KNOWN_FILES):
        self.capacity = capacity
        self._known: OrderedDict[tuple, str] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(st: os.stat_result) -> tuple:
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def get(self, st: os.stat_result) -> str | None:
        with self._lock:
            return self._known.get(self.key(st))

    def remember(self, st: os.stat_result, sha256: str) -> None:
        key = self.key(st)
        with self._lock:
            self._known[key] = sha256
            self._known.move_to_end(key)
            while len(self._known) > self.capacity:
                self._known.popitem(last=False)


class LocalFiles:
    """A graph.ValueResolver: the string value of an upload input (upload_inputs(class_type) names it) becomes the
    stored form of the file it names, copied into `store` (once per content: a file seen before with the same
    inode, size and mtime is not read again). Other values stay. folders(): {"input": dir, "output": dir, "temp":
    dir}, asked at each call (ComfyUI's folder_paths may be changed at run time)."""

    def __init__(
        self,
        store: InputStore,
        upload_inputs: Callable[[str], Collection[str]],
        folders: Callable[[], Mapping[str, str]] | Mapping[str, str],
        max_bytes: int | None = None,
    ):
        self.store = store
        self.upload_inputs = upload_inputs
        self._folders = folders if callable(folders) else (lambda: folders)
        self.max_bytes = max_bytes
        self._hashes = FileHashes()

    def __call__(self, value: Any, where: Place) -> Any:
        if not isinstance(value, str) or where.input not in self.upload_inputs(where.class_type):
            return value
        path = locate(value, self._folders(), where)
        sha, size = self._store(path, value, where)
        head = b""
        if not os.path.splitext(path.name)[1]:
            try:
                with open(self.store.path(sha), "rb") as f:
                    head = f.read(16)
            except OSError:
                pass
        return stored_form(sha, travel_name(value, sha, head), size)

    def _store(self, path: Path, value: str, where: Place) -> tuple[str, int]:
        shown = shown_name(value)
        try:
            st = os.stat(path)
            sha = self._hashes.get(st)
            if sha is not None and self.store.touch(sha) == st.st_size:
                return sha, st.st_size
            stored = self.store.put_file(path, self.max_bytes)
        except InputTooLarge as e:
            raise BadReference(
                f"{where}: file '{shown}' is larger than the limit of {e.limit} bytes (max_input_bytes); "
                "nothing was queued"
            ) from None
        except OSError as e:  # unreadable, vanished
            raise unreadable(value, where, e) from None
        self._hashes.remember(st, stored.sha256)
        return stored.sha256, stored.size


def comfy_folders() -> dict[str, str]:
    """ComfyUI's input, output and temp folders (inside ComfyUI only)."""
    import folder_paths  # ComfyUI's module

    return {
        "input": folder_paths.get_input_directory(),
        "output": folder_paths.get_output_directory(),
        "temp": folder_paths.get_temp_directory(),
    }


def comfy_upload_inputs() -> NodeUploadInputs:
    """The upload inputs of the node classes of the ComfyUI this runs in (read when a class is first asked)."""

    def node_classes():
        import nodes  # ComfyUI's module; custom nodes register into it as they load

        return nodes.NODE_CLASS_MAPPINGS

    return NodeUploadInputs(node_classes)


def comfy_local_files(store: InputStore, max_bytes: int | None = None) -> LocalFiles:
    """The LocalFiles of the ComfyUI this runs in (its node classes and folders)."""
    return LocalFiles(store, comfy_upload_inputs(), comfy_folders, max_bytes)
