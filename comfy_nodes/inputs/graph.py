"""Input references in an API-format prompt: finding, checking and rewriting them.

A node input whose value is an object with the key "comfymq_input" refers to a stored input by content:

  {"comfymq_input": "<sha256>"}                                      what a client writes
  {"comfymq_input": "<sha256>", "name": "photo.png"}                 with the name it should travel with
  {"comfymq_input": "<sha256>", "name": "photo.png", "size": 1234}   the STORED FORM: what the host commits with
                                                                     the job and what workers see

Only a node input's own value is looked at (not values nested in lists or objects). A reference in any other
shape (the sha not 64 lowercase hex digits, a key other than name and size, a name that is not a string, a size
that is not the stored one) is a BadReference naming the node and the input. At enqueue every reference must
name an input the store holds (else a BadReference naming node, class_type, input and sha) and is rewritten to
the stored form, its name made safe (names.safe_name).

    resolve_prompt(prompt, store, local=None)  -> the prompt with stored forms (the same object when it has
                                                  none to rewrite); local: plain file names too (local_files.py)
    value_resolver(store, local=None)          -> the same for one value in a given Place (sweep values)
    job_inputs(prompt)                         -> [{"node", "input", "sha256", "size", "name"}] for job views
    referenced_sha256s(prompt)                 -> the sha256s a prompt's stored forms name (retention)

The native core's capability routing matches only string values against workers' choices, so a reference (an
object) never makes a worker look unable to run the job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from .names import safe_name, sniff_extension
from .store import SHA256_RE, InputStore

KEY = "comfymq_input"
OPTIONAL_KEYS = ("name", "size")


class BadReference(ValueError):
    """A reference the host refuses (a 400); the message names the node and the input."""


@dataclass(frozen=True)
class Place:
    """Where a value sits in a prompt."""

    node_id: str
    class_type: str
    input: str

    def __str__(self) -> str:
        return f"node {self.node_id} ({self.class_type}) input '{self.input}'"


def is_reference(value: Any) -> bool:
    return isinstance(value, dict) and KEY in value


def check_reference(value: dict, where: Place) -> tuple[str, str | None, int | None]:
    """(sha256, name, size) of a reference; BadReference for any other shape."""
    extra = [k for k in value if k != KEY and k not in OPTIONAL_KEYS]
    if extra:
        raise BadReference(
            f"{where}: an input reference has the keys comfymq_input, name and size only, not '{str(extra[0])[:64]}'"
        )
    sha = value[KEY]
    if not isinstance(sha, str) or not SHA256_RE.match(sha):
        shown = sha[:80] if isinstance(sha, str) else type(sha).__name__
        raise BadReference(
            f"{where}: comfymq_input must be a SHA-256 of 64 lowercase hex digits (as POST /comfymq/inputs "
            f"answers), got '{shown}'"
        )
    name = value.get("name")
    if name is not None and not isinstance(name, str):
        raise BadReference(f"{where}: the reference's name must be a string, got {type(name).__name__}")
    size = value.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise BadReference(f"{where}: the reference's size must be a whole number of bytes")
    return sha, name, size


def stored_form(sha256: str, name: str, size: int) -> dict:
    return {KEY: sha256, "name": name, "size": size}


def node_inputs(prompt: dict) -> Iterator[tuple[str, str, dict]]:
    """(node_id, class_type, inputs) of every well-formed node (the store refuses the others)."""
    for node_id, node in prompt.items():
        if not isinstance(node, dict):
            continue
        inputs = node.get("inputs")
        class_type = node.get("class_type")
        if isinstance(inputs, dict) and isinstance(class_type, str):
            yield node_id, class_type, inputs


def _head(path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(16)
    except OSError:
        return b""


def resolve_reference(value: dict, where: Place, store: InputStore) -> dict:
    """The stored form of a reference: checked, its input present in the store (and marked used: touch)."""
    sha, name, size = check_reference(value, where)
    stored = store.touch(sha)
    if stored is None:
        raise BadReference(
            f"{where}: no stored input {sha} (upload the file with POST /comfymq/inputs first, and refer to it by "
            "the sha256 that answers)"
        )
    if size is not None and size != stored:
        raise BadReference(f"{where}: the reference says {size} bytes, but input {sha} has {stored}")
    return stored_form(sha, safe_name(name, sha, "" if name else sniff_extension(_head(store.path(sha)))), stored)


# resolve_value(value, where) -> the value to commit in its place (the value itself when it stays)
ValueResolver = Callable[[Any, Place], Any]


def parse_graph(prompt: Any) -> dict | None:
    """An API-format prompt (a dict, or JSON text read as the store reads it) as a dict; None when it is not one."""
    if isinstance(prompt, dict):
        return prompt
    if not isinstance(prompt, str):
        return None
    try:
        # The store's parser (nlohmann) skips a leading byte order mark: read the text as it does, or a reference
        # in it would be committed unresolved.
        value = json.loads(prompt.removeprefix("\ufeff"))
    except (ValueError, RecursionError):  # the store's own check says what is wrong with it
        return None
    return value if isinstance(value, dict) else None


def rewrite_prompt(prompt: Any, resolve_value: ValueResolver) -> Any:
    """`prompt` (a dict or JSON text) with each node input's value replaced by resolve_value(value, place).
    Nodes whose values all stay are shared with `prompt`; when nothing changes, `prompt` itself is returned (a
    JSON text stays the same text). A prompt that is not an API-format graph is returned as it is: the store's
    checks refuse it with their own message."""
    graph = parse_graph(prompt)
    if graph is None:
        return prompt
    out = None
    for node_id, class_type, inputs in node_inputs(graph):
        changed = None
        for name, value in inputs.items():
            new = resolve_value(value, Place(node_id, class_type, name))
            if new is not value:
                changed = changed or dict(inputs)
                changed[name] = new
        if changed is not None:
            out = out or dict(graph)
            out[node_id] = {**graph[node_id], "inputs": changed}
    return prompt if out is None else out


OUTPUT_KEY = "comfymq_output"  # another job's output (outputs.py)


def value_resolver(
    store: InputStore, local: ValueResolver | None = None, outputs: ValueResolver | None = None
) -> ValueResolver:
    """Resolves one value as the host commits it: a reference to its stored form (BadReference for a malformed
    or unknown one); with `outputs` (outputs.OutputResolver), another job's output to the stored form of its file;
    with `local` (inside ComfyUI: local_files.LocalFiles), any other value as `local` says (plain file names of
    upload inputs); else the value itself."""

    def resolve(value, where: Place):
        if is_reference(value):
            return resolve_reference(value, where, store)
        if isinstance(value, dict) and OUTPUT_KEY in value:
            if outputs is None:
                raise BadReference(f"{where}: this host cannot take another job's output here")
            return outputs(value, where)
        return local(value, where) if local is not None else value

    return resolve


def resolve_prompt(
    prompt: Any, store: InputStore, local: ValueResolver | None = None, outputs: ValueResolver | None = None
) -> Any:
    """The prompt as the host commits it (value_resolver for each node input); the same object when nothing is
    rewritten. A JSON-text prompt naming neither comfymq_input nor comfymq_output (nor holding a \\u escape,
    which may spell either) is not even parsed when there is no `local`."""
    if (
        local is None
        and isinstance(prompt, str)
        and KEY not in prompt
        and OUTPUT_KEY not in prompt
        and "\\u" not in prompt  # "comfymq\\u005finput" is the same key to every JSON parser
    ):
        return prompt
    return rewrite_prompt(prompt, value_resolver(store, local, outputs))


def keyed_values(prompt: Any, key: str) -> Iterator[tuple[str, str, dict]]:
    """(node id, input name, value) of every node input of a prompt (a dict or JSON text) whose value is an object
    holding `key` (a reference: comfymq_input here, comfymq_output in outputs.py)."""
    graph = prompt if isinstance(prompt, dict) else parse_graph(prompt)
    if graph is None:
        return
    for node_id, _class_type, inputs in node_inputs(graph):
        for name, value in inputs.items():
            if isinstance(value, dict) and key in value:
                yield node_id, name, value


def _stored_forms(prompt: Any) -> Iterator[tuple[str, str, dict]]:
    return ((n, i, v) for n, i, v in keyed_values(prompt, KEY) if isinstance(v[KEY], str))


def job_inputs(prompt: Any) -> list[dict]:
    """The inputs a committed prompt names, for job views: [{"node", "input", "sha256", "size", "name"}]."""
    return [
        {"node": node_id, "input": name, "sha256": v[KEY], "size": v.get("size"), "name": v.get("name")}
        for node_id, name, v in _stored_forms(prompt)
    ]


def referenced_sha256s(prompt: Any) -> set[str]:
    """The sha256s a prompt's references name."""
    return {v[KEY] for _node, _name, v in _stored_forms(prompt)}
