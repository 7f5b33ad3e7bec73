"""Input files that travel with jobs: the host keeps them by content, graphs refer to them by SHA-256.

  store.py        InputStore: <data_dir>/inputs/<sha256[0:2]>/<sha256>, written through tmp/ (synced, linked
                  into place, one copy per content), marked used, swept when no kept job names them
  graph.py        references in an API-format prompt ({"comfymq_input": sha256, ...}): checked, rewritten to the
                  stored form at enqueue, listed for job views
  names.py        the file name an input travels with: one safe path component
  local_files.py  inside ComfyUI: upload inputs (LoadImage's "image", ...) naming a file in ComfyUI's folders,
                  copied into the store at enqueue
  retention.py    the sweep of inputs no kept job names, after a grace period
  forward_uploads.py  a worker-role ComfyUI forwarding a job to its host: the files it names go to the host first

The HTTP side (POST /comfymq/inputs, GET /comfymq/inputs/{sha256}) is api/input_routes.py; the broker streams
stored inputs to workers (native), and the worker puts them into its ComfyUI (worker/).
"""
