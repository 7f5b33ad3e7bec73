"""The standalone host: store + HTTP API without ComfyUI (for a headless box such as a NAS)."""
