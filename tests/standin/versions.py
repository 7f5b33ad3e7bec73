"""The ComfyUI versions the stand-in can imitate, and what differs between them.

    profile = versions.get("current")        # or "0.3.64", "0.8.0" (the default), or None: $STANDIN_COMFYUI_VERSION
    profile.jobs_api, profile.jobs_cancel, profile.strict_prompt_ids, ...

What each profile follows (read from the real sources; see tests/standin/recordings/README.md):

  0.3.64   ComfyUI v0.3.64 (Comfy-Org/ComfyUI tag v0.3.64, a125cd84): no jobs API (/api/jobs is a 404); /system_stats
           says "os": os.name ("posix") and has one device; /features and the websocket feature_flags handshake
           exist (supports_preview_metadata, max_upload_size); queue entries keep no create_time and are 5 long
           (sensitive extra_data is only dropped from history); caller-chosen prompt ids of any form, duplicates
           accepted; POST /interrupt takes an optional prompt_id (interrupts only if that prompt runs).
  0.8.0    ComfyUI v0.8.0, as recorded (tests/standin/recordings): GET /api/jobs (status filter pending,
           in_progress, completed, failed; sort; limit/offset pagination) and GET /api/jobs/{id}; an interrupted
           prompt is "failed" there; no cancel endpoints; duplicates accepted; /features adds extension.manager.
  current  ComfyUI master as read in Nov 2026 (server.py, comfy_execution/jobs.py, comfy_api/feature_flags.py of
           Comfy-Org/ComfyUI; the frontend's jobs client): the jobs API has a "cancelled" status (an interrupted
           prompt), previewable_outputs_count, the prompt and extra_data of queued jobs in GET /api/jobs/{id};
           POST /api/jobs/{id}/cancel and POST /api/jobs/cancel {"job_ids": [...]} ({"cancelled": bool}); a
           caller-chosen prompt_id must be a canonical lowercase UUID (else 400 invalid_prompt_id) and a taken one
           answers 409 duplicate_prompt_id; an unknown node class is a "missing_node_type" error; /system_stats
           lists every device (primary first) with comfy_package_versions and deploy_environment; /features has
           more flags (supports_model_type_tags, node_replacements, assets).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

ENV = "STANDIN_COMFYUI_VERSION"
DEFAULT = "0.8.0"
CURRENT_VERSION = "0.45.0"  # what the "current" profile reports as comfyui_version (issue 21: v0.45, Nov 2026)
MAX_UPLOAD_SIZE = 100 * 1024 * 1024


@dataclass(frozen=True)
class Profile:
    name: str  # the switch's value: "0.3.64", "0.8.0" or "current"
    comfyui_version: str  # /system_stats system.comfyui_version
    required_frontend_version: str
    required_templates_version: str
    installed_templates_version: str | None
    system_os: str  # /system_stats system.os
    jobs_api: bool  # GET /api/jobs, GET /api/jobs/{id}
    jobs_cancel: bool  # the "cancelled" status, POST /api/jobs/{id}/cancel and /api/jobs/cancel
    strict_prompt_ids: bool  # canonical lowercase UUIDs only; a taken id answers 409
    queue_create_time: bool  # extra_data.create_time and the sensitive-data split of queue entries
    missing_node_type: bool  # an unknown class is "missing_node_type" (else "invalid_prompt")
    extra_system_keys: bool  # comfy_package_versions, deploy_environment in /system_stats
    server_features: dict = field(default_factory=dict)  # GET /features and the feature_flags answer

    @property
    def job_statuses(self) -> list:
        base = ["pending", "in_progress", "completed", "failed"]
        return base + ["cancelled"] if self.jobs_cancel else base


PROFILES = {
    "0.3.64": Profile(
        name="0.3.64",
        comfyui_version="0.3.64",
        required_frontend_version="1.27.10",
        required_templates_version="0.1.94",
        installed_templates_version="0.1.94",
        system_os=os.name,
        jobs_api=False,
        jobs_cancel=False,
        strict_prompt_ids=False,
        queue_create_time=False,
        missing_node_type=False,
        extra_system_keys=False,
        server_features={"supports_preview_metadata": True, "max_upload_size": MAX_UPLOAD_SIZE},
    ),
    "0.8.0": Profile(
        name="0.8.0",
        comfyui_version="0.8.0",
        required_frontend_version="1.35.9",
        required_templates_version="0.7.67",
        installed_templates_version=None,
        system_os=sys.platform,
        jobs_api=True,
        jobs_cancel=False,
        strict_prompt_ids=False,
        queue_create_time=True,
        missing_node_type=False,
        extra_system_keys=False,
        server_features={
            "supports_preview_metadata": True,
            "max_upload_size": MAX_UPLOAD_SIZE,
            "extension": {"manager": {"supports_v4": True}},
        },
    ),
    "current": Profile(
        name="current",
        comfyui_version=CURRENT_VERSION,
        required_frontend_version="1.35.9",  # not modelled past 0.8.0: the tests serve whatever frontend is installed
        required_templates_version="0.7.67",
        installed_templates_version=None,
        system_os=sys.platform,
        jobs_api=True,
        jobs_cancel=True,
        strict_prompt_ids=True,
        queue_create_time=True,
        missing_node_type=True,
        extra_system_keys=True,
        server_features={
            "supports_preview_metadata": True,
            "supports_model_type_tags": True,
            "max_upload_size": MAX_UPLOAD_SIZE,
            "extension": {"manager": {"supports_v4": True}},
            "node_replacements": True,
            "assets": False,
        },
    ),
}
NAMES = tuple(PROFILES)


def get(name: str | None = None) -> Profile:
    """The profile called `name` (None: $STANDIN_COMFYUI_VERSION, else 0.8.0). ValueError names the choices."""
    if name is None:
        name = os.environ.get(ENV) or DEFAULT
    if isinstance(name, Profile):
        return name
    key = str(name).strip().lower().lstrip("v")
    if key not in PROFILES:
        raise ValueError("unknown ComfyUI version %r for the stand-in (choose one of: %s)" % (name, ", ".join(NAMES)))
    return PROFILES[key]
