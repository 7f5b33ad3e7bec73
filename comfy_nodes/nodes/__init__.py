"""ComfyMQ's ComfyUI nodes (V1 node API), merged into NODE_CLASS_MAPPINGS / NODE_DISPLAY_NAME_MAPPINGS.

  save_image_atomic.py   ComfyMQSaveImageAtomic  "Save Image (atomic, ComfyMQ)"
  job_info.py            ComfyMQJobInfo          "Job Info (ComfyMQ)"
  load_job_artifact.py   ComfyMQLoadJobArtifact  "Load Job Artifact (ComfyMQ)"
  images.py              IMAGE / MASK conversions shared by them

Importing this package never raises: the node modules import only the standard library at import time (numpy,
Pillow, torch and the native core are loaded when a node runs), and a module that fails anyway is logged and
left out, so the other nodes still register.
"""

from __future__ import annotations

import importlib
import logging

_log = logging.getLogger("comfymq")

NODE_MODULES = ("save_image_atomic", "job_info", "load_job_artifact")

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

for _name in NODE_MODULES:
    try:
        _module = importlib.import_module(f".{_name}", __name__)
        NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
        NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
    except Exception as _e:  # noqa: BLE001 - one broken node must not break ComfyUI's start-up
        _log.warning("ComfyMQ node module %s failed to load: %s", _name, _e)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
