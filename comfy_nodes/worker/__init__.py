"""The worker side: a bridge that runs broker jobs on a ComfyUI through its public API."""
