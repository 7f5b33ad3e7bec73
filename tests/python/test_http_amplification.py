"""Amplification: what one request may make the host store and hold (api/limits.py), against a real host process.

The issue's request (a 47 KB prompt sent as a JSON string with count 10000: 470 MB to store) is refused with a 413
naming the limit and changes nothing; the largest requests the defaults allow are accepted, all or nothing, and
the host's peak memory (VmHWM) stays bounded. The figures are printed (`pytest -s`); bench/http_memory.py
compares them with the old limits.
"""

from __future__ import annotations

import json

import pytest
from http_host import HostProcess, sized_prompt

from comfy_nodes.api.limits import RequestLimits

pytestmark = pytest.mark.subprocess

P = "/comfymq"
DEFAULTS = RequestLimits()
MIB = 1 << 20
PEAK_BOUND_MIB = 640  # a generous bound: ~280 MiB measured for each case below (and 1.3 GiB before the limits)


def measure(tmp, body: dict, *flags: str) -> dict:
    """Posts body to a fresh host; returns status, error type, jobs stored and idle / peak memory (MiB)."""
    with HostProcess(tmp, *flags) as host:
        idle = host.peak_rss_kib()
        status, answer = host.json("POST", f"{P}/jobs", body, timeout=300)
        peak = host.peak_rss_kib()
        total = host.json("GET", f"{P}/stats")[1]["total"]
    return {
        "status": status,
        "error": (answer or {}).get("error"),
        "jobs": total,
        "idle_mib": round(idle / 1024),
        "peak_mib": round(peak / 1024),
    }


def report(case: str, body: dict, result: dict) -> None:
    print(
        f"[ amplification ] {case}: request {len(json.dumps(body)) / 1024:.0f} KiB -> HTTP {result['status']}, "
        f"{result['jobs']} jobs stored; host peak RSS {result['peak_mib']} MiB (idle {result['idle_mib']} MiB)"
    )


def test_the_issues_request_is_refused_and_changes_nothing(tmp_path):
    prompt = json.dumps(sized_prompt(47_000))
    body = {"prompt": prompt, "count": 10000}
    result = measure(tmp_path, body)
    report("47 KB prompt string x count 10000", body, result)
    assert result["status"] == 413, result
    err = result["error"]
    assert err["type"] == "too_many_jobs"
    assert str(DEFAULTS.max_stored_bytes_per_request) in err["message"]
    assert "max_stored_bytes_per_request" in err["message"]
    assert result["jobs"] == 0
    assert result["peak_mib"] - result["idle_mib"] < 32, result  # refused before anything was built


@pytest.mark.parametrize(
    "case, per_job, count",
    [
        ("10000 jobs at the byte limit", DEFAULTS.max_stored_bytes_per_request // DEFAULTS.max_jobs_per_request, 10000),
        ("1000 jobs of a 64 KB prompt", 64_000, 1000),
    ],
)
def test_the_largest_allowed_expansions_stay_bounded(tmp_path, case, per_job, count):
    g = sized_prompt(per_job - 32)  # room for the fresh seeds of each copy
    body = {"prompt": g, "count": count}
    result = measure(tmp_path, body)
    report(case, body, result)
    assert result["status"] == 200, result
    assert result["jobs"] == count
    assert result["peak_mib"] < PEAK_BOUND_MIB, result


def test_the_largest_allowed_body_stays_bounded(tmp_path):
    body = {"prompt": sized_prompt(DEFAULTS.max_body_bytes - 4096)}
    result = measure(tmp_path, body)
    report("one job, a prompt at max_body_bytes", body, result)
    assert result["status"] == 200 and result["jobs"] == 1, result
    assert result["peak_mib"] < PEAK_BOUND_MIB, result


def test_one_more_job_or_byte_than_configured_is_a_413_naming_the_limit(tmp_path):
    g = sized_prompt(2000)
    with HostProcess(tmp_path, "--max-jobs-per-request", "5", "--max-stored-bytes-per-request", "20000") as host:
        status, body = host.json("POST", f"{P}/jobs", {"prompt": g, "count": 6})
        assert (
            status == 413 and "max_jobs_per_request" in body["error"]["message"] and " 5 " in body["error"]["message"]
        ), body
        status, body = host.json("POST", f"{P}/jobs", {"prompt": g, "sweep": {"3.steps": [1, 2, 3]}, "count": 2})
        assert status == 413 and "max_jobs_per_request" in body["error"]["message"], body
        status, body = host.json("POST", f"{P}/jobs", {"prompt": g, "count": 5, "workflow": {"nodes": ["x" * 3000]}})
        assert status == 413 and "20000" in body["error"]["message"], body  # the workflow counts too
        assert host.json("GET", f"{P}/stats")[1]["total"] == 0
        status, body = host.json("POST", f"{P}/jobs", {"prompt": g, "count": 5})
        assert status == 200 and body["count"] == 5, body
