"""Type stub for comfy_nodes._native, the compiled core (built from native/bindings/native_module.cc).

Errors: bad input -> ValueError; unknown job -> KeyError; everything else -> ComfyMQError or a subclass.
Times are integers in milliseconds since the epoch; durations (lease, timeout) are seconds.
Job ids are 16 lowercase hex digits, ordered like enqueue order.
"""

from typing import Any, Iterable, Literal, Optional, Sequence, TypedDict, Union

JOB_STATES: tuple[str, ...]
State = Literal["pending", "running", "succeeded", "failed", "cancelled"]

class ComfyMQError(RuntimeError): ...
class StoreLockedError(ComfyMQError): ...   # the store is open in another process
class DiskFullError(ComfyMQError): ...      # nothing changed; retry once space frees
class CorruptionError(ComfyMQError): ...    # on-disk data failed its checksum
class ConflictError(ComfyMQError): ...      # illegal state transition
class LeaseLostError(ComfyMQError): ...     # stale fencing token

def validate_prompt(prompt: Union[str, dict]) -> None: ...

class LeaseInfo(TypedDict):
    token: int
    expires_at: int

class JobDict(TypedDict, total=False):
    id: str
    state: State
    priority: int
    attempts: int
    max_attempts: int
    timeout: Optional[float]
    prompt_id: str
    create_time: int
    enqueued_at: int
    updated_at: int
    batch_id: Optional[str]
    owner: Optional[str]
    prompt: dict            # only with with_prompt=True
    workflow: Optional[dict]  # only with with_prompt=True
    started_at: Optional[int]
    finished_at: Optional[int]
    worker_id: Optional[str]
    lease: Optional[LeaseInfo]
    outputs: Optional[dict]
    artifacts: list[dict]   # {path, size, sha256, mime}
    error: Optional[dict]   # {type, message, node_id?, traceback?, details?}
    history: list[dict]     # {attempt, worker, started_ms, ended_ms, outcome, error?}
    progress: Any

class Lease(TypedDict):
    job_id: str
    token: int
    attempt: int
    expires_at: int
    deadline_at: Optional[int]
    job: JobDict            # with prompt and workflow

class Store:
    def __init__(self, path: str, *, segment_bytes: int = ..., checkpoint_every_bytes: int = ...,
                 reopen_lease_grace: float = 30.0, default_lease: float = 30.0, background: bool = True) -> None: ...
    @property
    def recovery_report(self) -> dict: ...  # checkpoint_segment, records_replayed, torn_tail_bytes, bad_regions, warnings, summary
    def enqueue(self, prompt: Union[str, dict], *, workflow: Union[str, dict, None] = None, priority: int = 1,
                metadata: Optional[dict] = None, prompt_id: Optional[str] = None, create_time: Optional[int] = None,
                batch_id: Optional[str] = None, max_attempts: int = 3, timeout: Optional[float] = None,
                owner: Optional[str] = None) -> dict: ...  # {"id": str, "existed": bool}
    def enqueue_many(self, jobs: Sequence[dict]) -> list[dict]: ...  # one sync; all or none
    def get(self, job_id: str, *, with_prompt: bool = True) -> JobDict: ...
    def get_by_prompt_id(self, prompt_id: str, *, with_prompt: bool = True) -> JobDict: ...
    def list(self, *, state: Union[State, Iterable[State], None] = None, batch_id: Optional[str] = None,
             since: Optional[int] = None, until: Optional[int] = None, cursor: Optional[str] = None,
             limit: int = 100, newest_first: bool = True, with_prompt: bool = False) -> dict: ...  # {"jobs", "next_cursor"}
    def stats(self) -> dict: ...
    def take(self, worker_id: str, *, lease: Optional[float] = None, ignore_pause: bool = False) -> Optional[Lease]: ...
    def heartbeat(self, job_id: str, token: int, *, lease: Optional[float] = None) -> int: ...  # new expiry (ms)
    def progress(self, job_id: str, token: int, progress: Any) -> None: ...
    # complete / fail: True when recorded now, False when this lease's result was already recorded (a resend);
    # LeaseLostError when the token no longer owns the job.
    def complete(self, job_id: str, token: int, *, outputs: Optional[dict] = None,
                 artifacts: Optional[Sequence[dict]] = None) -> bool: ...
    def fail(self, job_id: str, token: int, error: dict, *, retryable: bool = True) -> bool: ...
    def cancel(self, job_id: str, reason: str = "") -> None: ...
    def retry(self, job_id: str) -> None: ...
    def delete(self, job_id: str) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    @property
    def paused(self) -> bool: ...
    def expire_leases(self) -> int: ...
    def purge(self, *, older_than_days: float) -> int: ...
    def checkpoint(self) -> None: ...
    def compact(self) -> None: ...
    def health(self) -> None: ...   # raises ComfyMQError if a failed write made the handle unusable
    def close(self) -> None: ...
    def __enter__(self) -> "Store": ...
    def __exit__(self, *exc: Any) -> None: ...

class ArtifactStream:
    def write(self, data: Union[bytes, bytearray, memoryview]) -> None: ...
    def commit(self) -> dict: ...   # {path, full_path, size, sha256}
    def abort(self) -> None: ...
    @property
    def size(self) -> int: ...
    def __enter__(self) -> "ArtifactStream": ...
    def __exit__(self, *exc: Any) -> bool: ...   # aborts unless committed

class ArtifactWriter:
    def __init__(self, root: str) -> None: ...
    def write(self, relative_path: str, data: Union[bytes, bytearray, memoryview]) -> dict: ...
    def open(self, relative_path: str) -> ArtifactStream: ...
    @property
    def root(self) -> str: ...
    @property
    def stale_removed(self) -> int: ...
