"""HTTP routes. Each module adds its routes to a route table given a QueueService, so tests can mount them
on a fresh aiohttp app and ComfyUI can mount them on PromptServer.instance.routes."""
