"""Files written whole or not at all.

Everything the project writes (label PNGs, overlays, ONNX files, engines, JSON reports,
bags) goes to a temporary name in the destination folder and is renamed over the final
name only once it is complete and flushed. A process killed half-way leaves at most a
``.NAME.*.tmp`` file behind, never a truncated file under the final name.

    with atomic_path("out/labels.png") as tmp:     # any writer that takes a path
        cv2.imwrite(str(tmp), labels)
    write_bytes_atomic("model.engine", blob)
    write_text_atomic("report.json", json.dumps(result))

Files that must pass a check before they are used (exported models) are written under
``unverified_path(final)`` (``NAME.unverified.onnx``) and moved to the final name by
``promote`` only once the check has passed.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path, suffix: str | None = None):
    """Yield a temporary path beside ``path``; on a clean exit it replaces ``path``.

    ``suffix`` is the temporary file's ending (default: the final name's, so writers that
    choose a format by extension, such as ``cv2.imwrite``, still see ``.png``). On an
    exception the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + (path.suffix if suffix is None else suffix),
                               dir=folder)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if not tmp.exists():
            raise OSError(f"{path}: the writer did not create its output")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        _fsync_dir(folder)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes_atomic(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_image_atomic(path, image, params=None) -> None:
    """``cv2.imwrite`` through a temporary file; a ``ValueError`` when OpenCV refuses."""
    import cv2

    with atomic_path(path) as tmp:
        try:
            ok = cv2.imwrite(str(tmp), image, params or [])
        except cv2.error:
            ok = False
        if not ok:
            raise ValueError(f"{path}: OpenCV could not write a {image.dtype} image of shape {image.shape}")


def file_sha256(path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_dir(path):
    """Yield a path for a new folder (a rosbag2 bag is one) that appears as ``path`` only
    once the block exits cleanly: the folder is made as ``.NAME.*.tmp/NAME`` beside ``path``,
    its files are flushed, and it is renamed to ``path``. ``path`` must not exist (a folder
    cannot be replaced in one step); on an exception the temporary folder is removed."""
    import shutil

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path}: exists already; remove it or choose another name")
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    outer = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder))
    try:
        yield outer / path.name
        built = outer / path.name
        if not built.is_dir():
            raise OSError(f"{path}: the writer did not create its folder")
        for f in built.rglob("*"):
            if f.is_file():
                with open(f, "rb+") as fh:
                    os.fsync(fh.fileno())
        _fsync_dir(built)
        if path.exists():
            raise FileExistsError(f"{path}: appeared while it was being written; the new one is discarded")
        os.rename(built, path)
        _fsync_dir(folder)
    finally:
        shutil.rmtree(outer, ignore_errors=True)


def write_figure_atomic(path, figure, **savefig_kwargs) -> None:
    """``matplotlib`` ``Figure.savefig`` through a temporary file (format from ``path``'s suffix)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=path.suffix.lstrip(".") or None, **savefig_kwargs)


def unverified_path(path) -> Path:
    """``NAME.unverified.EXT`` beside ``NAME.EXT``: where a file waits until its check passes."""
    path = Path(path)
    return path.with_name(f"{path.stem}.unverified{path.suffix}")


def promote(unverified, final) -> None:
    """Move a checked file from its ``unverified_path`` to its final name (one rename)."""
    os.replace(unverified, final)
    _fsync_dir(Path(final).parent if str(Path(final).parent) else Path("."))
