"""The stand-in's test nodes for a real ComfyUI: a custom node pack the e2e suite links into each real ComfyUI's
custom_nodes (under a temporary --base-directory), so the same graphs run on the stand-in and on ComfyUI.

    SlowNode  an output node that sleeps `seconds` (interruptible every 20 ms), passes `images` through and shows
              {"text": ["slept <seconds>"]}; vary `tag` to defeat ComfyUI's cache
    FailNode  an output node that raises RuntimeError(message)

Same names, inputs and outputs as tests/standin/nodes.py. Imported only by a real ComfyUI (it needs its modules).
"""

import time

import comfy.model_management


class SlowNode:
    CATEGORY = "probe"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_NODE = True
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"seconds": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 86400.0, "step": 0.01})},
            "optional": {"images": ("IMAGE",), "tag": ("STRING", {"default": ""})},
        }

    def run(self, seconds, images=None, tag=""):
        end = time.monotonic() + float(seconds)
        while True:
            comfy.model_management.throw_exception_if_processing_interrupted()
            left = end - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, 0.02))
        return {"ui": {"text": ["slept %s" % seconds]}, "result": (images,)}


class FailNode:
    CATEGORY = "probe"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_NODE = True
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"message": ("STRING", {"default": "FailNode failed"})},
            "optional": {"images": ("IMAGE",), "tag": ("STRING", {"default": ""})},
        }

    def run(self, message, images=None, tag=""):
        raise RuntimeError(message)


NODE_CLASS_MAPPINGS = {"SlowNode": SlowNode, "FailNode": FailNode}
NODE_DISPLAY_NAME_MAPPINGS = {"SlowNode": "Slow Node (test)", "FailNode": "Fail Node (test)"}
