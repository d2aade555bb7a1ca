"""Files written atomically, and JSON read back safely.

Every file written here goes to a temporary name in the same folder first
(``.NAME.<random><suffix>``), is flushed to disk (``fsync``) and is then
renamed over the target with ``os.replace`` (atomic on POSIX and Windows
within one file system). A crash, a kill, a power loss or a full disk during a
write therefore leaves either the old file or the new one, never a broken mix.
This is the one place that writes files so; models, metrics, datasets and
images all go through :func:`atomic_path`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def temporary_names(path: str | os.PathLike) -> list[Path]:
    """Temporary files that :func:`atomic_path` may have left beside ``path`` (killed writes)."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    Write the whole file to the yielded path inside the ``with`` block. If the
    block raises, the temporary file is removed and ``path`` is untouched.

    Args:
        path: the final file.
        suffix: ending of the temporary name (Keras wants ``".keras"``).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        _fsync(tmp)  # the data is on disk before the rename makes it the file
        os.replace(tmp, path)
        _fsync(path.parent)  # and the rename itself survives a power loss
    finally:
        if tmp.exists():
            tmp.unlink()


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. folders on Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as indented JSON, atomically (non-finite floats become null)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_finite(data), indent=2, sort_keys=True) + "\n")


def _finite(value):
    """``value`` with NaN/inf floats replaced by None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def read_json(path: str | os.PathLike) -> dict | None:
    """The JSON object in ``path``, or None if the file is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def copy_file(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copy ``source`` over ``target`` atomically."""
    with atomic_path(target, suffix=Path(target).suffix) as tmp:
        shutil.copyfile(source, tmp)
