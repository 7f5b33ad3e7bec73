"""The host's limit on one run (max_run_time, default 2 h): a worker that heartbeats but never finishes no longer
holds a job for ever. Past the limit the run is cancelled on its worker and the job runs again; a job's own
timeout still wins. Configured by comfymq.toml / COMFYMQ_MAX_RUN_TIME / `host --max-run-time`."""

from __future__ import annotations

import pytest
from conftest import graph, wait_for

from comfy_nodes import _native as native
from comfy_nodes.cli import build_parser
from comfy_nodes.config import ConfigError, load_config
from comfy_nodes.service import BrokerSettings, QueueService

CAPS = {
    "node_classes": ["KSampler", "CheckpointLoaderSimple"],
    "combos": {"CheckpointLoaderSimple.ckpt_name": ["sd15.safetensors"]},
}


def test_the_limit_is_configured_one_way_for_every_way_in(tmp_path):
    assert load_config({}, user_dir=str(tmp_path)).max_run_time == 7200
    assert load_config({"COMFYMQ_MAX_RUN_TIME": "60"}, user_dir=str(tmp_path)).max_run_time == 60
    assert load_config({"COMFYMQ_MAX_RUN_TIME": "0"}, user_dir=str(tmp_path)).max_run_time == 0
    for bad in ("-1", "1e9", "soon"):
        with pytest.raises(ConfigError) as e:
            load_config({"COMFYMQ_MAX_RUN_TIME": bad}, user_dir=str(tmp_path))
        assert "max_run_time" in str(e.value)
    args = build_parser().parse_args(["host", "--max-run-time", "90"])
    assert args.max_run_time == 90
    assert build_parser().parse_args(["host"]).max_run_time == 7200
    with pytest.raises(ValueError):
        native.Broker(native.Store(str(tmp_path / "s")), artifact_root=str(tmp_path / "a"), max_run_time=-5)


def test_a_run_past_the_limit_is_called_back_and_the_job_runs_again(tmp_path):
    service = QueueService(
        tmp_path / "host", broker=BrokerSettings(bind="tcp://127.0.0.1:0", heartbeat=0.25, max_run_time=1.0)
    )
    clients = []
    try:

        def worker(wid):
            c = native.WorkerClient(
                broker=service.broker.endpoint,
                worker_id=wid,
                capacity=1,
                capabilities=CAPS,
                heartbeat=0.25,
                reconnect_min=0.05,
                reconnect_max=0.5,
            )
            clients.append(c)
            return c

        stuck = worker("stuck")
        jid = service.store.enqueue(graph(1))["id"]
        job = wait_for(lambda: stuck.next_job(0.1), 10, "the job")
        assert job["job_id"] == jid and 0 < job["timeout"] <= 1.0, job["timeout"]
        other = worker("other")
        cancel = wait_for(lambda: (e := stuck.next_event(0.1)) and e["type"] == "cancel" and e, 10, "the call-back")
        assert cancel["job_id"] == jid and cancel["token"] == job["token"]
        again = wait_for(lambda: other.next_job(0.1), 10, "the job to run again")
        assert again["job_id"] == jid
        first = service.store.get(jid)["history"][0]
        assert first["outcome"] == "timeout" and first["worker"] == "stuck"
        assert "exceeded its time limit of 1 s" in first["error"]["message"], first["error"]
        # A job's own timeout wins over the host's limit.
        own = service.store.enqueue(graph(2), timeout=3600)["id"]
        other.complete(again["job_id"], again["token"], outputs={})
        j = wait_for(lambda: other.next_job(0.1), 10, "the job with its own timeout")
        assert j["job_id"] == own and j["timeout"] > 3000
    finally:
        for c in clients:
            c.close()
        service.close()
