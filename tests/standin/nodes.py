"""Node types of the stand-in ComfyUI: weight-free, fast, standard library only.

Nodes follow ComfyUI's V1 node interface (INPUT_TYPES, RETURN_TYPES, FUNCTION, OUTPUT_NODE, CATEGORY, ...), with
two differences that let several stand-ins live in one process:

* `INPUT_TYPES(cls, env=None)` receives the server's environment (`env.models`, `env.input_dir`, ...), so a
  checkpoint loader's choices are the models that stand-in was started with.
* Before the node function runs, the executor sets `self.ctx` (an execution context, see server.ExecContext):
  `ctx.progress(value, total, preview=None)`, `ctx.check_interrupt()`, `ctx.sleep(s)`, `ctx.wait_step()`,
  `ctx.send(event, data, sid=None)`, `ctx.record_file(...)`, `ctx.env`, `ctx.prompt_id`, `ctx.node_id`.

Nodes: EmptyImage, SaveImage, PreviewImage, LoadImage, ImageInvert, ImageScale (recorded object_info shapes; ImageScale
scales by nearest neighbour whatever the method), LoadImageMask
and MaskToImage (shapes from ComfyUI v0.8.0's nodes.py and comfy_extras/nodes_mask.py), LoadVideo and LoadAudio
(v0.8.0's comfy_extras/nodes_video.py and nodes_audio.py shapes; their outputs are the file, not decoded),
CheckpointLoaderSimple (ckpt_name choices = the server's models), CLIPTextEncode, EmptyLatentImage, KSampler,
VAEDecode (a weight-free default txt2img graph), and the probes: ProbeProgress (progress steps, optional JPEG
previews), ProbeEcho (output node, ui text, custom "probe.node_ran" event), ProbeFail (raises, as recorded),
FailNode (an output node that raises), SlowNode (an output node that sleeps interruptibly), ProbeFileDigest (an
output node showing the sha256 and size of the file a VIDEO or AUDIO came from).

Images are `ImageBatch` objects (a list of `Image` frames: width, height and either one RGB colour or raw RGB
bytes), written to disk as real PNG files (zlib + struct) with ComfyUI's tEXt metadata.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import random
import struct
import zlib

__all__ = [
    "InterruptProcessingException",
    "Image",
    "ImageBatch",
    "Mask",
    "Placeholder",
    "Latent",
    "png_bytes",
    "read_png",
    "read_png_rgba",
    "png_text_chunks",
    "tiny_jpeg",
    "get_save_image_path",
    "NODE_CLASSES",
    "NODE_DISPLAY_NAMES",
]


class InterruptProcessingException(Exception):
    """Raised inside a node when the running prompt is interrupted (comfy.model_management's exception)."""


# ---- images --------------------------------------------------------------------------------------------


class Image:
    """One RGB frame: either a uniform colour (`rgb`) or raw row-major RGB bytes (`pixels`)."""

    __slots__ = ("width", "height", "rgb", "pixels")

    def __init__(self, width: int, height: int, rgb=(0, 0, 0), pixels: bytes | None = None):
        self.width = int(width)
        self.height = int(height)
        self.rgb = tuple(int(c) & 0xFF for c in rgb)
        self.pixels = pixels
        if pixels is not None and len(pixels) != self.width * self.height * 3:
            raise ValueError("pixel data does not match the image size")

    @classmethod
    def from_int_color(cls, width: int, height: int, color: int) -> "Image":
        return cls(width, height, ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF))

    def row(self, y: int) -> bytes:
        if self.pixels is None:
            return bytes(self.rgb) * self.width
        stride = self.width * 3
        return self.pixels[y * stride : (y + 1) * stride]

    def inverted(self) -> "Image":
        if self.pixels is None:
            return Image(self.width, self.height, tuple(255 - c for c in self.rgb))
        return Image(self.width, self.height, pixels=bytes(255 - b for b in self.pixels))

    def __repr__(self) -> str:
        if self.pixels is None:
            return "Image(%dx%d, rgb=#%02x%02x%02x)" % (self.width, self.height, *self.rgb)
        return "Image(%dx%d, pixels)" % (self.width, self.height)


class ImageBatch(list):
    """ComfyUI's IMAGE: a batch of frames."""

    def __repr__(self) -> str:
        return "ImageBatch([%s])" % ", ".join(repr(f) for f in self)


class Mask:
    """ComfyUI's MASK: its size and, when known, one byte per pixel (0..255 for 0.0..1.0, row-major); None is all
    zero."""

    def __init__(self, width: int, height: int, values: bytes | None = None):
        self.width, self.height = width, height
        if values is not None and len(values) != width * height:
            raise ValueError("mask data does not match the mask size")
        self.values = values

    def __repr__(self) -> str:
        return "Mask(%dx%d)" % (self.width, self.height)


class Placeholder:
    """MODEL / CLIP / VAE stand-ins: they only carry the checkpoint name."""

    def __init__(self, kind: str, name: str):
        self.kind, self.name = kind, name

    def __repr__(self) -> str:
        return "%s(%r)" % (self.kind, self.name)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(image: Image, text: dict | None = None, compress_level: int = 4) -> bytes:
    """An 8-bit RGB PNG of `image`, with `text` as tEXt chunks (key -> str), like PIL's PngInfo.add_text."""
    raw = b"".join(b"\x00" + image.row(y) for y in range(image.height))
    out = [b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", struct.pack(">IIBBBBB", image.width, image.height, 8, 2, 0, 0, 0))]
    for key, value in (text or {}).items():
        out.append(_png_chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("latin-1", "replace")))
    out.append(_png_chunk(b"IDAT", zlib.compress(raw, compress_level)))
    out.append(_png_chunk(b"IEND", b""))
    return b"".join(out)


def _png_chunks(data: bytes):
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        yield kind, data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IEND":
            break


def png_text_chunks(data: bytes) -> dict:
    """The tEXt chunks of a PNG file as {key: text}."""
    out = {}
    for kind, body in _png_chunks(data):
        if kind == b"tEXt":
            key, _, value = body.partition(b"\x00")
            out[key.decode("latin-1")] = value.decode("latin-1")
    return out


def read_png(data: bytes) -> tuple[Image, bool]:
    """Decodes a non-interlaced 8-bit PNG (grey, RGB, palette, grey+alpha, RGBA) to (Image, has_alpha)."""
    width, height, rgba, has_alpha = read_png_rgba(data)
    rgb = bytearray(width * height * 3)
    rgb[0::3], rgb[1::3], rgb[2::3] = rgba[0::4], rgba[1::4], rgba[2::4]
    return Image(width, height, pixels=bytes(rgb)), has_alpha


def read_png_rgba(data: bytes) -> tuple[int, int, bytes, bool]:
    """Decodes a non-interlaced 8-bit PNG (grey, RGB, palette, grey+alpha, RGBA) to (width, height, RGBA bytes,
    has_alpha); a PNG without alpha reads as opaque (255), like PIL's convert("RGBA")."""
    ihdr, idat, palette, trns = None, [], None, None
    for kind, body in _png_chunks(data):
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"PLTE":
            palette = body
        elif kind == b"tRNS":
            trns = body
    if ihdr is None:
        raise ValueError("PNG without IHDR")
    width, height, depth, ctype, _, _, interlace = ihdr
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(ctype)
    if depth != 8 or channels is None or interlace != 0:
        raise ValueError("unsupported PNG (the stand-in reads 8-bit non-interlaced PNG only)")
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    prev = bytearray(stride)
    rgba = bytearray()
    pos = 0
    for _ in range(height):
        ftype = raw[pos]
        line = bytearray(raw[pos + 1 : pos + 1 + stride])
        pos += 1 + stride
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + ((a + b) >> 1)) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        prev = line
        for x in range(width):
            px = line[x * channels : (x + 1) * channels]
            if ctype in (0, 4):
                rgba += bytes((px[0], px[0], px[0], px[1] if ctype == 4 else 255))
            elif ctype == 3:
                idx = px[0] * 3
                rgba += palette[idx : idx + 3] if palette else b"\x00\x00\x00"
                rgba.append(trns[px[0]] if trns is not None and px[0] < len(trns) else 255)
            else:
                rgba += px[:3] + bytes((px[3] if ctype == 6 else 255,))
    return width, height, bytes(rgba), ctype in (4, 6)


def tiny_jpeg(level: int) -> bytes:
    """A valid 8x8 grey baseline JPEG of one grey level (only a DC coefficient), for preview frames."""
    diff = (max(0, min(255, int(level))) - 128) * 8  # DC of a flat block with a quantiser of 1
    cat = abs(diff).bit_length()
    bits = "0"  # the DC table's only code, for symbol `cat`
    if cat:
        bits += format(diff if diff > 0 else diff + (1 << cat) - 1, "0%db" % cat)
    bits += "0"  # the AC table's only code: end of block
    bits += "1" * (-len(bits) % 8)
    scan = bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)).replace(b"\xff", b"\xff\x00")

    def seg(marker: int, payload: bytes) -> bytes:
        return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload

    return b"".join(
        [
            b"\xff\xd8",
            seg(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"),
            seg(0xDB, b"\x00" + b"\x01" * 64),
            seg(0xC0, b"\x08" + struct.pack(">HH", 8, 8) + b"\x01\x01\x11\x00"),
            seg(0xC4, b"\x00" + bytes([1] + [0] * 15) + bytes([cat])),
            seg(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\x00"),
            seg(0xDA, b"\x01\x01\x00\x00\x3f\x00"),
            scan,
            b"\xff\xd9",
        ]
    )


def get_save_image_path(filename_prefix: str, output_dir: str):
    """folder_paths.get_save_image_path: (full_output_folder, filename, counter, subfolder, filename_prefix)."""
    output_dir = os.path.abspath(output_dir)

    def map_filename(filename):
        prefix_len = len(os.path.basename(filename_prefix))
        prefix = filename[: prefix_len + 1]
        try:
            digits = int(filename[prefix_len + 1 :].split("_")[0])
        except ValueError:
            digits = 0
        return digits, prefix

    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    full_output_folder = os.path.join(output_dir, subfolder)
    if os.path.commonpath((output_dir, os.path.abspath(full_output_folder))) != output_dir:
        raise Exception(
            "**** ERROR: Saving image outside the output folder is not allowed."
            "\n full_output_folder: %s\n         output_dir: %s" % (os.path.abspath(full_output_folder), output_dir)
        )
    try:
        counter = (
            max(
                (
                    m
                    for m in map(map_filename, os.listdir(full_output_folder))
                    if os.path.normcase(m[1][:-1]) == os.path.normcase(filename) and m[1][-1:] == "_"
                ),
            )[0]
            + 1
        )
    except ValueError:
        counter = 1
    except FileNotFoundError:
        os.makedirs(full_output_folder, exist_ok=True)
        counter = 1
    return full_output_folder, filename, counter, subfolder, filename_prefix


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")


def list_input_images(input_dir: str | None) -> list:
    if not input_dir or not os.path.isdir(input_dir):
        return []
    return sorted(
        f
        for f in os.listdir(input_dir)
        if os.path.isfile(os.path.join(input_dir, f)) and f.lower().endswith(IMAGE_EXTENSIONS)
    )


# ---- node classes ----------------------------------------------------------------------------------------


class Node:
    """Defaults shared by the stand-in's nodes (ComfyUI reads these attributes with getattr/hasattr)."""

    CATEGORY = "standin"
    DESCRIPTION = ""
    FUNCTION = "run"
    OUTPUT_NODE = False
    RETURN_TYPES: tuple = ()
    RELATIVE_PYTHON_MODULE = "custom_nodes.standin"
    ctx = None  # set by the executor before the function runs


class EmptyImage(Node):
    RELATIVE_PYTHON_MODULE = "nodes"
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls, env=None):
        return {
            "required": {
                "width": ("INT", {"default": 512, "min": 1, "max": 16384, "step": 1}),
                "height": ("INT", {"default": 512, "min": 1, "max": 16384, "step": 1}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
                "color": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"}),
            }
        }

    def generate(self, width, height, batch_size=1, color=0):
        frame = Image.from_int_color(width, height, color)
        return (ImageBatch([frame] * batch_size),)


class SaveImage(Node):
    RELATIVE_PYTHON_MODULE = "nodes"
    CATEGORY = "image"
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."
    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    TYPE = "output"
    PREFIX_APPEND = ""
    COMPRESS_LEVEL = 4

    @classmethod
    def INPUT_TYPES(cls, env=None):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": (
                    "STRING",
                    {
                        "default": "ComfyUI",
                        "tooltip": "The prefix for the file to save. This may include formatting information such as "
                        "%date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes.",
                    },
                ),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def _dir(self):
        return self.ctx.env.output_dir

    def save_images(self, images, filename_prefix="ComfyUI", prompt=None, extra_pnginfo=None):
        filename_prefix += self.PREFIX_APPEND
        folder, filename, counter, subfolder, _ = get_save_image_path(filename_prefix, self._dir())
        results = []
        for batch_number, image in enumerate(images):
            text = {}
            if prompt is not None:
                text["prompt"] = json.dumps(prompt)
            if extra_pnginfo is not None:
                for key in extra_pnginfo:
                    text[key] = json.dumps(extra_pnginfo[key])
            file = "%s_%05d_.png" % (filename.replace("%batch_num%", str(batch_number)), counter)
            path = os.path.join(folder, file)
            data = png_bytes(image, text, self.COMPRESS_LEVEL)
            tmp = path + ".part"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
            self.ctx.record_file(path, file, subfolder, self.TYPE)
            results.append({"filename": file, "subfolder": subfolder, "type": self.TYPE})
            counter += 1
        return {"ui": {"images": results}}


class PreviewImage(SaveImage):
    TYPE = "temp"
    COMPRESS_LEVEL = 1

    def __init__(self):
        self.PREFIX_APPEND = "_temp_" + "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))

    @classmethod
    def INPUT_TYPES(cls, env=None):
        return {"required": {"images": ("IMAGE",)}, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def _dir(self):
        return self.ctx.env.temp_dir


class LoadImage(Node):
    RELATIVE_PYTHON_MODULE = "nodes"
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"

    @classmethod
    def INPUT_TYPES(cls, env=None):
        files = list_input_images(getattr(env, "input_dir", None))
        return {"required": {"image": (files, {"image_upload": True})}}

    @classmethod
    def _path(cls, env, image):
        base = os.path.abspath(env.input_dir)
        path = os.path.abspath(os.path.join(base, image))
        if os.path.commonpath((base, path)) != base:
            raise ValueError("Invalid image file: %s" % image)
        return path

    def load_image(self, image):
        with open(self._path(self.ctx.env, image), "rb") as f:
            frame, has_alpha = read_png(f.read())
        return (ImageBatch([frame]), Mask(frame.width, frame.height))

    @classmethod
    def IS_CHANGED(cls, env, image):
        with open(cls._path(env, image), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    @classmethod
    def VALIDATE_INPUTS(cls, env, image):
        try:
            if not os.path.isfile(cls._path(env, image)):
                return "Invalid image file: {}".format(image)
        except ValueError:
            return "Invalid image file: {}".format(image)
        return True


class LoadImageMask(Node):
    """nodes.LoadImageMask: one channel of an image as a MASK (alpha inverted: opaque is 0)."""

    RELATIVE_PYTHON_MODULE = "nodes"
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "load_image"
    CHANNELS = ["alpha", "red", "green", "blue"]

    @classmethod
    def INPUT_TYPES(cls, env=None):
        input_dir = getattr(env, "input_dir", None)
        files = (
            sorted(f for f in os.listdir(input_dir) if os.path.isfile(os.path.join(input_dir, f)))
            if input_dir and os.path.isdir(input_dir)
            else []
        )
        return {"required": {"image": (files, {"image_upload": True}), "channel": (cls.CHANNELS,)}}

    def load_image(self, image, channel):
        with open(LoadImage._path(self.ctx.env, image), "rb") as f:
            width, height, rgba, _ = read_png_rgba(f.read())
        values = rgba["rgba".index(channel[0]) :: 4]  # alpha, red, green, blue: their first letter
        if channel == "alpha":
            values = bytes(255 - v for v in values)
        return (Mask(width, height, bytes(values)),)

    @classmethod
    def IS_CHANGED(cls, env, image, channel):
        return LoadImage.IS_CHANGED(env, image)

    @classmethod
    def VALIDATE_INPUTS(cls, env, image):
        return LoadImage.VALIDATE_INPUTS(env, image)


class MaskToImage(Node):
    """comfy_extras.nodes_mask.MaskToImage: a mask as a grey image."""

    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_mask"
    CATEGORY = "mask"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "mask_to_image"

    @classmethod
    def INPUT_TYPES(cls, env=None):
        return {"required": {"mask": ("MASK",)}}

    def mask_to_image(self, mask):
        values = mask.values if mask.values is not None else bytes(mask.width * mask.height)
        rgb = bytearray(len(values) * 3)
        rgb[0::3] = rgb[1::3] = rgb[2::3] = values
        return (ImageBatch([Image(mask.width, mask.height, pixels=bytes(rgb))]),)


class MediaFile:
    """A VIDEO (comfy_api's VideoFromFile) or AUDIO, reduced to the file it comes from: nothing is decoded."""

    def __init__(self, path: str):
        self.path = path

    def __repr__(self) -> str:
        return "MediaFile(%r)" % self.path


def list_input_files(input_dir: str | None, content_types) -> list:
    """folder_paths.filter_files_content_types(os.listdir(input dir), content_types): files whose MIME type (by
    extension) is one of them, sorted."""
    if not input_dir or not os.path.isdir(input_dir):
        return []
    out = []
    for f in os.listdir(input_dir):
        mime = mimetypes.guess_type(f, strict=False)[0]
        if mime and mime.split("/")[0] in content_types and os.path.isfile(os.path.join(input_dir, f)):
            out.append(f)
    return sorted(out)


class LoadVideo(Node):
    """comfy_extras.nodes_video.LoadVideo (a V3 node: its input is ("COMBO", {options, video_upload})). Like
    ComfyUI it fingerprints the file by its mtime (no hashing of a large file) and reads it only when used."""

    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_video"
    CATEGORY = "image/video"
    RETURN_TYPES = ("VIDEO",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls, env=None):
        files = list_input_files(getattr(env, "input_dir", None), ("video",))
        return {"required": {"file": ("COMBO", {"multiselect": False, "options": files, "video_upload": True})}}

    def execute(self, file):
        return (MediaFile(LoadImage._path(self.ctx.env, file)),)

    @classmethod
    def IS_CHANGED(cls, env, file):
        return os.path.getmtime(LoadImage._path(env, file))

    @classmethod
    def VALIDATE_INPUTS(cls, env, file):
        try:
            if os.path.isfile(LoadImage._path(env, file)):
                return True
        except ValueError:
            pass
        return "Invalid video file: {}".format(file)


class LoadAudio(Node):
    """comfy_extras.nodes_audio.LoadAudio (a V3 node: ("COMBO", {options, audio_upload}), audio and video files
    listed); fingerprinted by the file's sha256, as ComfyUI does."""

    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_audio"
    CATEGORY = "audio"
    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls, env=None):
        files = list_input_files(getattr(env, "input_dir", None), ("audio", "video"))
        return {"required": {"audio": ("COMBO", {"multiselect": False, "options": files, "audio_upload": True})}}

    def execute(self, audio):
        return (MediaFile(LoadImage._path(self.ctx.env, audio)),)

    @classmethod
    def IS_CHANGED(cls, env, audio):
        return _file_sha256(LoadImage._path(env, audio))

    @classmethod
    def VALIDATE_INPUTS(cls, env, audio):
        try:
            if os.path.isfile(LoadImage._path(env, audio)):
                return True
        except ValueError:
            pass
        return "Invalid audio file: {}".format(audio)


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ImageInvert(Node):
    RELATIVE_PYTHON_MODULE = "nodes"
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "invert"

    @classmethod
    def INPUT_TYPES(cls, env=None):
        return {"required": {"image": ("IMAGE",)}}

    def invert(self, image):
        return (ImageBatch(f.inverted() for f in image),)


class ImageScale(Node):
    """ComfyUI's "Upscale Image" (the recorded shape). Every method scales by nearest neighbour here (pixel (x, y)
    of the result is pixel (x * w // width, y * h // height) of the source), so its output equals real ComfyUI's for
    nearest-exact only; a width or height of 0 keeps the aspect ratio, as ComfyUI does; crop is not applied."""

    RELATIVE_PYTHON_MODULE = "nodes"
    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"
    METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]

    @classmethod
    def INPUT_TYPES(cls, env=None):
        size = {"default": 512, "min": 0, "max": 16384, "step": 1}
        return {
            "required": {
                "image": ("IMAGE",),
                "upscale_method": (cls.METHODS,),
                "width": ("INT", dict(size)),
                "height": ("INT", dict(size)),
                "crop": (["disabled", "center"],),
            }
        }

    def upscale(self, image, upscale_method, width, height, crop):
        return (ImageBatch(_scaled(f, width, height) for f in image),)


def _scaled(f: "Image", width: int, height: int) -> "Image":
    if width == 0 and height == 0:
        return f
    width = width or max(1, round(f.width * height / f.height))
    height = height or max(1, round(f.height * width / f.width))
    if f.pixels is None:
        return Image(width, height, f.rgb)
    out = bytearray()
    for y in range(height):
        row = f.row(y * f.height // height)
        for x in range(width):
            sx = x * f.width // width
            out += row[sx * 3 : sx * 3 + 3]
    return Image(width, height, pixels=bytes(out))


class CheckpointLoaderSimple(Node):
    RELATIVE_PYTHON_MODULE = "nodes"
    CATEGORY = "loaders"
    DESCRIPTION = "Loads a diffusion model checkpoint, diffusion models are used to denoise latents."
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    OUTPUT_TOOLTIPS = (
        "The model used for denoising latents.",
        "The CLIP model used for encoding text prompts.",
        "The VAE model used for encoding and decoding images to and from latent space.",
    )
    FUNCTION = "load_checkpoint"

    @classmethod
    def INPUT_TYPES(cls, env=None):
        models = list(getattr(env, "models", None) or [])
        return {"required": {"ckpt_name": (models, {"tooltip": "The name of the checkpoint (model) to load."})}}

    def load_checkpoint(self, ckpt_name):
        return (Placeholder("MODEL", ckpt_name), Placeholder("CLIP", ckpt_name), Placeholder("VAE", ckpt_name))


class Latent:
    """ComfyUI's LATENT, reduced to the pixel size, batch size and what sampled it."""

    def __init__(self, width: int, height: int, batch_size: int, seed=None, model=None):
        self.width, self.height, self.batch_size, self.seed, self.model = width, height, batch_size, seed, model

    def __repr__(self) -> str:
        return "Latent(%dx%d x%d, seed=%r, model=%r)" % (
            self.width,
            self.height,
            self.batch_size,
            self.seed,
            self.model,
        )


class CLIPTextEncode(Node):
    RELATIVE_PYTHON_MODULE = "nodes"
    CATEGORY = "conditioning"
    DESCRIPTION = (
        "Encodes a text prompt using a CLIP model into an embedding that can be used to guide the "
        "diffusion model towards generating specific images."
    )
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("A conditioning containing the embedded text used to guide the diffusion model.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls, env=None):
        return {
            "required": {
                "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": "The text to be encoded."}),
                "clip": ("CLIP", {"tooltip": "The CLIP model used for encoding the text."}),
            }
        }

    def encode(self, clip, text):
        return (Placeholder("CONDITIONING", text),)


class EmptyLatentImage(Node):
    RELATIVE_PYTHON_MODULE = "nodes"
    CATEGORY = "latent"
    DESCRIPTION = "Create a new batch of empty latent images to be denoised via sampling."
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The empty latent image batch.",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls, env=None):
        return {
            "required": {
                "width": (
                    "INT",
                    {
                        "default": 512,
                        "min": 16,
                        "max": 16384,
                        "step": 8,
                        "tooltip": "The width of the latent images in pixels.",
                    },
                ),
                "height": (
                    "INT",
                    {
                        "default": 512,
                        "min": 16,
                        "max": 16384,
                        "step": 8,
                        "tooltip": "The height of the latent images in pixels.",
                    },
                ),
                "batch_size": (
                    "INT",
                    {"default": 1, "min": 1, "max": 4096, "tooltip": "The number of latent images in the batch."},
                ),
            }
        }

    def generate(self, width, height, batch_size=1):
        return (Latent(width, height, batch_size),)


SAMPLERS = [
    "euler",
    "euler_cfg_pp",
    "euler_ancestral",
    "euler_ancestral_cfg_pp",
    "heun",
    "heunpp2",
    "exp_heun_2_x0",
    "exp_heun_2_x0_sde",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpm_fast",
    "dpm_adaptive",
    "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde",
    "dpmpp_sde_gpu",
    "dpmpp_2m",
    "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun",
    "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu",
    "ddpm",
    "lcm",
    "ipndm",
    "ipndm_v",
    "deis",
    "res_multistep",
    "res_multistep_cfg_pp",
    "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp",
    "gradient_estimation",
    "gradient_estimation_cfg_pp",
    "er_sde",
    "seeds_2",
    "seeds_3",
    "sa_solver",
    "sa_solver_pece",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
]
SCHEDULERS = [
    "simple",
    "sgm_uniform",
    "karras",
    "exponential",
    "ddim_uniform",
    "beta",
    "normal",
    "linear_quadratic",
    "kl_optimal",
]


class KSampler(Node):
    """Weight-free sampler: `steps` progress steps (step gate, env.step_delay each), a latent tagged with the seed."""

    RELATIVE_PYTHON_MODULE = "nodes"
    CATEGORY = "sampling"
    DESCRIPTION = "Uses the provided model, positive and negative conditioning to denoise the latent image."
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The denoised latent.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls, env=None):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The model used for denoising the input latent."}),
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 0xFFFFFFFFFFFFFFFF,
                        "control_after_generate": True,
                        "tooltip": "The random seed used for creating the noise.",
                    },
                ),
                "steps": (
                    "INT",
                    {
                        "default": 20,
                        "min": 1,
                        "max": 10000,
                        "tooltip": "The number of steps used in the denoising process.",
                    },
                ),
                "cfg": (
                    "FLOAT",
                    {
                        "default": 8.0,
                        "min": 0.0,
                        "max": 100.0,
                        "step": 0.1,
                        "round": 0.01,
                        "tooltip": "The Classifier-Free Guidance scale balances creativity and adherence to the "
                        "prompt. Higher values result in images more closely matching the prompt "
                        "however too high values will negatively impact quality.",
                    },
                ),
                "sampler_name": (
                    list(SAMPLERS),
                    {
                        "tooltip": "The algorithm used when sampling, this can affect the "
                        "quality, speed, and style of the generated output."
                    },
                ),
                "scheduler": (
                    list(SCHEDULERS),
                    {"tooltip": "The scheduler controls how noise is gradually removed to form the image."},
                ),
                "positive": (
                    "CONDITIONING",
                    {"tooltip": "The conditioning describing the attributes you want to include in the image."},
                ),
                "negative": (
                    "CONDITIONING",
                    {"tooltip": "The conditioning describing the attributes you want to exclude from the image."},
                ),
                "latent_image": ("LATENT", {"tooltip": "The latent image to denoise."}),
                "denoise": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "The amount of denoising applied, lower values will maintain the "
                        "structure of the initial image allowing for image to image sampling.",
                    },
                ),
            }
        }

    def sample(self, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise=1.0):
        for i in range(1, steps + 1):
            self.ctx.wait_step()
            self.ctx.sleep(self.ctx.env.step_delay)
            self.ctx.progress(i, steps)
        return (
            Latent(
                latent_image.width, latent_image.height, latent_image.batch_size, seed, getattr(model, "name", None)
            ),
        )


class VAEDecode(Node):
    """Decodes a Latent into a flat-colour image batch whose colour depends on the seed and the model."""

    RELATIVE_PYTHON_MODULE = "nodes"
    CATEGORY = "latent"
    DESCRIPTION = "Decodes latent images back into pixel space images."
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The decoded image.",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls, env=None):
        return {
            "required": {
                "samples": ("LATENT", {"tooltip": "The latent to be decoded."}),
                "vae": ("VAE", {"tooltip": "The VAE model used for decoding the latent."}),
            }
        }

    def decode(self, vae, samples):
        digest = hashlib.sha256(repr((samples.seed, samples.model)).encode()).digest()
        frame = Image(samples.width, samples.height, tuple(digest[:3]))
        return (ImageBatch([frame] * samples.batch_size),)


class ProbeProgress(Node):
    """Passes images through, reporting `steps` progress steps (progress / progress_state events).

    Each step waits on the server's step gate (`hold_steps`), sleeps `env.step_delay` seconds (interruptibly)
    and reports progress; with `preview` true every step also sends a binary JPEG preview frame."""

    CATEGORY = "probe"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls, env=None):
        return {
            "required": {"images": ("IMAGE",), "steps": ("INT", {"default": 3, "min": 1, "max": 10000})},
            "optional": {"preview": ("BOOLEAN", {"default": False})},
        }

    def run(self, images, steps, preview=False):
        for i in range(1, steps + 1):
            self.ctx.wait_step()
            self.ctx.sleep(self.ctx.env.step_delay)
            self.ctx.progress(i, steps, tiny_jpeg(255 * i // steps) if preview else None)
        return (images,)


class ProbeEcho(Node):
    """An output node that joins `text` `repeat` times, shows it (ui text) and sends a custom event."""

    CATEGORY = "probe"
    RETURN_TYPES = ("STRING",)
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls, env=None):
        return {
            "required": {
                "text": ("STRING", {"default": "hi"}),
                "repeat": ("INT", {"default": 1, "min": 1, "max": 1000}),
            }
        }

    def run(self, text, repeat):
        out = " ".join([text] * repeat)
        self.ctx.send("probe.node_ran", {"out": out})  # PromptServer.instance.send_sync without sid
        return {"ui": {"text": [out]}, "result": (out,)}


class ProbeFail(Node):
    """Raises RuntimeError(message) at run time (the recorded custom node)."""

    CATEGORY = "probe"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls, env=None):
        return {"required": {"images": ("IMAGE",), "message": ("STRING", {"default": "boom"})}}

    def run(self, images, message):
        raise RuntimeError(message)


class FailNode(Node):
    """An output node that raises RuntimeError(message) at run time; `images` and `tag` are optional."""

    CATEGORY = "probe"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls, env=None):
        return {
            "required": {"message": ("STRING", {"default": "FailNode failed"})},
            "optional": {"images": ("IMAGE",), "tag": ("STRING", {"default": ""})},
        }

    def run(self, message, images=None, tag=""):
        raise RuntimeError(message)


class SlowNode(Node):
    """An output node that sleeps `seconds`, checking for an interrupt every few milliseconds, then passes
    `images` through and shows {"text": ["slept <seconds>"]}. Vary `tag` to defeat the output cache."""

    CATEGORY = "probe"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls, env=None):
        return {
            "required": {"seconds": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 86400.0, "step": 0.01})},
            "optional": {"images": ("IMAGE",), "tag": ("STRING", {"default": ""})},
        }

    def run(self, seconds, images=None, tag=""):
        self.ctx.sleep(seconds)
        return {"ui": {"text": ["slept %s" % seconds]}, "result": (images,)}


class ProbeFileDigest(Node):
    """An output node showing "<sha256> <size>" of the file a VIDEO or AUDIO came from (ui text), read in chunks.
    Vary `tag` to defeat the output cache."""

    CATEGORY = "probe"
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls, env=None):
        return {"optional": {"video": ("VIDEO",), "audio": ("AUDIO",), "tag": ("STRING", {"default": ""})}}

    def run(self, video=None, audio=None, tag=""):
        media = video if video is not None else audio
        if media is None:
            raise ValueError("ProbeFileDigest needs a video or an audio")
        return {"ui": {"text": ["%s %d" % (_file_sha256(media.path), os.path.getsize(media.path))]}}


NODE_CLASSES = {
    "EmptyImage": EmptyImage,
    "SaveImage": SaveImage,
    "PreviewImage": PreviewImage,
    "LoadImage": LoadImage,
    "LoadImageMask": LoadImageMask,
    "MaskToImage": MaskToImage,
    "LoadVideo": LoadVideo,
    "LoadAudio": LoadAudio,
    "ImageInvert": ImageInvert,
    "ImageScale": ImageScale,
    "CheckpointLoaderSimple": CheckpointLoaderSimple,
    "CLIPTextEncode": CLIPTextEncode,
    "EmptyLatentImage": EmptyLatentImage,
    "KSampler": KSampler,
    "VAEDecode": VAEDecode,
    "ProbeProgress": ProbeProgress,
    "ProbeEcho": ProbeEcho,
    "ProbeFail": ProbeFail,
    "FailNode": FailNode,
    "SlowNode": SlowNode,
    "ProbeFileDigest": ProbeFileDigest,
}

NODE_DISPLAY_NAMES = {
    "SaveImage": "Save Image",
    "PreviewImage": "Preview Image",
    "LoadImage": "Load Image",
    "LoadImageMask": "Load Image (as Mask)",
    "MaskToImage": "Convert Mask to Image",
    "LoadVideo": "Load Video",
    "LoadAudio": "Load Audio",
    "ImageInvert": "Invert Image",
    "ImageScale": "Upscale Image",
    "CheckpointLoaderSimple": "Load Checkpoint",
    "CLIPTextEncode": "CLIP Text Encode (Prompt)",
    "EmptyLatentImage": "Empty Latent Image",
    "KSampler": "KSampler",
    "VAEDecode": "VAE Decode",
    "ProbeProgress": "Probe Progress",
    "ProbeEcho": "Probe Echo",
    "ProbeFail": "Probe Fail",
    "FailNode": "Fail Node",
    "SlowNode": "Slow Node",
    "ProbeFileDigest": "Probe File Digest",
}
