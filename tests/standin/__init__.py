"""A stand-in ComfyUI server for tests, faithful to recorded ComfyUI v0.8.0 behaviour, and able to imitate v0.3.64
and the current ComfyUI (`comfyui_version=` / `--comfyui-version`, versions.py).

The contract it follows is the set of recordings of the real server (see tests/python/test_standin_contract.py).
`server.make_app(output_dir, ...)` builds the aiohttp application; `python -m tests.standin --port P ...` runs it.
real_comfyui_pack/ is the stand-in's test nodes (SlowNode, FailNode) as a custom node pack for a real ComfyUI.
"""
