"""The worker side of the input files that travel with jobs (images, masks, video, audio).

The host stores a job's inputs by content and names each in the prompt in a stored form (references.py). Before
the bridge posts such a prompt to its ComfyUI, resolver.InputResolver.prepare() fetches each input from the host
into the worker's cache (cache.py: by sha256, bounded in bytes, least recently used first out), uploads it into
ComfyUI's input folder (comfy_uploads.py: one folder per content, through POST /upload/image) and rewrites the
prompt to name the uploaded files.
"""

from .cache import InputCache
from .comfy_uploads import ComfyUploads
from .references import InputRef, InputRefError, find_input_refs, rewrite_prompt, subfolder_for
from .resolver import InputFailure, InputResolver, PreparedInputs

__all__ = [
    "ComfyUploads",
    "InputCache",
    "InputFailure",
    "InputRef",
    "InputRefError",
    "InputResolver",
    "PreparedInputs",
    "find_input_refs",
    "rewrite_prompt",
    "subfolder_for",
]
