"""Templates kept in the store, versioned (store documents: Store.put_doc).

  tpl/<name>/<8-digit version>   {"template": parse_template's form, "version", "created_at", "source",
                                  "webhooks": [targets]}  or a tombstone {"deleted": true, "version", ...}

Every change makes a new version (a save of what the latest already holds makes none); the latest is the
highest version, and a tombstone as the latest means the template is deleted (its numbers go on if it is made
again, so a job's recorded version always names one text). At most KEEP_VERSIONS versions are kept per template
(older ones go after a save). A version is written with only_if_absent, so two saves at once never share one.
"""

from __future__ import annotations

import json
import threading
import time

from ..webhooks.targets import parse_targets
from .definition import NAME_RE, parse_template
from .errors import TemplateError
from .folder import load_folder

PREFIX = "tpl/"
KEEP_VERSIONS = 50
MAX_TEMPLATES = 10000
DEFINITION_KEYS = ("name", "description", "category", "workflow", "parameters")


def _key(name: str, version: int) -> str:
    return f"{PREFIX}{name}/{version:08d}"


class TemplateRegistry:
    def __init__(self, store):
        self.store = store
        self._lock = threading.Lock()  # saves of one host process in turn (only_if_absent guards the rest)
        self._summaries: dict[str, tuple[int, dict | None]] = {}  # name -> (version, summary or None if deleted)

    # -- reading --

    def _versions(self, name: str) -> list[int]:
        keys = self.store.list_docs(prefix=f"{PREFIX}{name}/", keys_only=True, limit=KEEP_VERSIONS * 4)
        return [int(k.rsplit("/", 1)[1]) for k, _ in keys]

    def _record(self, name: str, version: int) -> dict | None:
        text = self.store.get_doc(_key(name, version))
        return json.loads(text) if text else None

    def get(self, name: str, version: int | None = None) -> dict | None:
        """The record of `name` (its latest version, or `version`); None when there is none or it is deleted (a
        given version is found even after the template was deleted, while it is kept)."""
        if not NAME_RE.fullmatch(name or ""):
            return None
        if version is None:
            versions = self._versions(name)
            if not versions:
                return None
            version = versions[-1]
        rec = self._record(name, version)
        return None if rec is None or rec.get("deleted") else rec

    def versions(self, name: str) -> list[dict]:
        out = []
        for v in self._versions(name):
            rec = self._record(name, v) or {}
            out.append({"version": v, "created_at": rec.get("created_at"), "deleted": bool(rec.get("deleted"))})
        return out

    def names(self) -> list[str]:
        seen: list[str] = []
        after = ""
        while True:
            page = self.store.list_docs(prefix=PREFIX, after=after, keys_only=True, limit=1000)
            if not page:
                return seen
            for k, _ in page:
                name = k[len(PREFIX) :].rsplit("/", 1)[0]
                if not seen or seen[-1] != name:
                    seen.append(name)
            after = page[-1][0]

    def list(self) -> list[dict]:
        """The latest version of every template that is not deleted, by name, as summaries (the record without its
        workflow and parameters' details: `parameters` maps names to {type, title}), read once per version."""
        latest: dict[str, int] = {}
        after = ""
        while True:
            page = self.store.list_docs(prefix=PREFIX, after=after, keys_only=True, limit=1000)
            if not page:
                break
            for k, _ in page:
                name, version = k[len(PREFIX) :].rsplit("/", 1)
                latest[name] = int(version)
            after = page[-1][0]
        out = []
        for name, version in latest.items():
            cached = self._summaries.get(name)
            if cached is None or cached[0] != version:
                rec = self._record(name, version)
                cached = (version, None if rec is None or rec.get("deleted") else summary_of(rec))
                self._summaries[name] = cached
            if cached[1] is not None:
                out.append(cached[1])
        for gone in set(self._summaries) - set(latest):
            self._summaries.pop(gone, None)
        return out

    # -- changing --

    def save(
        self, raw: dict, *, object_info=None, source: str = "api", where: str = "request", must_exist=None
    ) -> tuple[dict, str]:
        """Checks `raw` (a template as written, plus optional "webhooks") and stores it as the next version of its
        name. must_exist: True (update: 404 unless there), False (create: 409 if there), None (either). Returns
        (record, "created" | "updated" | "unchanged"). Raises TemplateError, LookupError (none to update),
        FileExistsError (one to create exists)."""
        if not isinstance(raw, dict):
            raise TemplateError("a template must be a JSON object", where=where)
        hooks = raw.get("webhooks")
        try:
            webhooks = parse_targets(hooks, "webhooks")
        except ValueError as e:
            raise TemplateError(str(e), where=where, template=raw.get("name")) from None
        definition = parse_template(
            {k: v for k, v in raw.items() if k != "webhooks"}, object_info=object_info, where=where
        )
        name = definition["name"]
        with self._lock:
            for _ in range(5):
                versions = self._versions(name)
                latest = self._record(name, versions[-1]) if versions else None
                exists = latest is not None and not latest.get("deleted")
                if must_exist is True and not exists:
                    raise LookupError(f"no template '{name}'")
                if must_exist is False and exists:
                    raise FileExistsError(f"template '{name}' exists (PUT /comfymq/templates/{name} changes it)")
                if not exists and len(self.names()) >= MAX_TEMPLATES and not versions:
                    raise TemplateError(f"the host keeps at most {MAX_TEMPLATES} templates", where=where)
                if exists and latest["template"] == definition and latest.get("webhooks", []) == webhooks:
                    return latest, "unchanged"
                version = (versions[-1] + 1) if versions else 1
                rec = {
                    "template": definition,
                    "version": version,
                    "created_at": int(time.time() * 1000),
                    "source": source,
                    "webhooks": webhooks,
                }
                if self.store.put_doc(_key(name, version), json.dumps(rec, allow_nan=False), only_if_absent=True):
                    self._prune(name, versions + [version])
                    return rec, "updated" if exists else "created"
            raise TemplateError(f"template '{name}' is being changed by others: try again", where=where)

    def delete(self, name: str) -> int:
        """Deletes `name` (a tombstone version); returns that version. LookupError when there is none. A save that
        took the next version meanwhile (another process on this store) makes it look again, so the answer is true."""
        with self._lock:
            for _ in range(5):
                versions = self._versions(name) if NAME_RE.fullmatch(name or "") else []
                latest = self._record(name, versions[-1]) if versions else None
                if latest is None or latest.get("deleted"):
                    raise LookupError(f"no template '{name}'")
                version = versions[-1] + 1
                tomb = {"deleted": True, "version": version, "created_at": int(time.time() * 1000)}
                if self.store.put_doc(_key(name, version), json.dumps(tomb), only_if_absent=True):
                    self._prune(name, versions + [version])
                    return version
            raise TemplateError(f"template '{name}' is being changed by others: try again")

    def _prune(self, name: str, versions: list[int]) -> None:
        for v in sorted(versions)[:-KEEP_VERSIONS]:
            try:
                self.store.delete_doc(_key(name, v))
            except KeyError:
                pass


def summary_of(rec: dict) -> dict:
    """A record as lists show it: name, version, description, category, parameters {name: {type, title}},
    created_at, source."""
    t = rec["template"]
    return {
        "name": t["name"],
        "version": rec["version"],
        "description": t.get("description", ""),
        "category": t.get("category", ""),
        "parameters": {k: {"type": p["type"], "title": p.get("title", k)} for k, p in t["parameters"].items()},
        "created_at": rec.get("created_at"),
        "source": rec.get("source"),
    }


def load_into_store(registry: TemplateRegistry, folder, *, object_info=None) -> tuple[int, list[TemplateError]]:
    """Loads every template of `folder` (folder.py) through `registry`: new ones are created, changed ones get a
    new version, the same ones stay as they are. Returns (templates loaded or unchanged, errors)."""
    templates, errors = load_folder(folder, object_info=object_info)
    loaded = 0
    for t in templates:
        source = "file:" + t.get("source", "")
        raw = {k: t[k] for k in DEFINITION_KEYS if k in t}
        try:
            registry.save(raw, object_info=object_info, source=source, where=t.get("source", "file"))
            loaded += 1
        except TemplateError as e:
            errors.append(e)
    return loaded, errors
