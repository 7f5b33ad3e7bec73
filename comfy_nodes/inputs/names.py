"""The file name an input travels with: one safe path component, for the worker's ComfyUI to store it under.

Two rules, for two sources:

  check_upload_name(name)      a name a client gives POST /comfymq/inputs (?name=, or the multipart filename): a
                               file name, not a path. ValueError (a 400) for control characters, '/' or '\\',
                               '.' or '..', or more than MAX_NAME_BYTES.
  safe_name(name, sha256, ...) a name found in a graph (a reference's "name", a path in ComfyUI's input folder
                               such as "clipspace/mask-1.png [input]"): made safe, never refused. Directories and
                               a ComfyUI folder annotation are dropped, characters Windows refuses become '_';
                               when nothing usable is left (empty, control characters, a device name),
                               "input-<sha256[:12]>" plus the extension, if one is known, stands in.

sniff_extension(head) knows a few common media types by their first bytes, for a name to fall back on.
"""

from __future__ import annotations

import re

MAX_NAME_BYTES = 255  # one path component on common file systems
_ANNOTATION = re.compile(r"\s*\[(input|output|temp)\]\s*$")
_WINDOWS_RESERVED = re.compile(r'[<>:"|?*]')
_WINDOWS_DEVICES = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)
_EXTENSION = re.compile(r"\.([A-Za-z0-9]{1,10})$")


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in text)


def check_upload_name(name: str) -> str:
    """`name` when it is a usable file name (the module doc), else ValueError saying what is wrong."""
    shown = name[:64].encode("unicode_escape").decode("ascii")
    if not name:
        raise ValueError("the file name is empty")
    if _has_control(name):
        raise ValueError(f"the file name '{shown}' holds a control character (a NUL, a line break, ...)")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"the file name '{shown}' is a path: give a file name only, e.g. photo.png")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise ValueError(f"the file name is longer than {MAX_NAME_BYTES} bytes")
    if _has_surrogate(name):
        raise ValueError(f"the file name '{shown}' is not valid Unicode text")
    return name


def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def extension_of(name: str | None) -> str:
    """The name's extension with its dot, lower case, when it is a plain one ('.png'); else ''."""
    m = _EXTENSION.search(name or "")
    return "." + m.group(1).lower() if m else ""


def fallback_name(sha256: str, extension: str = "") -> str:
    return f"input-{sha256[:12]}{extension}"


def safe_name(name: str | None, sha256: str, known_extension: str = "") -> str:
    """A safe file name for an input from a name found in a graph (the module doc). known_extension ('.png'):
    what the fallback name ends with when `name` gives none."""
    base = ""
    if isinstance(name, str):
        base = _ANNOTATION.sub("", name)
        base = re.split(r"[/\\]", base)[-1]
        base = _WINDOWS_RESERVED.sub("_", base).strip().rstrip(". ")
    if (
        not base
        or base in (".", "..")
        or _has_control(base)
        or _has_surrogate(base)
        or _WINDOWS_DEVICES.match(base)
        or len(base.encode("utf-8")) > MAX_NAME_BYTES
    ):
        ext = extension_of(base) if base and not _has_control(base) and not _has_surrogate(base) else ""
        return fallback_name(sha256, ext or known_extension)
    return base


# (offset, magic bytes, extension); checked in order against a file's first bytes
_MAGIC = (
    (0, b"\x89PNG\r\n\x1a\n", ".png"),
    (0, b"\xff\xd8\xff", ".jpg"),
    (0, b"GIF87a", ".gif"),
    (0, b"GIF89a", ".gif"),
    (0, b"BM", ".bmp"),
    (0, b"II*\x00", ".tif"),
    (0, b"MM\x00*", ".tif"),
    (0, b"fLaC", ".flac"),
    (0, b"OggS", ".ogg"),
    (0, b"ID3", ".mp3"),
    (0, b"\x1aE\xdf\xa3", ".webm"),
    (4, b"ftypqt", ".mov"),
    (4, b"ftyp", ".mp4"),
)


def sniff_extension(head: bytes) -> str:
    """The extension (".png") of a few common media types, known by a file's first 16 bytes; '' otherwise."""
    if head[:4] == b"RIFF" and head[8:12] in (b"WEBP", b"WAVE", b"AVI "):
        return {b"WEBP": ".webp", b"WAVE": ".wav", b"AVI ": ".avi"}[head[8:12]]
    for offset, magic, ext in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return ext
    return ""
