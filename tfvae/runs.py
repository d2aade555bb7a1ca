"""The run folder of ``tfvae train``: its files, whose it is, how far it got, and its lock.

Layout (every name is declared here)::

    run_config.json      written first, {"format": "tfvae-run/1", "config": {...}}: ours
    .tfvae.lock          held (flock) while a process trains into the folder
    checkpoints/         epoch-0003.keras (model + optimizer after 3 epochs) and state.json
    model.keras          the newest good model (a copy of the newest checkpoint)
    logs/                TensorBoard: train/, validation/, images/
    samples.png          E[x|z] for z ~ p(z)
    reconstructions.png  rows of data, then their reconstructions
    metrics.json         final metrics; "completed": true marks a finished run

A folder is ours only if it holds our ``run_config.json``; a non-empty folder
without it is refused, and clearing removes only the names above. How far a
run got comes from ``checkpoints/state.json``, else from ``model.keras``'s own
optimizer step count; anything ambiguous stops with :class:`RunFolderError`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import keras

from tfvae import checkpoints
from tfvae.files import copy_file, read_json, temporary_names, write_json

FORMAT = "tfvae-run/1"
RUN_CONFIG = "run_config.json"
METRICS = "metrics.json"
MODEL = "model.keras"
CHECKPOINTS = "checkpoints"
CHECKPOINT_STATE = "state.json"
BACKUP = "backup"  # a cluster run's progress (tfvae.callbacks.BackupAndRestore)
LOGS = "logs"
LOG_FOLDERS = ("train", "validation", "images")  # what Keras's TensorBoard and we write in logs/
SAMPLES_PNG = "samples.png"
RECONSTRUCTIONS_PNG = "reconstructions.png"
LOCK = ".tfvae.lock"
RUN_FILES = (RUN_CONFIG, METRICS, MODEL, SAMPLES_PNG, RECONSTRUCTIONS_PNG)


class RunFolderError(ValueError):
    """The folder cannot take this run: not ours, another run, in use, or ambiguous."""


@dataclass
class ResumePoint:
    """Where an interrupted run continues: after ``epoch`` epochs, from ``model_file``."""

    epoch: int
    model_file: Path
    history: dict = field(default_factory=dict)
    source: str = "checkpoint"


class RunFolder:
    """One run folder (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------ ownership
    def stored_config(self) -> dict | None:
        """The config in our ``run_config.json``, or None when there is none.

        Raises:
            RunFolderError: ``run_config.json`` exists but is not ours or unreadable.
        """
        path = self / RUN_CONFIG
        if not path.exists():
            return None
        data = read_json(path)
        if data is not None and data.get("format") == FORMAT and isinstance(data.get("config"),
                                                                            dict):
            return data["config"]
        if data is not None and "format" not in data and "dataset" in data:
            return data  # written by tfvae 0.1.0: the config itself
        raise RunFolderError(
            f"{path} is damaged or was not written by tfvae, so {self.path} may not be a tfvae "
            f"run. Nothing was changed: move the folder's files away, or choose another --out.")

    def check_ours(self) -> None:
        """Refuse a folder that is not empty and holds no run of ours.

        Raises:
            RunFolderError: naming some of the files found (none is touched).
        """
        if not self.path.is_dir() or self.stored_config() is not None:
            return
        foreign = sorted(p.name for p in self.path.iterdir() if p.name != LOCK)
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise RunFolderError(
                f"{self.path} is not empty ({shown}) and holds no tfvae run ({RUN_CONFIG}), so "
                f"nothing in it was touched. Train into an empty or new folder (--out).")

    def status(self, identity: dict, defaults: dict | None = None) -> str:
        """``"new"``, ``"resume"`` or ``"complete"`` for a run of ``identity``.

        ``defaults`` fills fields that a run written by an older tfvae lacks.

        Raises:
            RunFolderError: the folder is not empty and not ours, or holds a
                run with other arguments.
        """
        self.check_ours()
        stored = self.stored_config()
        if stored is None:
            return "new"
        stored = {**(defaults or {}), **stored}
        stored = {k: stored.get(k) for k in identity}
        if stored != identity:
            diffs = ", ".join(f"{k}: stored {stored.get(k)!r}, now {v!r}"
                              for k, v in identity.items() if stored.get(k) != v)
            raise RunFolderError(
                f"{self.path} holds a run with other arguments ({diffs}). Re-run with the "
                f"stored arguments to resume it, pass --overwrite to replace it, or choose "
                f"another --out.")
        metrics = read_json(self / METRICS)
        return "complete" if metrics and metrics.get("completed") else "resume"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's lock: a second process training into it is refused."""
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks here
            yield
            return
        fd = os.open(self / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                raise RunFolderError(
                    f"{self.path} is in use by another tfvae process (pid {holder}). Wait for "
                    f"it to finish, or choose another --out.") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

    # -------------------------------------------------------------- writing
    def start(self, identity: dict, overwrite: bool = False) -> None:
        """Clear our old files (all with ``overwrite``, else stale temporaries)
        and write the marker ``run_config.json`` first."""
        self.clear(temporary_only=not overwrite)
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self / RUN_CONFIG, {"format": FORMAT, "config": identity})

    def clear(self, temporary_only: bool = False) -> None:
        """Remove what our runs write here, and nothing else.

        Always: temporary files of killed writes (``.NAME.*`` of our names).
        Unless ``temporary_only``: our files, checkpoints and log folders.
        """
        ckpt = self / CHECKPOINTS
        ours = [self / name for name in RUN_FILES]
        ours += [ckpt / CHECKPOINT_STATE, *ckpt.glob("epoch-*.keras")]
        for path in ours:
            for leftover in temporary_names(path):
                leftover.unlink(missing_ok=True)
        for leftover in [*ckpt.glob(".epoch-*.keras.*"),
                         *(self / BACKUP).glob(".epoch-*.weights.h5.*")]:
            leftover.unlink(missing_ok=True)
        if temporary_only:
            return
        shutil.rmtree(self / BACKUP, ignore_errors=True)
        for path in ours:
            path.unlink(missing_ok=True)
        for name in LOG_FOLDERS:
            shutil.rmtree(self / LOGS / name, ignore_errors=True)
        for folder in (ckpt, self / LOGS):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if nothing else is in it

    def save_checkpoint(self, model: keras.Model, epoch: int, history: dict) -> None:
        """Checkpoint after ``epoch`` finished epochs, in an order that survives any kill.

        Writes ``checkpoints/epoch-NNNN.keras`` (model + optimizer), copies it
        over ``model.keras``, then writes ``checkpoints/state.json`` naming it,
        then removes older checkpoint files. Every write is atomic, so once
        ``state.json`` names epoch ``k`` both files hold it.
        """
        ckpt = self / CHECKPOINTS
        ckpt.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch:04d}.keras"
        checkpoints.save_model(model, ckpt / name)
        copy_file(ckpt / name, self / MODEL)
        write_json(ckpt / CHECKPOINT_STATE, {"epoch": epoch, "model": name, "history": history})
        for old in ckpt.glob("epoch-*.keras"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def finish(self, metrics: dict) -> None:
        """Write ``metrics.json`` (the run is then complete) and drop the checkpoints."""
        write_json(self / METRICS, metrics)
        ckpt = self / CHECKPOINTS
        for path in [ckpt / CHECKPOINT_STATE, *ckpt.glob("epoch-*.keras")]:
            path.unlink(missing_ok=True)  # model.keras is the final model
        with contextlib.suppress(OSError):
            ckpt.rmdir()

    # -------------------------------------------------------------- reading
    def resume_point(self, steps_per_epoch: int) -> ResumePoint | None:
        """How far the run got, or None when nothing was trained yet.

        From ``checkpoints/state.json`` and the checkpoint it names; if either
        is missing or damaged, from ``model.keras``, whose optimizer step count
        over ``steps_per_epoch`` gives the epochs it holds.

        Raises:
            RunFolderError: something was trained but no whole model can be
                found, or ``model.keras``'s step count is not a whole epoch.
        """
        state = read_json(self / CHECKPOINTS / CHECKPOINT_STATE) or {}
        history = state.get("history") if isinstance(state.get("history"), dict) else {}
        if isinstance(state.get("epoch"), int) and isinstance(state.get("model"), str):
            model_file = self / CHECKPOINTS / state["model"]
            if model_file.is_file():
                return ResumePoint(state["epoch"], model_file, history)
        model_file = self / MODEL
        if not model_file.exists():
            leftovers = sorted(p.name for p in (self / CHECKPOINTS).glob("epoch-*.keras"))
            if leftovers:
                raise RunFolderError(
                    f"{self / CHECKPOINTS} holds {', '.join(leftovers)} but no readable "
                    f"{CHECKPOINT_STATE} and there is no {MODEL}. Nothing was changed; pass "
                    f"--overwrite to start the run again.")
            return None
        try:
            model = checkpoints.load_model(model_file)
        except checkpoints.ModelFileError as error:
            raise RunFolderError(
                f"{self.path} has no usable checkpoint and its {MODEL} cannot be loaded "
                f"({error}). Nothing was changed; pass --overwrite to start the run again."
            ) from None
        steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        epoch, remainder = divmod(steps, steps_per_epoch)
        if remainder:
            raise RunFolderError(
                f"{self.path}: the checkpoint record is missing and {MODEL} holds {steps} "
                f"training steps, not a whole number of epochs of {steps_per_epoch} steps. "
                f"Nothing was changed; pass --overwrite to start the run again.")
        return ResumePoint(epoch, model_file, history if len(history.get("loss", [])) == epoch
                           else {}, source=MODEL)
