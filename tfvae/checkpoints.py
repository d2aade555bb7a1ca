"""Atomic saving, model files that fail clearly, and per-epoch checkpoints.

Every file written here goes to a temporary name in the same folder first, is
flushed to disk (``fsync``) and is then renamed over the target with
``os.replace`` (atomic on POSIX and Windows within one file system). A crash,
a kill, a power loss or a full disk during a save therefore leaves either the
old file or the new one, never a broken mix.

Checkpoint folder layout (see :class:`EpochCheckpoint`)::

    checkpoints/epoch-0003.keras   the model after 3 completed epochs
    checkpoints/state.json         {"epoch": 3, "model": "epoch-0003.keras", "history": {...}}

``state.json`` is written only after the model file it names is complete, so
it always points at a whole checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np

STATE_FILE = "state.json"


class ModelFileError(ValueError):
    """A model file is missing, truncated, or not a saved :class:`tfvae.VAE`."""


# ------------------------------------------------------------- atomic writes
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


def save_model(model: keras.Model, path: str | os.PathLike) -> None:
    """``model.save(path)`` (a ``.keras`` file), atomically."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


# --------------------------------------------------------------- model files
def check_model_file(path: str | os.PathLike) -> None:
    """Cheap checks that ``path`` is a complete ``.keras`` file holding a tfvae VAE.

    Reads only the archive's directory and ``config.json``; no TensorFlow work.

    Raises:
        ModelFileError: missing file, not a (complete) zip archive, or a saved
            model of another class.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist (expected a .keras file "
                             f"written by 'tfvae train' or VAE.save).")
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            if archive.testzip() is not None:
                raise zipfile.BadZipFile("a member fails its CRC check")
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as error:
        raise ModelFileError(
            f"model file {path} is truncated or not a .keras file ({error}); expected a "
            f"complete .keras archive written by 'tfvae train' or VAE.save."
        ) from error
    name = config.get("registered_name") or config.get("class_name")
    if name not in ("tfvae>VAE", "VAE"):
        raise ModelFileError(
            f"model file {path} holds a {name!r} model; expected a tfvae VAE (registered "
            f"name 'tfvae>VAE')."
        )


def load_model(path: str | os.PathLike, compile: bool = True) -> keras.Model:
    """Load a saved :class:`tfvae.VAE`, with one clear error for any bad file.

    Raises:
        ModelFileError: see :func:`check_model_file`, or Keras failed to
            rebuild the model from the file.
    """
    check_model_file(path)
    from tfvae.model import VAE  # registers the tfvae classes with Keras

    try:
        model = keras.saving.load_model(path, compile=compile)
    except Exception as error:  # Keras raises many types for a bad archive
        raise ModelFileError(f"model file {path} cannot be loaded: {error}") from error
    if not isinstance(model, VAE):
        raise ModelFileError(f"model file {path} holds a {type(model).__name__}; expected a VAE.")
    return model


# ------------------------------------------------------------- checkpoints
def latest_checkpoint(directory: str | os.PathLike) -> tuple[Path, dict] | None:
    """``(model file, state)`` of the newest complete checkpoint, or None.

    ``state`` holds ``epoch`` (number of completed epochs) and ``history``
    (per-epoch logs so far).
    """
    directory = Path(directory)
    state = read_json(directory / STATE_FILE)
    if not state or not isinstance(state.get("epoch"), int) or "model" not in state:
        return None
    model_file = directory / state["model"]
    if not model_file.is_file():
        return None
    return model_file, state


def weights_are_finite(model: keras.Model) -> bool:
    """True when every weight of ``model`` is finite (no NaN or inf)."""
    return all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.weights)


class EpochCheckpoint(keras.callbacks.Callback):
    """Save a resumable checkpoint after every epoch that ended finite.

    After epoch ``k`` (1-based) with a finite loss and finite weights it
    writes ``directory/epoch-000k.keras`` (model + optimizer state), copies
    it over ``export_path`` (e.g. ``model.keras``), then writes
    ``directory/state.json`` and removes older checkpoint files. All writes
    are atomic, so once ``state.json`` names epoch ``k`` both files hold it;
    a kill before that resumes from epoch ``k - 1``. An epoch whose loss or
    weights are NaN/inf is not saved, so the last good model stays in place.

    Args:
        directory: checkpoint folder (created if needed).
        export_path: file to keep equal to the newest good model, or None.
        history: logs of epochs completed before this run (when resuming).
    """

    def __init__(self, directory: str | os.PathLike, export_path: str | os.PathLike | None = None,
                 history: dict | None = None):
        super().__init__()
        self.directory = Path(directory)
        self.export_path = None if export_path is None else Path(export_path)
        self.history = {k: list(v) for k, v in (history or {}).items()}
        self.last_saved_epoch: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        loss = logs.get("loss")
        if loss is None or not math.isfinite(float(loss)) or not weights_are_finite(self.model):
            return
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch + 1:04d}.keras"
        save_model(self.model, self.directory / name)
        if self.export_path is not None:
            copy_file(self.directory / name, self.export_path)
        write_json(self.directory / STATE_FILE,
                   {"epoch": epoch + 1, "model": name, "history": self.history})
        for old in self.directory.glob("epoch-*.keras"):
            if old.name != name:
                old.unlink(missing_ok=True)
        self.last_saved_epoch = epoch + 1
