"""ComfyMQ's Python side: thin wiring between ComfyUI (or a standalone host) and the native core.

Package map:
  _native            the compiled core (built from native/bindings/; its Python face in _native.pyi)
  native.py          loads _native on first use, or explains how to build it (NativeUnavailable)
  config.py          the configuration: COMFYMQ_* variables over comfymq.toml over defaults (docs/configuration.md)
  service.py         QueueService: the host's store, artifact writer and broker, called off the event loop
  plugin.py          inside ComfyUI: reads the config, starts the role's parts, registers routes and events
  events.py          broker events -> ComfyUI websocket events (comfymq.*), rate-limited
  api/               the HTTP API: routes, the checks before every handler, limits, JSON errors, count/sweep
                     expansion (its own docstring maps its modules; docs/http-api.md)
  inputs/            input files that travel with jobs: the host's store of them by SHA-256, references to them
                     in prompts, ComfyUI's own file names copied in at enqueue, their retention sweep
  host/              the standalone host: standalone.py (app + runner), http_server.py (connection timeouts,
                     JSON errors of the HTTP layer)
  worker/            the worker bridge: bridge.py (runs broker jobs on a ComfyUI), comfy_client.py (ComfyUI's
                     public HTTP/websocket API), capabilities.py (what that ComfyUI can run, from /object_info)
  nodes/             the ComfyUI nodes: Save Image (atomic), Job Info, Load Job Artifact
  cli.py             `python -m comfy_nodes host | worker | enqueue | status | keys`
  __main__.py        runs cli.main
  remote.py          the CLI's client side: enqueue and status over a host's HTTP API

Importing this package never raises: the native module is loaded on first use.
"""

__version__ = "0.1.0"
