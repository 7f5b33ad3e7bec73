"""Another job's output as an input: a node input's value

  {"comfymq_output": {"job": "<job id>", "index": 0}}            the job's first artifact (its files in the order
                                                                  its view lists them)
  {"comfymq_output": {"job": "<job id>", "filename": "x.png"}}   the artifact of that file name
  {"comfymq_output": {"job": "<job id>", "node": "9"}}            the first file output node 9 of its graph reported
                                                                  ("index": N for its Nth)

When that job has succeeded, the host copies the file into the input store at enqueue (one copy per content, like an
upload) and commits the reference's stored form ({"comfymq_input": sha256, "name", "size"}, graph.py): from there
it travels like any input. When it is pending or running, the reference is committed as it is (its job id as the
store writes it) and the new job waits for that one (waits_on(prompt) -> the store's `after`): the store runs it
once that job has succeeded, and the broker sends it with the reference made the stored form of the file that job
recorded (native/src/net/output_refs.h); should that job fail, be cancelled or deleted, the store cancels it. A
failed or cancelled job, an unknown one, an index or a file name a finished job does not have, or any other shape
is a BadReference (a 400) naming node and input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

from .graph import BadReference, Place, keyed_values, stored_form
from .names import safe_name
from .store import InputStore, InputTooLarge

OUT_KEY = "comfymq_output"


def _output_refs(prompt: Any) -> Iterator[tuple[str, str, dict]]:
    return ((n, i, v[OUT_KEY]) for n, i, v in keyed_values(prompt, OUT_KEY) if isinstance(v[OUT_KEY], dict))


def waits_on(prompt: Any) -> list[str]:
    """The jobs a committed prompt's output references name (sorted, unique): the jobs it waits for."""
    return sorted({spec["job"] for _n, _i, spec in _output_refs(prompt) if isinstance(spec.get("job"), str)})


def job_output_inputs(prompt: Any) -> list[dict]:
    """The other jobs' outputs a committed prompt takes, for job views: [{"node", "input", "output_of": {"job",
    "index" | "filename"}}] (each becomes a stored input when the job is sent)."""
    return [{"node": node_id, "input": name, "output_of": spec} for node_id, name, spec in _output_refs(prompt)]


def is_output_reference(value: Any) -> bool:
    return isinstance(value, dict) and OUT_KEY in value


def _spec(value: dict, where: Place) -> tuple[str, int | None, str | None, str | None]:
    if set(value) != {OUT_KEY} or not isinstance(value[OUT_KEY], dict):
        raise BadReference(
            f'{where}: an output reference is {{"comfymq_output": {{"job": "<id>", "index": N}}}}, or with '
            '"filename" or "node" (and an optional "index") instead of "index", and nothing else'
        )
    spec = value[OUT_KEY]
    job, index, filename, node = spec.get("job"), spec.get("index"), spec.get("filename"), spec.get("node")
    extra = [k for k in spec if k not in ("job", "index", "filename", "node")]
    if extra or not isinstance(job, str) or not job or len(job) > 64:
        raise BadReference(f"{where}: comfymq_output takes job (a job id) and index, filename or node only")
    if (filename is not None) + (node is not None) > 1 or (filename is not None and index is not None):
        raise BadReference(f"{where}: comfymq_output names the file by index, by filename or by node (one of them)")
    if index is None and filename is None and node is None:
        raise BadReference(f"{where}: comfymq_output names the file by index, by filename or by node (one of them)")
    if index is not None and (isinstance(index, bool) or not isinstance(index, int) or index < 0):
        raise BadReference(f"{where}: comfymq_output's index is a whole number from 0")
    if filename is not None and (not isinstance(filename, str) or not filename or len(filename) > 255):
        raise BadReference(f"{where}: comfymq_output's filename is a file name")
    if node is not None and (not isinstance(node, str) or not node or len(node) > 256):
        raise BadReference(f"{where}: comfymq_output's node is the id of an output node of that job's graph")
    return job, index, filename, node


def node_files(outputs, node: str) -> list[str]:
    """The files output node `node` reported (its ComfyUI outputs: "images", "gifs", "audio", ... lists of
    {"filename", "subfolder"?}), in order, as "subfolder/filename" or "filename"."""
    entry = outputs.get(node) if isinstance(outputs, dict) else None
    files = []
    for items in (entry or {}).values() if isinstance(entry, dict) else ():
        for f in items if isinstance(items, list) else ():
            if isinstance(f, dict) and isinstance(f.get("filename"), str):
                sub = f.get("subfolder") if isinstance(f.get("subfolder"), str) else ""
                files.append(f"{sub}/{f['filename']}" if sub else f["filename"])
    return files


def _named(artifacts: list[dict], want: str) -> dict | None:
    """The artifact of file name `want` ("name" or "subfolder/name"): with a subfolder, the one under it if any."""
    name = want.rsplit("/", 1)[-1]
    found = [a for a in artifacts if a["path"].rsplit("/", 1)[-1] == name]
    under = [a for a in found if a["path"].endswith(want)]
    return (under or found or [None])[0]


class OutputResolver:
    """Resolves output references at enqueue (on the host's thread pool: it reads the job and copies a file).
    jobs: the native Store; artifact_root: where the jobs' artifacts are."""

    def __init__(self, jobs, artifact_root: str | Path, inputs: InputStore, max_bytes: int | None = None):
        self.jobs, self.root, self.inputs, self.max_bytes = jobs, Path(artifact_root), inputs, max_bytes

    def __call__(self, value: dict, where: Place) -> dict:
        job_id, index, filename, node = _spec(value, where)
        try:
            job = self.jobs.get(job_id, with_prompt=False)
        except (KeyError, ValueError):
            raise BadReference(
                f"{where}: comfymq_output names job {job_id[:64]}, which this host does not have"
            ) from None
        state = job.get("state")
        if state in ("pending", "running"):  # the new job waits for it (the module doc)
            named = {k: v for k, v in (("node", node), ("filename", filename), ("index", index)) if v is not None}
            return {OUT_KEY: {"job": job["id"], **named}}
        if state != "succeeded":
            raise BadReference(f"{where}: job {job_id} ended {state}: it has no output to take")
        artifacts = job.get("artifacts") or []
        if node is not None:
            files = node_files(job.get("outputs"), node)
            at = index or 0
            if at >= len(files):
                raise BadReference(
                    f"{where}: node {node[:64]} of job {job_id} reported {len(files)} files, none at index {at}"
                )
            filename = files[at]
        if filename is None:
            if index >= len(artifacts):
                raise BadReference(f"{where}: job {job_id} has {len(artifacts)} output files, none at index {index}")
            artifact = artifacts[index]
        else:
            artifact = _named(artifacts, filename)
            if artifact is None:
                raise BadReference(f"{where}: job {job_id} has no output file named {filename[:255]}")
        path = (self.root / artifact["path"]).resolve()
        if not path.is_relative_to(self.root.resolve()):  # (recorded paths are relative: never out of the root)
            raise BadReference(f"{where}: job {job_id}'s output file {artifact['path']} is not under the artifact root")
        try:
            stored = self.inputs.put_file(path, max_bytes=self.max_bytes)
        except FileNotFoundError:
            raise BadReference(
                f"{where}: job {job_id}'s output file {artifact['path']} is gone from the host"
            ) from None
        except InputTooLarge:
            raise BadReference(
                f"{where}: job {job_id}'s output file {artifact['path']} is larger than an input may be (max_input_bytes)"
            ) from None
        if artifact.get("sha256") and stored.sha256 != artifact["sha256"]:
            raise BadReference(f"{where}: job {job_id}'s output file {artifact['path']} differs from what was recorded")
        name = artifact["path"].rsplit("/", 1)[-1]
        return stored_form(stored.sha256, safe_name(name, stored.sha256, ""), stored.size)


def once_per_request(outputs: Callable[[dict, Place], dict] | None) -> Callable[[dict, Place], dict] | None:
    """`outputs` for one request: each output it names is copied into the input store once, however many values
    name it (a sweep of 10,000 values naming one output read and copied its file 10,000 times). Refusals are not
    kept: each value that is refused hears why in its own place."""
    if outputs is None:
        return None
    done: dict[tuple, dict] = {}

    def resolve(value: dict, where: Place) -> dict:
        spec = value.get(OUT_KEY) if isinstance(value, dict) and len(value) == 1 else None
        if not isinstance(spec, dict) or not all(isinstance(v, (str, int)) for v in spec.values()):
            return outputs(value, where)
        key = tuple(sorted((k, type(v).__name__, v) for k, v in spec.items()))  # (True and 1 stay apart)
        if key not in done:
            done[key] = outputs(value, where)
        return dict(done[key])

    return resolve
