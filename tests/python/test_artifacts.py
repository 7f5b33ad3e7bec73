"""The atomic artifact writer (comfy_nodes._native.ArtifactWriter / ArtifactStream)."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest

TEMP_PREFIX = ".cmq-tmp."


def all_files(root: Path) -> list[str]:
    """Every file (and symlink) under root, relative, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(out)


def temp_files(root: Path) -> list[str]:
    return [f for f in all_files(root) if os.path.basename(f).startswith(TEMP_PREFIX)]


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "artifacts"


@pytest.fixture
def writer(native, root):
    return native.ArtifactWriter(str(root))


def test_open_creates_root(native, tmp_path):
    root = tmp_path / "a" / "b" / "c"
    w = native.ArtifactWriter(str(root))
    assert root.is_dir()
    assert Path(w.root) == root
    assert w.stale_removed == 0


@pytest.mark.parametrize("make", [bytes, bytearray, memoryview], ids=["bytes", "bytearray", "memoryview"])
def test_write_bytes_like(writer, root, make):
    data = bytes(range(256)) * 10 + b"tail"
    info = writer.write("sub/dir/img.png", make(data))
    assert info["path"] == "sub/dir/img.png"
    assert info["size"] == len(data)
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    assert Path(info["full_path"]) == root / "sub" / "dir" / "img.png"
    assert (root / "sub" / "dir" / "img.png").read_bytes() == data
    assert temp_files(root) == []


def test_write_empty(writer, root):
    info = writer.write("empty.bin", b"")
    assert info["size"] == 0
    assert info["sha256"] == hashlib.sha256(b"").hexdigest()
    assert (root / "empty.bin").read_bytes() == b""


def test_write_memoryview_slice(writer, root):
    buf = bytearray(b"0123456789")
    info = writer.write("slice.bin", memoryview(buf)[2:6])
    assert (root / "slice.bin").read_bytes() == b"2345"
    assert info["sha256"] == hashlib.sha256(b"2345").hexdigest()


def test_collision_gets_suffix(writer, root):
    a = writer.write("out.png", b"first")
    b = writer.write("out.png", b"second")
    c = writer.write("out.png", b"third")
    assert [a["path"], b["path"], c["path"]] == ["out.png", "out-1.png", "out-2.png"]
    assert (root / "out.png").read_bytes() == b"first"  # never overwritten
    assert (root / "out-1.png").read_bytes() == b"second"
    assert (root / "out-2.png").read_bytes() == b"third"
    # A name without an extension gets the suffix at the end.
    writer.write("noext", b"x")
    assert writer.write("noext", b"y")["path"] == "noext-1"


def test_streamed_write(writer, root):
    chunks = [os.urandom(1000), bytearray(os.urandom(70_000)), memoryview(os.urandom(5)), b""]
    expected = b"".join(bytes(c) for c in chunks)
    stream = writer.open("video/clip.mp4")
    total = 0
    for c in chunks:
        stream.write(c)
        total += len(c)
        assert stream.size == total
    # Nothing visible under the final name before commit.
    assert not (root / "video" / "clip.mp4").exists()
    info = stream.commit()
    assert info["path"] == "video/clip.mp4"
    assert info["size"] == len(expected)
    assert info["sha256"] == hashlib.sha256(expected).hexdigest()
    assert Path(info["full_path"]).read_bytes() == expected
    assert temp_files(root) == []
    with pytest.raises(ValueError):
        stream.write(b"more")
    with pytest.raises(ValueError):
        stream.commit()


def test_stream_commit_in_context_manager(writer, root):
    with writer.open("s.bin") as s:
        s.write(b"abc")
        info = s.commit()
    assert (root / "s.bin").read_bytes() == b"abc"
    assert info["sha256"] == hashlib.sha256(b"abc").hexdigest()
    assert temp_files(root) == []


def test_stream_without_commit_leaves_nothing(writer, root):
    with writer.open("sub/never.bin") as s:
        s.write(b"x" * 5000)
        # While open, the data lives in a temp file.
        assert len(temp_files(root)) == 1
    assert all_files(root) == []
    assert not (root / "sub" / "never.bin").exists()


def test_stream_aborted_by_exception_leaves_nothing(writer, root):
    with pytest.raises(RuntimeError, match="boom"):
        with writer.open("x.bin") as s:
            s.write(b"partial")
            raise RuntimeError("boom")
    assert all_files(root) == []


def test_stream_abort(writer, root):
    s = writer.open("y.bin")
    s.write(b"123")
    s.abort()
    s.abort()  # harmless twice
    assert all_files(root) == []
    with pytest.raises(ValueError):
        s.commit()


def test_str_data_is_type_error(writer, root):
    with pytest.raises(TypeError):
        writer.write("a.txt", "text, not bytes")
    s = writer.open("b.txt")
    with pytest.raises(TypeError):
        s.write("text")
    s.abort()
    assert all_files(root) == []


@pytest.mark.parametrize(
    "bad",
    [
        "/etc/passwd",
        "..",
        "../x.png",
        "a/../../x.png",
        "a/../x.png",
        "a\0b.png",
        "dir/",
        "",
        ".",
        "a/.cmq-tmp.x",
    ],
)
def test_bad_relative_paths(writer, root, bad):
    with pytest.raises(ValueError):
        writer.write(bad, b"data")
    with pytest.raises(ValueError):
        writer.open(bad)
    assert all_files(root) == []
    assert not (root.parent / "x.png").exists()


def test_symlink_escaping_root_is_refused(writer, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "escape")
    with pytest.raises(ValueError, match="escape"):
        writer.write("escape/x.png", b"data")
    with pytest.raises(ValueError):
        writer.open("escape/deeper/y.png")
    assert list(outside.iterdir()) == []


def test_symlink_inside_root_is_allowed(writer, root):
    (root / "real").mkdir()
    os.symlink(root / "real", root / "alias")
    info = writer.write("alias/x.png", b"ok")
    assert info["size"] == 2
    assert (root / "real" / "x.png").read_bytes() == b"ok"


def test_stale_temp_of_dead_process_is_removed(native, root):
    host = socket.gethostname().replace(".", "_").replace("/", "_")
    dead_pid = 2147483632
    sub = root / "deep" / "er"
    sub.mkdir(parents=True)
    stale = sub / f"{TEMP_PREFIX}{host}.{dead_pid}.0000000000000001.x.png"
    stale.write_bytes(b"leftover")
    # A temp file of a live process (this one) and an ordinary file are left alone.
    live = sub / f"{TEMP_PREFIX}{host}.{os.getpid()}.0000000000000002.y.png"
    live.write_bytes(b"in progress")
    keep = sub / "keep.png"
    keep.write_bytes(b"keep")
    w = native.ArtifactWriter(str(root))
    assert w.stale_removed == 1
    assert not stale.exists()
    assert live.exists() and keep.exists()
    # Opening again finds nothing more to remove.
    assert native.ArtifactWriter(str(root)).stale_removed == 0
