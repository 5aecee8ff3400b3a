"""Atomic file writing: every file areaser writes goes through here.

A file is written to a temporary sibling and renamed over the target only once
complete, so a crash or Ctrl-C never leaves a half-written file and never
destroys the previous version.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "atomic_path",
    "atomic_write_text",
    "atomic_write_bytes",
    "atomic_write_json",
    "check_output_file",
    "read_json",
]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The temporary file keeps ``path``'s suffix (or ``suffix``) so writers that pick
    a format from the extension (soundfile, matplotlib) still work. On any
    exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # hidden prefix marks it as temporary; the real suffix keeps format detection working
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.tmp.", suffix=suffix if suffix is not None else path.suffix, dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file 0600; give it the mode a plain open() would (or the old file's)
        os.chmod(tmp_path, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def read_json(path: str | os.PathLike, error: type[Exception] = ValueError) -> Any:
    """The JSON value stored in ``path``; ``error`` (one line naming the file) if it cannot be read or parsed."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: not a readable JSON file ({e})") from None


def check_output_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path if a file can be written there; ``ValueError`` naming the reason otherwise.

    Called before long work, so a bad ``-o`` fails at once instead of after the work is done.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; give a file name (e.g. {path / 'results.csv'})")
    parent = _nearest_existing(path.parent)
    if not parent.is_dir():
        raise ValueError(f"{path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{path}: the folder {parent} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{path}: exists and is not writable")
    return path


def check_output_folder(path: str | os.PathLike) -> Path:
    """``path`` as a Path if it is, or can be made, a folder; ``ValueError`` naming the file in the way otherwise.

    The folder twin of :func:`check_output_file`, for the same reason: before long work.
    """
    path = Path(path)
    found = _nearest_existing(path)
    if not found.is_dir():
        raise ValueError(f"{path}: {found} is a file, not a folder")
    return path


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (a dangling link counts), else the current folder."""
    return next((p for p in (path, *path.parents) if p.exists() or p.is_symlink()), Path("."))


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask sets it too)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically; return the path."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def file_digest(path: str | os.PathLike) -> str:
    """SHA-1 hex digest of a file's bytes, read in 1 MiB blocks (content identity, not security)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
