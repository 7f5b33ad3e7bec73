"""The CLI's client commands against a real host process: enqueue (count, sweep, API-format check, --input files),
status, and one-line errors with exit status 1."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.subprocess

PROMPT = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 1}},
    "2": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 2}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "cli"}},
}


def cli(*args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "comfy_nodes", *args], cwd=REPO, capture_output=True, text=True, input=stdin, timeout=60
    )


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("host")
    port = free_port()
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "comfy_nodes",
            "host",
            "--data-dir",
            str(tmp),
            "--port",
            str(port),
            "--workers-bind",
            f"tcp://127.0.0.1:{free_port()}",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/comfymq/health", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    yield url, tmp
    p.terminate()
    p.wait(timeout=15)


def test_enqueue_with_count_and_sweep_makes_one_batch(host, tmp_path):
    url, _ = host
    f = tmp_path / "wf_api.json"
    f.write_text(json.dumps(PROMPT))
    r = cli("enqueue", str(f), "--url", url, "--count", "2", "--sweep", "1.color=10,20,30", "--priority", "4")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("queued 6 jobs (batch ")
    batch = r.stdout.split("(batch ")[1].split(")")[0]
    with urllib.request.urlopen(f"{url}/comfymq/tasks?batch={batch}&limit=100") as resp:
        jobs = json.loads(resp.read())["jobs"]
    assert len(jobs) == 6 and {j["priority"] for j in jobs} == {4}
    r = cli("status", "--url", url)
    assert r.returncode == 0, r.stderr
    assert "pending 6" in r.stdout and "workers: none connected" in r.stdout


def test_enqueue_from_stdin_and_status_json(host):
    url, _ = host
    r = cli("enqueue", "-", "--url", url, stdin=json.dumps({"prompt": PROMPT, "workflow": {"nodes": []}}))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("queued 1 job")
    r = cli("status", "--url", url, "--json")
    assert json.loads(r.stdout)["stats"]["counts"]["pending"] >= 1


@pytest.mark.parametrize(
    "content, needle",
    [
        ('{"nodes": [], "links": []}', "is a UI workflow"),
        ("not json", "is not JSON"),
        ('{"1": {"inputs": {}}}', "class_type"),
    ],
)
def test_bad_files_are_one_line_errors(host, tmp_path, content, needle):
    url, _ = host
    f = tmp_path / "bad.json"
    f.write_text(content)
    r = cli("enqueue", str(f), "--url", url)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr


def test_unreachable_host_and_bad_sweep_are_one_line_errors(tmp_path):
    f = tmp_path / "wf.json"
    f.write_text(json.dumps(PROMPT))
    for args, needle in (
        ((str(f), "--url", f"http://127.0.0.1:{free_port()}"), "cannot reach the host"),
        ((str(f), "--sweep", "color=1,2"), "--sweep wants NODE.INPUT="),
    ):
        r = cli("enqueue", *args)
        assert r.returncode == 1
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], r.stderr
    r = cli("worker", "--capacity", "0", "--data-dir", str(tmp_path))
    assert r.returncode == 1 and "capacity" in r.stderr


# ---- the host's HTTP settings: one token rule, checked values, a client that sends what the host wants --------


@pytest.mark.parametrize(
    "args, env, needle",
    [
        (("--token=a",), {}, "at least 8"),
        (("--token", "two words"), {}, "visible ASCII"),
        ((), {"COMFYMQ_TOKEN": "short"}, "at least 8"),
        (("--allow-host", "http://x"), {}, "allowed_hosts"),
        (("--allow-origin", "x.example"), {}, "allowed_origins"),
        (("--read-timeout", "0"), {}, "http_read_timeout"),
        (("--max-jobs-per-request", "0"), {}, "max_jobs_per_request"),
        ((), {"COMFYMQ_HTTP_KEEPALIVE_TIMEOUT": "-1"}, "keepalive_timeout"),
    ],
)
def test_host_refuses_bad_http_settings_before_it_starts(tmp_path, args, env, needle):
    """Before: `--token=a` started a host although the configuration wants 8+ characters."""
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "comfy_nodes",
            "host",
            "--data-dir",
            str(tmp_path),
            "--port",
            str(free_port()),
            "--workers-bind",
            "off",
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("COMFYMQ_")}, **env},
    )
    assert r.returncode == 1, r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert not (tmp_path / "store").exists()  # refused before the store was opened


def test_the_clients_bodyless_posts_say_they_are_json(host):
    """The host refuses a state-changing request without Content-Type: application/json; the CLI's client
    sends it on every request but a GET."""
    from comfy_nodes.remote import call

    url, _ = host
    assert call(url + "/comfymq/queue/pause", "POST")["paused"] is True
    assert call(url + "/comfymq/queue/resume", "POST")["paused"] is False
    req = urllib.request.Request(url + "/comfymq/queue/pause", method="POST")  # what a web page could send
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 415
    assert call(url + "/comfymq/queue")["paused"] is False


def _stored_inputs(data_dir: Path) -> set[str]:
    root = data_dir / "inputs"
    return (
        {f.name for shard in root.iterdir() if shard.name != "tmp" for f in shard.iterdir()} if root.is_dir() else set()
    )


def test_enqueue_uploads_input_files_and_refers_to_them(host, tmp_path):
    url, data_dir = host
    photo = tmp_path / "my photo.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200_000))
    mask = tmp_path / "mask.png"
    mask.write_bytes(b"\x89PNG\r\n\x1a\nmask")
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "2": {"class_type": "LoadImageMask", "inputs": {"image": "example.png", "channel": "alpha"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "cli"}},
    }
    f = tmp_path / "wf_api.json"
    f.write_text(json.dumps(graph))
    r = cli("enqueue", str(f), "--url", url, "--input", f"1.image={photo}", "--input", f"2.image={mask}")
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.split()[-1]
    with urllib.request.urlopen(f"{url}/comfymq/jobs/{job_id}") as resp:
        job = json.loads(resp.read())["job"]
    digest = hashlib.sha256(photo.read_bytes()).hexdigest()
    assert job["prompt"]["1"]["inputs"]["image"] == {
        "comfymq_input": digest,
        "name": "my photo.png",
        "size": photo.stat().st_size,
    }
    assert job["prompt"]["2"]["inputs"]["channel"] == "alpha"
    assert {i["node"]: i["sha256"] for i in job["inputs"]} == {
        "1": digest,
        "2": hashlib.sha256(mask.read_bytes()).hexdigest(),
    }
    stored = data_dir / "inputs" / digest[:2] / digest
    assert stored.read_bytes() == photo.read_bytes()


@pytest.mark.parametrize(
    "item, needle",
    [
        ("9.image={photo}", "the graph has no node '9'"),
        ("1.imgae={photo}", "node '1' has no input 'imgae' (its inputs: image)"),
        ("1.image={missing}", "cannot read the file"),
        ("1image={photo}", "--input wants NODE.INPUT=PATH"),
    ],
)
def test_a_bad_input_flag_is_one_line_and_uploads_nothing(host, tmp_path, item, needle):
    url, data_dir = host
    photo = tmp_path / "unique.png"
    photo.write_bytes(b"never sent " + os.urandom(32))
    f = tmp_path / "wf_api.json"
    f.write_text(json.dumps({"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}}}))
    item = item.format(photo=photo, missing=tmp_path / "missing.png")
    # the good --input comes first: nothing at all is sent when any of them is wrong
    r = cli("enqueue", str(f), "--url", url, "--input", f"1.image={photo}", "--input", item)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert hashlib.sha256(photo.read_bytes()).hexdigest() not in _stored_inputs(data_dir)
