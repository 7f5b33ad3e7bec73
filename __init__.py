"""ComfyMQ as a ComfyUI custom node pack (ComfyUI imports this folder).

Contract with ComfyUI: importing this file never raises. If the native core is not built (or was built for
another Python), ComfyUI still starts and the log says exactly how to build it.
"""

import logging

_log = logging.getLogger("comfymq")

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
WEB_DIRECTORY = "./js"

try:
    from .comfy_nodes.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: F811
except Exception as _e:  # noqa: BLE001 - never break ComfyUI's start-up
    _log.warning("ComfyMQ nodes failed to load: %s", _e)

try:
    from .comfy_nodes import native as _native_loader

    _problem = _native_loader.error()
    if _problem:
        _log.warning("%s", _problem)
except Exception as _e:  # noqa: BLE001 - never break ComfyUI's start-up
    _log.warning("ComfyMQ failed to load: %s", _e)

try:
    from .comfy_nodes.plugin import setup_in_comfyui as _setup

    _setup()  # inside ComfyUI: config, store, broker, worker, routes; outside: nothing. Never raises.
except Exception as _e:  # noqa: BLE001 - never break ComfyUI's start-up
    _log.warning("ComfyMQ failed to load: %s", _e)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
