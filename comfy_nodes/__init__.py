"""ComfyMQ's Python side: thin wiring between ComfyUI (or a standalone host) and the native core.

Layout:
  native.py          loads the compiled core (_native), or explains how to build it
  service.py         QueueService: the store and artifact writer, called off the event loop
  api/               HTTP routes (seed contract now; the /comfymq API in the plugin issue)
  host/              the standalone host (aiohttp app + runner)
  cli.py             `python -m comfy_nodes ...`

Importing this package never raises: the native module is loaded on first use.
"""

__version__ = "0.1.0"
