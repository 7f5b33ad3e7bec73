"""Image conversions shared by ComfyMQ's nodes, in ComfyUI's conventions.

IMAGE is a float batch [B, H, W, C] in 0..1 (C = 3, sometimes 1 or 4); MASK is a float batch [B, H, W].
In ComfyUI both are torch tensors; these helpers also take and give numpy arrays, so the nodes work (and are
tested) where torch is not installed.

numpy, Pillow and torch are imported on first use, never at import time: a missing library fails the node
that needs it, with a message saying what to install, and never the import of the node pack.
"""

from __future__ import annotations

import io
import json
from typing import Any, Mapping

PNG_COMPRESS_LEVEL = 4  # what ComfyUI's SaveImage uses: a fair trade of size against time
EMPTY_MASK_SIZE = 64  # LoadImage's mask when the image has no alpha: zeros of 64 x 64


def require_numpy():
    try:
        import numpy
    except ImportError as e:
        raise RuntimeError(f"ComfyMQ's image nodes need numpy (pip install numpy): {e}") from None
    return numpy


def require_pil():
    """Returns (Image, ImageOps, ImageSequence, PngInfo) from Pillow."""
    try:
        from PIL import Image, ImageOps, ImageSequence
        from PIL.PngImagePlugin import PngInfo
    except ImportError as e:
        raise RuntimeError(f"ComfyMQ's image nodes need Pillow (pip install pillow): {e}") from None
    return Image, ImageOps, ImageSequence, PngInfo


_torch: Any = None
_torch_checked = False


def optional_torch():
    """torch when it is importable (always inside ComfyUI), else None."""
    global _torch, _torch_checked
    if not _torch_checked:
        try:
            import torch

            _torch = torch
        except ImportError:
            _torch = None
        _torch_checked = True
    return _torch


def to_numpy(value):
    """A torch tensor (any device or float type) or an array-like, as a float32 numpy array."""
    np = require_numpy()
    if hasattr(value, "detach"):
        value = value.detach()
    if hasattr(value, "cpu") and hasattr(value, "numpy"):  # torch: bfloat16 has no numpy type, so widen first
        if hasattr(value, "float"):
            value = value.float()
        value = value.cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def image_batch_to_uint8(images) -> list:
    """IMAGE [B,H,W,C] (or one [H,W,C]) in 0..1 -> B arrays of uint8, [H,W] for C=1 else [H,W,C] (C 3 or 4).

    Values are clipped to 0..1 and rounded to the nearest of 256 levels (NaN counts as 0).
    """
    np = require_numpy()
    batch = to_numpy(images)
    if batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[-1] not in (1, 3, 4) or 0 in batch.shape[1:3]:
        raise ValueError(f"expected an IMAGE batch shaped [B, H, W, C] with C 1, 3 or 4, got {tuple(batch.shape)}")
    batch = np.nan_to_num(batch, nan=0.0, posinf=1.0, neginf=0.0)
    out = np.rint(np.clip(batch, 0.0, 1.0) * 255.0).astype(np.uint8)
    return [frame[..., 0] if frame.shape[-1] == 1 else frame for frame in out]


def encode_png(pixels, text: Mapping[str, str] | None = None, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """uint8 pixels ([H,W], [H,W,3] or [H,W,4]) -> PNG bytes with `text` as tEXt/iTXt chunks."""
    Image, _, _, PngInfo = require_pil()
    img = Image.fromarray(pixels)
    info = None
    if text:
        info = PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info, compress_level=compress_level)
    return buf.getvalue()


def png_text_chunks(prompt: Any, extra_pnginfo: Any) -> dict[str, str]:
    """The text chunks SaveImage writes: "prompt" and one per extra_pnginfo key, each as JSON."""
    text: dict[str, str] = {}
    if prompt is not None:
        text["prompt"] = json.dumps(prompt, default=str)
    if isinstance(extra_pnginfo, Mapping):
        for key, value in extra_pnginfo.items():
            text[str(key)] = json.dumps(value, default=str)
    return text


def decode_image_file(path: str):
    """Reads an image like ComfyUI's LoadImage does; returns numpy (image [N,H,W,3], mask [N,h,w]).

    Every frame of the size of the first becomes one batch entry (EXIF orientation applied). MASK is
    1 - alpha for frames with alpha (or a transparent palette colour), else zeros of 64 x 64.
    """
    np = require_numpy()
    Image, ImageOps, ImageSequence, _ = require_pil()
    images, masks = [], []
    size = None
    with Image.open(path) as img:
        for frame in ImageSequence.Iterator(img):
            frame = ImageOps.exif_transpose(frame)
            if frame.mode == "I":  # 16-bit grey: scale to 8-bit levels as LoadImage does
                frame = frame.point(lambda v: v * (1 / 255))
            rgb = frame.convert("RGB")
            if size is None:
                size = rgb.size
            if rgb.size != size:
                continue
            images.append(np.asarray(rgb, dtype=np.float32) / 255.0)
            if "A" in frame.getbands():
                alpha = np.asarray(frame.getchannel("A"), dtype=np.float32) / 255.0
                masks.append(1.0 - alpha)
            elif frame.mode == "P" and "transparency" in frame.info:
                alpha = np.asarray(frame.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
                masks.append(1.0 - alpha)
            else:
                masks.append(np.zeros((EMPTY_MASK_SIZE, EMPTY_MASK_SIZE), dtype=np.float32))
    if not images:
        raise ValueError(f"{path} holds no image frames")
    if len({m.shape for m in masks}) > 1:  # frames with and without alpha: no common mask shape
        h, w = images[0].shape[:2]
        masks = [m if m.shape == (h, w) else np.zeros((h, w), dtype=np.float32) for m in masks]
    return np.stack(images), np.stack(masks)


def as_node_value(array):
    """A numpy array as ComfyUI expects it: a torch tensor when torch is importable, else the array itself."""
    torch = optional_torch()
    if torch is None:
        return array
    return torch.from_numpy(array)
