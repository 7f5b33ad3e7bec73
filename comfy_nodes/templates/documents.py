"""Reading one templates file into a document (JSON, or YAML when PyYAML is installed), bounded.

    read_document(full_path, rel) -> the parsed document, or TemplateError(where=rel) saying why not

Bounds and refusals, each an error naming the file: not a regular file (a FIFO would block the reader), more
than MAX_FILE_BYTES, not UTF-8 (a BOM is allowed), invalid JSON or YAML (with its line), NaN or Infinity in
JSON, documents nested deeper than MAX_DEPTH. YAML is read with a SafeLoader that refuses aliases and anchors
(a "billion laughs" document fails at its first alias instead of expanding) and more than one document, and
that leaves dates as strings (a prompt "2024-01-01" stays text). Without PyYAML a YAML file is an error
saying how to install it; importing this module never needs it.
"""

from __future__ import annotations

import importlib
import json
import os
import stat

from .errors import TemplateError

MAX_FILE_BYTES = 16 << 20
MAX_DEPTH = 64
YAML_SUFFIXES = (".yaml", ".yml")
YAML_MISSING = "reading YAML templates needs PyYAML (pip install pyyaml)"

_loaders: dict[int, type] = {}  # id(yaml module) -> its loader class, made on first use


def _yaml_loader(yaml) -> type:
    loader = _loaders.get(id(yaml))
    if loader is not None:
        return loader

    class Loader(yaml.SafeLoader):
        """SafeLoader without aliases, anchors or timestamps, and with a nesting bound."""

        def __init__(self, stream):
            super().__init__(stream)
            self.depth = 0

        def compose_node(self, parent, index):
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent):
                raise yaml.composer.ComposerError(
                    None, None, "aliases (*name) are not allowed in templates files", event.start_mark
                )
            if getattr(event, "anchor", None) is not None:
                raise yaml.composer.ComposerError(
                    None, None, "anchors (&name) are not allowed in templates files", event.start_mark
                )
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"the document is nested deeper than {MAX_DEPTH} levels", event.start_mark
                )
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    timestamp = "tag:yaml.org,2002:timestamp"
    Loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != timestamp]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    _loaders[id(yaml)] = Loader
    return Loader


def _too_deep(document) -> bool:
    """Whether a JSON document nests deeper than MAX_DEPTH (walked without recursion)."""
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                return True
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n and n % (1 << 20) == 0 else f"{n} bytes"


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_text(text: str, rel: str):
    """The document in `text`, read as YAML when rel ends in .yaml/.yml, else as JSON."""
    if rel.lower().endswith(YAML_SUFFIXES):
        try:
            yaml = importlib.import_module("yaml")
        except ImportError:
            raise TemplateError(YAML_MISSING, where=rel) from None
        try:
            return yaml.load(text, Loader=_yaml_loader(yaml))  # a SafeLoader subclass
        except yaml.YAMLError as e:
            detail = " ".join(str(e).replace(' in "<unicode string>"', "").split())
            raise TemplateError(f"invalid YAML: {detail}", where=rel) from None
        except (ValueError, RecursionError) as e:  # an integer too long to convert, ...
            raise TemplateError(f"invalid YAML: {e}", where=rel) from None
    try:
        document = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as e:
        raise TemplateError(f"invalid JSON: {e.msg} at line {e.lineno}, column {e.colno}", where=rel) from None
    except RecursionError:
        raise TemplateError(f"the document is nested deeper than {MAX_DEPTH} levels", where=rel) from None
    except ValueError as e:  # NaN, Infinity, an integer too long to convert
        raise TemplateError(f"invalid JSON: {e}", where=rel) from None
    if _too_deep(document):
        raise TemplateError(f"the document is nested deeper than {MAX_DEPTH} levels", where=rel)
    return document


def read_document(full_path: str | os.PathLike, rel: str):
    """The document in one file (module docstring); `rel` is how messages name it."""
    try:
        info = os.stat(full_path)
        if not stat.S_ISREG(info.st_mode):
            raise TemplateError("is not a regular file", where=rel)
        if info.st_size > MAX_FILE_BYTES:
            raise TemplateError(
                f"is larger than the limit of {_size(MAX_FILE_BYTES)} ({info.st_size} bytes)", where=rel
            )
        with open(full_path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise TemplateError("does not exist", where=rel) from None
    except OSError as e:
        raise TemplateError(f"cannot be read: {e.strerror or e}", where=rel) from None
    if len(data) > MAX_FILE_BYTES:
        raise TemplateError(f"is larger than the limit of {_size(MAX_FILE_BYTES)}", where=rel)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TemplateError(f"is not UTF-8 text (byte {e.start} cannot be decoded)", where=rel) from None
    return parse_text(text, rel)
