"""A stand-in ComfyUI server for tests, faithful to recorded ComfyUI v0.8.0 behaviour.

The contract it follows is the set of recordings of the real server (see tests/python/test_standin_contract.py).
`server.make_app(output_dir, ...)` builds the aiohttp application; `python -m tests.standin --port P ...` runs it.
"""
