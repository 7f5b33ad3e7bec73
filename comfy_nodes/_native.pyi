"""Type stub for comfy_nodes._native, the compiled core (built from native/bindings/native_module.cc).

Errors: bad input -> ValueError; unknown job -> KeyError; everything else -> ComfyMQError or a subclass.
Times are integers in milliseconds since the epoch; durations (lease, timeout) are seconds.
Job ids are 16 lowercase hex digits, ordered like enqueue order.
"""

from typing import Any, Iterable, Literal, Optional, Sequence, TypedDict, Union

JOB_STATES: tuple[str, ...]
MAX_JSON_DEPTH: int  # prompts, workflows and every stored JSON value nest at most this deep
State = Literal["pending", "running", "succeeded", "failed", "cancelled"]

class ComfyMQError(RuntimeError): ...
class StoreLockedError(ComfyMQError): ...  # the store is open in another process
class DiskFullError(ComfyMQError): ...  # nothing changed; retry once space frees
class CorruptionError(ComfyMQError): ...  # on-disk data failed its checksum
class ConflictError(ComfyMQError): ...  # illegal state transition
class LeaseLostError(ComfyMQError): ...  # stale fencing token

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
    after: list[str]  # the jobs it waits for: it runs once each has succeeded
    labels: dict  # what NewJob labels it was queued with ({} for none)
    prompt: dict  # only with with_prompt=True
    workflow: Optional[dict]  # only with with_prompt=True
    started_at: Optional[int]
    finished_at: Optional[int]
    worker_id: Optional[str]
    lease: Optional[LeaseInfo]
    outputs: Optional[dict]
    artifacts: list[dict]  # {path, size, sha256, mime}
    error: Optional[dict]  # {type, message, node_id?, traceback?, details?}
    history: list[dict]  # {attempt, worker, started_ms, ended_ms, outcome, error?}
    progress: Any

class Lease(TypedDict):
    job_id: str
    token: int
    attempt: int
    expires_at: int
    deadline_at: Optional[int]
    job: JobDict  # with prompt and workflow

class Store:
    def __init__(
        self,
        path: str,
        *,
        segment_bytes: int = ...,
        checkpoint_every_bytes: int = ...,
        reopen_lease_grace: float = 30.0,
        default_lease: float = 30.0,
        background: bool = True,
        raise_writer_priority: bool = True,
    ) -> None:
        """raise_writer_priority: the thread writing and syncing a commit group runs at a raised priority
        (nice -10 relative to its own) from its turn until its sync returns, where the process may raise it
        (CAP_SYS_NICE or RLIMIT_NICE); elsewhere this does nothing."""
        ...
    @property
    def recovery_report(
        self,
    ) -> dict: ...  # checkpoint_segment, records_replayed, torn_tail_bytes, bad_regions, warnings, summary
    def enqueue(
        self,
        prompt: Union[str, dict],
        *,
        workflow: Union[str, dict, None] = None,
        priority: int = 1,
        metadata: Optional[dict] = None,
        prompt_id: Optional[str] = None,
        create_time: Optional[int] = None,
        batch_id: Optional[str] = None,
        max_attempts: int = 3,
        timeout: Optional[float] = None,
        owner: Optional[str] = None,
        after: Optional[Sequence[str]] = None,  # job ids that must succeed first (at most 64; each one the store has)
        labels: Optional[dict] = None,  # kept with the job (a JSON object of at most 64 KiB): the v2 API's metadata
        notify: Optional[bool] = None,  # its endings go to the outbox (put_doc): webhooks
    ) -> dict: ...  # {"id": str, "existed": bool}
    def enqueue_many(self, jobs: Sequence[dict]) -> list[dict]: ...  # one sync; all or none
    def get(self, job_id: str, *, with_prompt: bool = True) -> JobDict: ...
    def get_by_prompt_id(self, prompt_id: str, *, with_prompt: bool = True) -> JobDict: ...
    def list(
        self,
        *,
        state: Union[State, Iterable[State], None] = None,
        batch_id: Optional[str] = None,
        since: Optional[int] = None,
        until: Optional[int] = None,
        cursor: Optional[str] = None,
        limit: int = 100,
        newest_first: bool = True,
        with_prompt: bool = False,
    ) -> dict: ...  # {"jobs", "next_cursor"}
    def stats(self) -> dict: ...
    def queue_position(self, job_id: str) -> Optional[int]: ...  # 0 = next; None unless pending and ready
    # Fair share: policies {"weight": 1..1000, "max_running": n (0: none)}; memory only, set after each open.
    def set_owner_policies(self, default: dict, by_owner: dict) -> None: ...
    def owner_stats(self) -> list: ...  # [{owner, pending, running, weight, max_running, at_running_limit}]
    def take(self, worker_id: str, *, lease: Optional[float] = None, ignore_pause: bool = False) -> Optional[Lease]: ...
    def heartbeat(self, job_id: str, token: int, *, lease: Optional[float] = None) -> int: ...  # new expiry (ms)
    def progress(self, job_id: str, token: int, progress: Any) -> None: ...
    # complete / fail: True when recorded now, False when this lease's result was already recorded (a resend);
    # LeaseLostError when the token no longer owns the job.
    def complete(
        self, job_id: str, token: int, *, outputs: Optional[dict] = None, artifacts: Optional[Sequence[dict]] = None
    ) -> bool: ...
    def fail(self, job_id: str, token: int, error: dict, *, retryable: bool = True) -> bool: ...
    def cancel(self, job_id: str, reason: str = "") -> None: ...
    def retry(self, job_id: str) -> None: ...
    def delete(self, job_id: str) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    # Documents: small named str values kept in the store beside the jobs, durable once the call returns (keys of 1..256
    # bytes; values up to 16 MiB). "notify/" and "outbox/" keys are the store's: a job enqueued with notify=True gets an
    # outbox/<13-digit ms>-<job id> document ({"job", "state", "at"}) in the commit that ends it; the caller deletes it.
    # False (nothing changed) when only_if_absent and the key is there; DiskFullError past the documents' limits.
    def put_doc(self, key: str, value: str, *, only_if_absent: bool = False) -> bool: ...
    def delete_doc(self, key: str) -> None: ...  # KeyError when absent
    def get_doc(self, key: str) -> Optional[str]: ...
    def list_docs(
        self, *, prefix: str = "", after: str = "", limit: int = 1000, keys_only: bool = False
    ) -> list[tuple[str, str]]: ...  # sorted by key
    @property
    def paused(self) -> bool: ...
    def expire_leases(self) -> int: ...
    def purge(self, *, older_than_days: float) -> int: ...
    def checkpoint(self) -> None: ...
    def compact(self) -> None: ...
    def health(self) -> None: ...  # raises ComfyMQError if a failed write made the handle unusable
    def close(self) -> None: ...
    def __enter__(self) -> "Store": ...
    def __exit__(self, *exc: Any) -> None: ...

class ArtifactStream:
    def write(self, data: Union[bytes, bytearray, memoryview]) -> None: ...
    def commit(self) -> dict: ...  # {path, full_path, size, sha256}
    def abort(self) -> None: ...
    @property
    def size(self) -> int: ...
    def __enter__(self) -> "ArtifactStream": ...
    def __exit__(self, *exc: Any) -> bool: ...  # aborts unless committed

class ArtifactWriter:
    def __init__(self, root: str) -> None: ...
    def write(self, relative_path: str, data: Union[bytes, bytearray, memoryview]) -> dict: ...
    def open(self, relative_path: str) -> ArtifactStream: ...
    @property
    def root(self) -> str: ...
    @property
    def stale_removed(self) -> int: ...

# ---- CurveZMQ keys -------------------------------------------------------------------------------------
def curve_available() -> bool: ...
def curve_keypair() -> tuple[str, str]: ...  # (public, secret), Z85
def curve_public_key(secret_key: str) -> str: ...

# ---- the cluster ---------------------------------------------------------------------------------------
class Broker:
    """The host's side: a ROUTER socket and its thread, owning dispatch for `store` (which must stay open)."""
    def __init__(
        self,
        store: Store,
        *,
        bind: str = "tcp://127.0.0.1:5557",
        artifact_root: str,
        heartbeat: float = 1.0,
        liveness: int = 3,
        curve_secret_key: Optional[str] = None,
        allowed_worker_keys: Optional[Sequence[str]] = None,
        allow_plaintext: bool = False,
        lease: Optional[float] = None,
        plugin_version: str = "",
        max_run_time: Optional[float] = None,  # seconds a run may take when its job sets no
        # timeout (default 7200; 0 = no limit)
        worker_keys_path: Optional[str] = None,  # where worker id -> CURVE key bindings are kept
        drained_path: Optional[str] = None,  # where the drained worker ids are kept (a drain outlasts a restart)
        inputs_dir: Optional[str] = None,  # the host's stored inputs (<dir>/<sha[0:2]>/<sha>) workers may fetch
    ) -> None: ...
    @property
    def endpoint(self) -> str: ...  # what was bound (port 0 resolved)
    @property
    def public_key(self) -> Optional[str]: ...
    # Events (GIL released while waiting): {"type": "job"|"progress"|"worker"|"queue"|"stats"|"log"|
    # "cancel_confirmed"|"overflow", ...}; None after timeout.
    def next_event(self, timeout: float = 1.0) -> Optional[dict]: ...
    def workers(self) -> list[dict]: ...  # id, name, online, draining, capacity, credit, running, info, ...
    def explain(self, job_id: str) -> list[str]: ...  # why no worker takes this pending job ([] if one can)
    # The same for a prompt not queued yet; ValueError when it is not an API-format prompt.
    def explain_prompt(self, prompt: Union[str, dict]) -> list[str]: ...
    def drain(self, worker_id: str, drain: bool = True) -> None: ...
    # Replaces the CURVE allow-list at once (include the configured keys): a worker whose key goes is dropped, its
    # jobs back in the queue, and cannot connect again. ValueError for a bad key or a broker without CURVE.
    def set_allowed_keys(self, keys: list) -> None: ...
    def refresh_capabilities(self, worker_id: Optional[str] = None) -> None: ...
    def counters(self) -> dict: ...
    def close(self) -> None: ...
    def __enter__(self) -> "Broker": ...
    def __exit__(self, *exc: Any) -> None: ...

class WorkerClient:
    """A worker's link to a broker (DEALER; reconnects with backoff; re-sends results in flight)."""
    def __init__(
        self,
        *,
        broker: str,
        worker_id: str,
        name: Optional[str] = None,
        capacity: int = 1,
        capabilities: Optional[dict] = None,
        info: Optional[dict] = None,
        plugin_version: str = "",
        comfyui_version: str = "",
        heartbeat: float = 1.0,
        liveness: int = 3,
        broker_public_key: Optional[str] = None,
        public_key: Optional[str] = None,
        secret_key: Optional[str] = None,
        allow_plaintext: bool = False,
        reconnect_min: float = 1.0,
        reconnect_max: float = 30.0,
        install_id: str = "",  # random per installation: another one saying HELLO as this id is an id clash
    ) -> None: ...
    # {"job_id", "token", "attempt", "timeout", "prompt", "workflow", "extra"}; None after timeout.
    # A job the client cannot hand over (Python cannot read it) is failed, not retried, and raises ValueError
    # naming it; the caller logs that and keeps taking jobs.
    def next_job(self, timeout: float = 1.0) -> Optional[dict]: ...
    # {"type": "connected"|"disconnected"|"refused"|"cancel"|"ack"|"nack"|"caps_request"|"log", ...}
    def next_event(self, timeout: float = 1.0) -> Optional[dict]: ...
    def progress(self, job_id: str, token: int, progress: Any) -> None: ...
    def complete(
        self, job_id: str, token: int, *, outputs: Optional[dict] = None, files: Optional[Sequence[dict]] = None
    ) -> None: ...  # files: {path, name?, mime?}
    def fail(self, job_id: str, token: int, error: dict, *, retryable: bool = True) -> None: ...
    # Fetches an input of a job this worker holds the lease of (its prompt names {"comfymq_input": sha256}) from the
    # host into dest (written beside it, synced, sha256 checked, renamed); returns its size. ValueError: refused by
    # the host (not this job's, no such input); Error (a RuntimeError): link lost, timed out, could not write.
    # The inputs this worker keeps (sha256s, at most 4096): the host gives jobs naming them to this worker first.
    def update_inputs(self, sha256s: Sequence[str]) -> None: ...
    def fetch_input(self, job_id: str, token: int, sha256: str, dest: str, *, timeout: float = 600.0) -> int: ...
    def confirm_cancel(self, job_id: str, token: int) -> None: ...
    def update_capabilities(self, capabilities: dict) -> None: ...
    def state(self) -> dict: ...
    def close(self, bye: bool = False) -> None: ...
    def __enter__(self) -> "WorkerClient": ...
    def __exit__(self, *exc: Any) -> None: ...
