"""The input files a job's prompt names, in the form the host stores them, and the prompt a ComfyUI is given.

The host stores a job's input files by content and writes each file input of the prompt it commits (LoadImage's
`image`, LoadImageMask's `image`, LoadVideo's `file`, LoadAudio's `audio`, ...) in the STORED FORM:

    {"comfymq_input": "<sha256, 64 lowercase hex digits>", "name": "<one safe file name>", "size": <bytes>}

find_input_refs(prompt) lists them (any node input whose value is an object with the key "comfymq_input"; other
keys of that object are ignored) and raises InputRefError, naming the node and input, for one that is malformed:
the job cannot run anywhere, so it fails without a retry. rewrite_prompt(prompt, values) returns the prompt with
each of them replaced by the string ComfyUI's loaders take for an uploaded file, "<subfolder>/<name>" relative to
ComfyUI's input folder (folder_paths.get_annotated_filepath joins it there; the loaders' VALIDATE_INPUTS /
validate_inputs take any existing path, so a value outside the input folder's listing is accepted).

A name is safe when it is one path component ComfyUI stores and serves as given: no separator, no "." or "..", no
control character, at most 255 UTF-8 bytes, and no ComfyUI annotation suffix ("[input]", "[output]", "[temp]",
which would make a loader read from another folder).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KEY = "comfymq_input"  # the key that makes a node input value a stored-form reference
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ANNOTATIONS = ("[input]", "[output]", "[temp]")  # folder_paths.annotated_filepath
MAX_NAME_BYTES = 255


class InputRefError(ValueError):
    """A stored-form reference that is malformed; the message names the node and input."""

    def __init__(self, node_id: str, input_name: str, reason: str):
        self.node_id, self.input_name = node_id, input_name
        super().__init__(f"node {node_id} input '{input_name}': {reason}")


@dataclass(frozen=True)
class InputRef:
    node_id: str
    input_name: str
    sha256: str
    name: str
    size: int


def subfolder_for(sha256: str) -> str:
    """The folder under ComfyUI's input folder an input is uploaded into: one per content, so two files of the
    same name never meet there and the same file uploaded again keeps its name."""
    return f"comfymq/{sha256[:16]}"


def name_problem(name) -> str | None:
    """Why `name` is not a safe file name (see the module's docstring), or None."""
    if not isinstance(name, str) or not name:
        return "the name must be a non-empty string"
    if "/" in name or "\\" in name:
        return f"the name {name!r} is not a single file name"
    if name in (".", "..") or name.strip() != name:
        return f"the name {name!r} is not a usable file name"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "the name holds a control character"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"the name is longer than {MAX_NAME_BYTES} bytes"
    if name.endswith(_ANNOTATIONS):
        return f"the name {name!r} ends with a ComfyUI folder annotation"
    return None


def _parse(node_id: str, input_name: str, value: dict) -> InputRef:
    sha = value.get(KEY)
    if not isinstance(sha, str) or not _SHA256.match(sha):
        raise InputRefError(node_id, input_name, f"'{KEY}' must be a sha256 in 64 lowercase hex digits")
    if "name" not in value or "size" not in value:
        raise InputRefError(
            node_id, input_name, "the input reference lacks its name or size (the host did not store this input)"
        )
    problem = name_problem(value["name"])
    if problem is not None:
        raise InputRefError(node_id, input_name, problem)
    size = value["size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InputRefError(node_id, input_name, "the size must be a whole number of bytes")
    return InputRef(str(node_id), str(input_name), sha, value["name"], size)


def find_input_refs(prompt: dict) -> list[InputRef]:
    """Every stored-form reference in an API-format prompt, in prompt order; InputRefError for a malformed one."""
    refs = []
    for node_id, node in prompt.items() if isinstance(prompt, dict) else ():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        for input_name, value in inputs.items() if isinstance(inputs, dict) else ():
            if isinstance(value, dict) and KEY in value:
                refs.append(_parse(str(node_id), str(input_name), value))
    return refs


def rewrite_prompt(prompt: dict, values: dict[tuple[str, str], str]) -> dict:
    """A copy of the prompt with each (node id, input name) in `values` set to its value; the rest is shared with
    the original (which is not changed)."""
    out = dict(prompt)
    for (node_id, input_name), value in values.items():
        node = dict(out[node_id])
        node["inputs"] = {**node["inputs"], input_name: value}
        out[node_id] = node
    return out
