"""Loading a folder of templates files: every template found, and one error per bad file or template.

    load_folder(path, object_info=None) -> (templates, errors)

templates are parse_template's normalized form plus "source", the file's path relative to the folder;
errors are TemplateErrors (where = that relative path; template and parameter when they apply). A bad file or
template never stops the others. Files read: *.json, *.yaml, *.yml in the folder and its subfolders, hidden
ones (".name") and symlinked subfolders skipped, in a fixed order (each folder's files sorted by name, then
its subfolders sorted by name), at most MAX_FILES. A file holds one of:

  1. one template: {"name", "workflow" | "workflow_file", "parameters"?, "description"?, "category"?}
  2. a list of such templates
  3. seed 003's configuration, read as it is: {"task_types": {<category>: {"workflows": {<name>:
     {"workflow_file": "...", "parameter_mapping"?: {<param>: {"node_id", "input_name", "default_value"}}}}}}}
     (its other keys, database, redis, nodes, ..., are not looked at)
  or a workflow that some template names with workflow_file (a workflow no template names is an error).

workflow_file is relative to the folder of the file naming it and must stay inside the loaded folder once
resolved (no absolute path, no ".." or symlink leading out). Two templates with the same name: the first in
file order is kept, the other is an error naming both files.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from .definition import NAME_RE, UI_FORMAT_HINT, parse_template
from .documents import read_document
from .errors import TemplateError, kind, shown

MAX_FILES = 1000
MAX_FOLDERS = 10000  # subfolders walked, so a deep empty tree cannot keep the loader busy
SUFFIXES = (".json", ".yaml", ".yml")
FILE_FORM_KEYS = ("name", "workflow", "workflow_file", "parameters", "description", "category")


def _list_files(root: Path, where: str, errors: list) -> list[str]:
    found: list[str] = []
    folders = 0

    def unreadable(e: OSError):
        rel = where
        if e.filename and Path(e.filename).is_relative_to(root):
            rel = Path(e.filename).relative_to(root).as_posix()
        errors.append(TemplateError(f"folder cannot be read: {e.strerror or e}", where=rel))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        folders += 1
        if folders > MAX_FOLDERS:
            errors.append(TemplateError(f"has more than {MAX_FOLDERS} subfolders; the rest were not read", where=where))
            break
        for name in sorted(filenames):
            if name.startswith(".") or not name.lower().endswith(SUFFIXES):
                continue
            if len(found) == MAX_FILES:
                errors.append(
                    TemplateError(f"has more than {MAX_FILES} templates files; the rest were not read", where=where)
                )
                return found
            found.append((Path(dirpath) / name).relative_to(root).as_posix())
    return found


def _looks_like_workflow(document) -> bool:
    if not isinstance(document, dict) or not document:
        return False
    if isinstance(document.get("nodes"), list) and "links" in document:
        return True
    return all(isinstance(node, dict) and "class_type" in node for node in document.values())


class _Folder:
    """One load: the resolved root, and each file read at most once (by its path relative to the root)."""

    def __init__(self, root: Path):
        self.root = root
        self.documents: dict[str, tuple[object, TemplateError | None]] = {}

    def inside(self, full: Path) -> str | None:
        """The root-relative path of `full` once every symlink and '..' is resolved, or None when outside."""
        try:
            resolved = full.resolve()
        except (OSError, RuntimeError):  # a symlink loop
            return None
        return resolved.relative_to(self.root).as_posix() if resolved.is_relative_to(self.root) else None

    def document(self, rel: str):
        if rel not in self.documents:
            try:
                self.documents[rel] = (read_document(self.root / rel, rel), None)
            except TemplateError as e:
                self.documents[rel] = (None, e)
        document, error = self.documents[rel]
        if error is not None:
            raise error
        return document

    def workflow_file(self, source: str, value) -> str:
        """The root-relative path a workflow_file names, from the file `source`; ValueError saying why not."""
        if not isinstance(value, str) or not value or len(value) > 4096:
            raise ValueError(f"'workflow_file' must be a relative path (a string), got {shown(value)}")
        if PurePosixPath(value).is_absolute() or PureWindowsPath(value).anchor:
            raise ValueError(f"workflow_file {shown(value)} must be relative to the file naming it, not absolute")
        rel = self.inside((self.root / source).parent / value.replace("\\", "/"))
        if rel is None:
            raise ValueError(f"workflow_file {shown(value)} leads out of the templates folder")
        if not (self.root / rel).is_file():
            raise ValueError(f"workflow_file {shown(value)} does not exist (or is not a file)")
        return rel


def _entries(source: str, document, errors: list) -> list[dict]:
    """The templates as written in one file's document: each {"raw", "workflow_file"?}."""

    def bad(what: str, template: str | None = None):
        errors.append(TemplateError(what, where=source, template=template))

    if isinstance(document, list):
        out = []
        for i, item in enumerate(document):
            if isinstance(item, dict):
                out.append(item)
            else:
                bad(f"item #{i + 1} of the list must be a template (an object), got {kind(item)}")
        return out
    if isinstance(document, dict) and "task_types" in document:
        return _seed_entries(document["task_types"], bad)
    return [document]


def _seed_entries(task_types, bad) -> list[dict]:
    if not isinstance(task_types, dict):
        bad(f"'task_types' must be an object {{task_type: {{workflows: ...}}}}, got {kind(task_types)}")
        return []
    out = []
    for category, task in task_types.items():
        workflows = task.get("workflows") if isinstance(task, dict) else None
        if not isinstance(workflows, dict):
            bad(f"task type {shown(category)} must have 'workflows', an object {{name: workflow}}")
            continue
        for name, entry in workflows.items():
            if isinstance(name, int) and not isinstance(name, bool):
                name = str(name)  # a YAML key written as a number
            shown_name = name if isinstance(name, str) and NAME_RE.fullmatch(name) else None
            if not isinstance(entry, dict) or "workflow_file" not in entry:
                bad(f"task type {shown(category)}: workflow entry must be an object with 'workflow_file'", shown_name)
                continue
            raw = {"name": name, "category": str(category), "workflow_file": entry["workflow_file"]}
            if entry.get("parameter_mapping") is not None:
                raw["parameters"] = entry["parameter_mapping"]
            if entry.get("description") is not None:
                raw["description"] = entry["description"]
            out.append(raw)
    return out


def _template_name(raw: dict) -> str | None:
    name = raw.get("name")
    return name if isinstance(name, str) and NAME_RE.fullmatch(name) else None


class _FileRead:
    """What one listed file holds: templates still to parse (source, raw, workflow file or None), the workflow
    files they name, and the errors met. `is_workflow`: the file is a workflow, not templates."""

    def __init__(self, rel: str):
        self.rel = rel
        self.pending: list[tuple[str, dict, str | None]] = []
        self.names: set[str] = set()
        self.errors: list[TemplateError] = []
        self.is_workflow = False


def _read_file(folder: _Folder, listed: str) -> _FileRead:
    rel = folder.inside(folder.root / listed)
    if rel is None:
        out = _FileRead(listed)
        out.errors.append(TemplateError("is a symlink leading out of the templates folder", where=listed))
        return out
    out = _FileRead(rel)
    try:
        document = folder.document(rel)
    except TemplateError as e:
        out.errors.append(e)
        return out
    if _looks_like_workflow(document):
        out.is_workflow = True
        return out
    if not isinstance(document, (dict, list)):
        out.errors.append(TemplateError(f"is not a template: the file holds {kind(document)}", where=rel))
        return out
    for raw in _entries(rel, document, out.errors):
        name = _template_name(raw)
        unknown = [k for k in raw if k not in FILE_FORM_KEYS]
        if unknown:
            listed_keys = ", ".join(shown(k) for k in unknown[:10])
            what = f"unknown key(s) {listed_keys}; a template has {', '.join(FILE_FORM_KEYS)}"
            out.errors.append(TemplateError(what, where=rel, template=name))
        elif "workflow_file" not in raw:
            out.pending.append((rel, raw, None))
        elif "workflow" in raw:
            out.errors.append(TemplateError("give 'workflow' or 'workflow_file', not both", where=rel, template=name))
        else:
            try:
                workflow_rel = folder.workflow_file(rel, raw["workflow_file"])
            except ValueError as e:
                out.errors.append(TemplateError(str(e), where=rel, template=name))
                continue
            out.names.add(workflow_rel)
            out.pending.append((rel, {k: v for k, v in raw.items() if k != "workflow_file"}, workflow_rel))
    return out


def load_folder(path: str | os.PathLike, *, object_info: dict | None = None) -> tuple[list[dict], list[TemplateError]]:
    """Every template in the folder and the errors met (module docstring). Never raises TemplateError: a
    folder that cannot be read is one error (where = the path as given)."""
    where = os.fspath(path)
    errors: list[TemplateError] = []
    try:
        root = Path(path).resolve(strict=True)
    except (OSError, RuntimeError) as e:
        return [], [
            TemplateError(f"the templates folder cannot be read: {getattr(e, 'strerror', None) or e}", where=where)
        ]
    if not root.is_dir():
        return [], [TemplateError("is not a folder", where=where)]
    folder = _Folder(root)

    # Pass 1: read every file; a file some template names as its workflow_file is that template's workflow,
    # whatever else it looks like, and its problems are reported with that template (pass 2), not twice.
    listed_files = _list_files(root, where, errors)
    reads = [_read_file(folder, listed) for listed in listed_files]
    named = set().union(*(r.names for r in reads))
    pending: list[tuple[str, dict, str | None]] = []
    for r in reads:
        if r.rel in named:
            continue
        errors.extend(r.errors)
        pending.extend(r.pending)
        if r.is_workflow:
            errors.append(
                TemplateError(
                    "is a workflow that no template names; give it a template (a file with name, workflow_file"
                    " and parameters) or move it out of the templates folder",
                    where=r.rel,
                )
            )

    # Pass 2: parse each template with its workflow; keep the first of each name.
    templates: list[dict] = []
    first_source: dict[str, str] = {}
    for source, raw, workflow_rel in pending:
        name = _template_name(raw)
        try:
            if workflow_rel is not None:
                raw = {**raw, "workflow": _workflow(folder, workflow_rel, source, name)}
            template = parse_template(raw, object_info=object_info, where=source)
        except TemplateError as e:
            errors.append(e)
            continue
        name = template["name"]
        if name in first_source:
            other = first_source[name]
            both = f"twice in {source}" if other == source else f"in {other} and in {source}"
            errors.append(TemplateError(f"is defined {both}; the first is kept", where=source, template=name))
            continue
        first_source[name] = source
        templates.append({**template, "source": source})
    position = {rel: i for i, rel in enumerate(listed_files)}
    errors.sort(key=lambda e: position.get(e.where, -1))  # stable: each file's errors in the order met
    return templates, errors


def _workflow(folder: _Folder, workflow_rel: str, source: str, name: str | None):
    try:
        document = folder.document(workflow_rel)
    except TemplateError as e:
        raise TemplateError(f"workflow_file {workflow_rel}: {e.what}", where=source, template=name) from None
    if isinstance(document, dict) and isinstance(document.get("nodes"), list) and "links" in document:
        raise TemplateError(f"workflow_file {workflow_rel}: {UI_FORMAT_HINT}", where=source, template=name)
    return document
