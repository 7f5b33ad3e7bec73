"""HTTP routes. Each module adds its routes to a route table given a QueueService, so tests can mount them
on a fresh aiohttp app and ComfyUI can mount them on PromptServer.instance.routes.

  routes.py       the /comfymq API: add_routes(routes, service, prefix="/comfymq", token=None, site=..., limits=...)
  input_routes.py the upload of input files (POST /comfymq/inputs) and their lookup, streamed to the input store
  compat_routes.py  seed 000's contract (POST /tasks, GET /tasks/{id}, GET /health), unchanged
  expand.py       count / sweep expansion of one prompt into many jobs (pure functions)
  views.py        a job as the API shows it (summary and full views)
  guards.py       the checks before every handler, in one order: site rules, token, JSON errors (middlewares
                  for the standalone host, a per-handler wrapper inside ComfyUI)
  site_policy.py  the site rules: Host (DNS rebinding), Origin / Sec-Fetch-Site, Content-Type (pure logic)
  auth.py         bearer-token middleware / handler guard, status probes, and the warning for an open bind
  limits.py       what one request may ask: body size, jobs and stored bytes, body read timeouts (pure data)
  errors.py       JSON errors, body reading within the limits, JSON body parsing
"""
