"""A worker's identity (comfy_nodes/identity.py): stable across restarts, renewed in a copied folder, and two
installations under one id refused by a real broker as a clash, once, while the first keeps its job."""

from __future__ import annotations

import shutil
import stat
import time

from comfy_nodes import identity
from comfy_nodes.identity import worker_identity


def test_the_id_and_installation_are_stable_across_restarts(tmp_path):
    a = worker_identity(tmp_path / "data")
    b = worker_identity(tmp_path / "data")
    assert a == b
    assert (tmp_path / "data" / "worker_id").read_text().strip() == a.worker_id
    assert len(a.install_id) == 32
    mode = stat.S_IMODE((tmp_path / "data" / "worker_install").stat().st_mode)
    assert mode == 0o600, oct(mode)


def test_an_id_kept_by_an_older_version_is_kept(tmp_path):
    (tmp_path / "worker_id").write_text("gpu-box-1234\n")
    got = worker_identity(tmp_path)
    assert got.worker_id == "gpu-box-1234"
    assert worker_identity(tmp_path) == got


def test_a_copied_folder_makes_its_own_id_and_the_original_keeps_its_own(tmp_path, caplog):
    original = worker_identity(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # a copied ComfyUI folder carries both files
    with caplog.at_level("WARNING", logger="comfymq"):
        copy = worker_identity(tmp_path / "b")
    assert copy.worker_id != original.worker_id
    assert copy.install_id != original.install_id
    assert "copied" in caplog.text
    assert worker_identity(tmp_path / "a") == original
    assert worker_identity(tmp_path / "b") == copy


def test_another_machine_is_another_installation(tmp_path, monkeypatch):
    original = worker_identity(tmp_path)
    monkeypatch.setattr(identity, "machine_id", lambda: "a-cloned-disk-on-another-machine")
    moved = worker_identity(tmp_path)
    assert moved.worker_id != original.worker_id and moved.install_id != original.install_id


def test_an_id_set_by_hand_is_kept_in_a_copy_but_the_installation_is_new(tmp_path):
    a = worker_identity(tmp_path / "a", "shared-id")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    b = worker_identity(tmp_path / "b", "shared-id")
    assert a.worker_id == b.worker_id == "shared-id"
    assert a.install_id != b.install_id  # so the broker can tell the two apart


def test_two_installations_under_one_id_meet_a_real_broker(tmp_path, native):
    """The second is refused with the clash named and the fix said, its client reports it once, and the first
    keeps its link and runs its job to the end with one attempt."""
    store = native.Store(str(tmp_path / "store"))
    broker = native.Broker(store, bind="tcp://127.0.0.1:0", heartbeat=0.1, artifact_root=str(tmp_path / "art"))
    caps = {"node_classes": ["SaveImage"], "combos": {}}
    a = worker_identity(tmp_path / "a", "shared-id")
    b = worker_identity(tmp_path / "b", "shared-id")
    first = native.WorkerClient(
        broker=broker.endpoint,
        worker_id=a.worker_id,
        install_id=a.install_id,
        capabilities=caps,
        heartbeat=0.1,
        reconnect_min=0.05,
        reconnect_max=0.2,
    )
    try:
        assert _event(first, "connected")
        job = store.enqueue({"1": {"class_type": "SaveImage", "inputs": {}}})
        got = first.next_job(timeout=5)
        assert got is not None and got["job_id"] == job["id"]
        second = native.WorkerClient(
            broker=broker.endpoint,
            worker_id=b.worker_id,
            install_id=b.install_id,
            capabilities=caps,
            heartbeat=0.1,
            reconnect_min=0.05,
            reconnect_max=0.2,
        )
        try:
            refused = _event(second, "refused")
            assert refused and refused["reason"].startswith("refused by the broker: id clash: worker id shared-id")
            assert "COMFYMQ_WORKER_ID" in refused["reason"]
            assert _count(second, "refused", 1.5) == 0, "a standing refusal is said once"
            assert _count(first, "disconnected", 0.1) == 0
            first.complete(got["job_id"], got["token"], outputs={"1": {}})
            assert _event(first, "ack")
            done = store.get(job["id"])
            assert done["state"] == "succeeded" and done["attempts"] == 1
            assert all(h.get("outcome") != "lease_lost" for h in done["history"]), done["history"]
        finally:
            second.close()
    finally:
        first.close()
        broker.close()
        store.close()


def _event(client, kind, timeout=5.0):
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        e = client.next_event(timeout=0.05)
        if e and e.get("type") == kind:
            return e
    return None


def _count(client, kind, seconds):
    n, until = 0, time.monotonic() + seconds
    while time.monotonic() < until:
        e = client.next_event(timeout=0.05)
        n += bool(e and e.get("type") == kind)
    return n
