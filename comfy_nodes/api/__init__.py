"""HTTP routes. Each module adds its routes to a route table given a QueueService, so tests can mount them
on a fresh aiohttp app and ComfyUI can mount them on PromptServer.instance.routes.

  routes.py       the /comfymq API: add_routes(routes, service, prefix="/comfymq", token=None)
  seed_routes.py  seed 000's contract (POST /tasks, GET /tasks/{id}, GET /health), unchanged
  expand.py       count / sweep expansion of one prompt into many jobs (pure functions)
  views.py        a job as the API shows it (summary and full views)
  auth.py         bearer-token middleware / handler guard, and the warning for an open bind
  errors.py       JSON errors, body size limits, JSON body parsing
"""
