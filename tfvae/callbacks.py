"""Every Keras callback of tfvae: KL warm-up, learning-rate decay, the NaN guard, checkpoints,
backups for resuming (one or several workers), TensorBoard images."""

from __future__ import annotations

import math
import numbers
import os
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfvae import distribute, runs
from tfvae.checkpoints import weights_are_finite
from tfvae.files import atomic_path, read_json, write_json
from tfvae.seeds import stateless_seed
from tfvae.validation import invalid_values_message


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good weights were kept."""


class KLWarmup(keras.callbacks.Callback):
    """Convenience for ``VAE(..., kl_warmup_steps=steps)`` on an existing model.

    Raises the KL weight linearly from 0 to ``target`` over ``steps`` training
    steps: it sets the model's ``kl_warmup_steps`` (and ``beta`` to
    ``target`` if given) for this and later fits, and logs the KL weight as
    ``beta`` at the end of each epoch. The schedule itself is the model's
    (see :meth:`tfvae.VAE.kl_weight`), computed in the compiled step.

    Args:
        steps: number of training steps (batches) of the warm-up; must be > 0.
        target: final beta; default: the model's beta.
    """

    def __init__(self, steps: int, target: float | None = None):
        super().__init__()
        if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps <= 0:
            raise ValueError(f"KLWarmup steps must be a positive number of batches, got {steps!r}.")
        self.steps = int(steps)
        self.target = target

    def on_train_begin(self, logs=None):
        if self.target is not None:
            self.model.beta.assign(float(self.target))
        if self.model.kl_warmup_steps != self.steps:
            self.model.kl_warmup_steps = self.steps  # a constant of the traced step: retrace
            self.model.make_train_function(force=True)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["beta"] = float(keras.ops.convert_to_numpy(self.model.kl_weight()))


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stop training at a NaN or infinite loss, or at bad input values that
    XLA let through, and restore the last good weights.

    Checked after every execution of the training function (every
    ``steps_per_execution`` steps; Keras's running mean of the loss stays
    non-finite once one step was). The weights and optimizer state of the
    last finished epoch whose loss and weights were finite (or the initial
    ones) are restored, and ``message`` says where it happened and why it may
    have; ``bad_data`` tells that the cause was NaN, inf or out-of-support
    input values (counted by :meth:`tfvae.VAE.invalid_values`; without XLA
    the in-graph assertion raises first). :meth:`tfvae.VAE.fit` adds a guard
    by itself and raises ``ValueError`` (bad data) or
    :class:`TrainingDiverged` with that message.
    """

    def __init__(self):
        super().__init__()
        self.message: str | None = None
        self.bad_data = False
        self._epoch = 0
        self._epoch_start_step = 0
        self._checked_step = 0
        self._good: tuple[list, list] | None = None

    @classmethod
    def in_callbacks(cls, callbacks) -> tuple[list, NonFiniteLossGuard]:
        """``callbacks`` as a list that holds a guard (the caller's own, or a
        new one appended), and that guard."""
        callbacks = list(callbacks or [])
        guard = next((c for c in callbacks if isinstance(c, cls)), None)
        if guard is None:
            guard = cls()
            callbacks.append(guard)
        return callbacks, guard

    def raise_if_stopped(self) -> None:
        """Raise what stopped the fit: ``ValueError`` for bad data,
        :class:`TrainingDiverged` for a NaN/inf loss; nothing otherwise."""
        if self.message:
            raise (ValueError if self.bad_data else TrainingDiverged)(self.message)

    def on_train_begin(self, logs=None):
        self.message, self.bad_data = None, False
        self._checked_step = self._step()
        self._snapshot()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_start_step = self._step()

    def on_train_batch_end(self, batch, logs=None):
        # Keras's batch index is the last step the execution could have run;
        # the optimizer's count says which step it did run.
        step = self._step()
        self._check(logs, f"batch {step - self._epoch_start_step}",
                    f"a batch of training steps {self._checked_step + 1} to {step}")
        self._checked_step = step

    def on_epoch_end(self, epoch, logs=None):
        if not self._check(logs, "end", "a validation batch") and weights_are_finite(self.model):
            self._snapshot()

    def _step(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def _snapshot(self):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and not optimizer.built:  # Keras builds it in the first step:
            with self.model.distribute_strategy.scope():   # its moments must be restored too
                optimizer.build(self.model.trainable_variables)
        self._good = ([np.array(w) for w in self.model.get_weights()],
                      [] if optimizer is None else [np.array(v) for v in optimizer.variables])

    def _check(self, logs, where, batches) -> bool:
        """True (and training stopped) when the loss in ``logs`` is not finite
        or the model counted bad input values (in ``batches``)."""
        loss = (logs or {}).get("loss")
        if self.message:
            return True
        bad = getattr(self.model, "invalid_values", lambda: 0)()
        if bad:
            self.bad_data = True
            self.message = (
                f"{invalid_values_message('x', batches, bad)}; expected finite values in the "
                f"likelihood's support (for pixels: [0, 1]). Found after the compiled step ran "
                f"(XLA drops in-graph checks); the weights of the last good epoch were restored.")
        elif loss is None or math.isfinite(float(loss)):
            return False
        else:
            self.message = (
                f"the loss became {float(loss)} by training step {self._step()} "
                f"(epoch {self._epoch + 1}, {where}). Likely causes: a learning rate too high "
                f"(try a 10x smaller one), bad data (NaN or values outside the likelihood's "
                f"support), or a learned Normal scale collapsing towards 0 (try a fixed scale, "
                f"e.g. likelihood 'normal:0.1'). The weights of the last good epoch were "
                f"restored.")
        if self._good is not None:
            weights, optimizer_variables = self._good
            self.model.set_weights(weights)
            for variable, value in zip(self.model.optimizer.variables, optimizer_variables):
                variable.assign(value)
        self.model.stop_training = True
        return True


class TimeBudget(keras.callbacks.Callback):
    """Stop after the epoch that ends past ``minutes`` of training; log
    ``train_minutes`` (counting ``minutes_before``, from earlier sessions of a
    resumed run) every epoch. ``minutes=None``: no limit, only the log.
    ``stopped`` tells whether the budget ended the fit."""

    def __init__(self, minutes: float | None, minutes_before: float = 0.0):
        super().__init__()
        self.minutes = minutes
        self.minutes_before = float(minutes_before)
        self.stopped = False
        self._start = time.perf_counter()

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def spent(self) -> float:
        """Minutes of training so far, earlier sessions included."""
        return self.minutes_before + (time.perf_counter() - self._start) / 60

    def on_epoch_end(self, epoch, logs=None):
        spent = self.spent()
        if logs is not None:
            logs["train_minutes"] = spent
        if self.minutes is not None and spent >= self.minutes:
            self.stopped = self.model.stop_training = True


class LearningRateDecay(keras.callbacks.Callback):
    """Decay the optimizer's step size exponentially from ``initial`` to ``final`` over training:
    at the start of each epoch, ``initial * (final / initial) ** progress``.

    ``progress`` in [0, 1] is the fraction of training done: of ``budget.minutes`` when a
    :class:`TimeBudget` with a limit is given (its minutes count earlier sessions), else of
    ``epochs``. The rate is computed from the progress, not accumulated, so a resumed run
    continues the same schedule. Logged as ``learning_rate`` at the end of each epoch.
    Exponential, as Burda et al. (2015) decay Adam's step (by 10 over their 3,280 epochs).

    Args:
        initial, final: step sizes (> 0) at the start and at the end.
        epochs: the last epoch (fit's ``epochs``), the horizon without a time budget.
        budget: the run's :class:`TimeBudget`; listed before this callback in ``fit``.
    """

    def __init__(self, initial: float, final: float, epochs: int,
                 budget: TimeBudget | None = None):
        super().__init__()
        for name, value in (("initial", initial), ("final", final)):
            if not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
                raise ValueError(f"LearningRateDecay {name} must be a step size > 0, got "
                                 f"{value!r}.")
        if not isinstance(epochs, (int, np.integer)) or epochs < 1:
            raise ValueError(f"LearningRateDecay epochs must be an integer >= 1, got {epochs!r}.")
        self.initial, self.final, self.epochs, self.budget = (float(initial), float(final),
                                                              int(epochs), budget)

    def progress(self, epoch: int) -> float:
        """Fraction of training done when epoch ``epoch`` (0-based) starts."""
        if self.budget is not None and self.budget.minutes is not None:
            done = self.budget.spent() / self.budget.minutes
        else:
            done = epoch / self.epochs
        return min(max(done, 0.0), 1.0)

    def rate(self, progress: float) -> float:
        return self.initial * (self.final / self.initial) ** progress

    def on_epoch_begin(self, epoch, logs=None):
        # The setter assigns Keras's step-size variable, read by the compiled step.
        self.model.optimizer.learning_rate = self.rate(self.progress(epoch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(
                self.model.optimizer.learning_rate))


class EpochCheckpoint(keras.callbacks.Callback):
    """Save a resumable checkpoint of a run folder after every epoch that ended finite.

    See :func:`tfvae.runs.save_checkpoint` for the files and their order. An
    epoch whose loss or weights are NaN/inf is not saved, so the last good
    model stays in place.

    Args:
        run: the run folder.
        history: logs of epochs completed before this fit (when resuming).
    """

    def __init__(self, run: runs.RunFolder, history: dict | None = None):
        super().__init__()
        self.run = run
        self.history = {k: list(v) for k, v in (history or {}).items()}
        self.last_saved_epoch: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        loss = logs.get("loss")
        if loss is None or not math.isfinite(float(loss)) or not weights_are_finite(self.model):
            return
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        self.run.save_checkpoint(self.model, epoch + 1, self.history)
        self.last_saved_epoch = epoch + 1


class ImageSummaries(keras.callbacks.Callback):
    """TensorBoard images after each epoch: reconstructions and samples.

    ``reconstructions``: each data image beside its reconstruction E[x|z=mu];
    ``samples``: E[x|z] for a fixed set of z ~ p(z) (the same every epoch,
    so the images show how the decoder changes). Step = epochs completed.
    For a conditional VAE the samples take the classes 0, 1, 2, ... in turn.

    Args:
        log_dir: folder of the event file.
        images: ``[n, *data_shape]`` data images to reconstruct.
        num_samples: number of samples.
        seed: seed of the samples' z.
        labels: ``[n]`` labels of ``images`` (a conditional VAE needs them).
    """

    def __init__(self, log_dir: str | os.PathLike, images: np.ndarray, num_samples: int = 16,
                 seed: int = 0, labels: np.ndarray | None = None):
        super().__init__()
        self.log_dir = str(Path(log_dir))
        self.images = np.asarray(images, np.float32)
        self.labels = labels
        self.num_samples = num_samples
        self.seed = seed
        self.writer = None

    def on_train_begin(self, logs=None):
        self.writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_end(self, epoch, logs=None):
        if not math.isfinite(float((logs or {}).get("loss", math.nan))):
            return
        classes = getattr(self.model, "num_classes", None)
        conditional = {} if classes is None else {
            "labels": np.arange(self.num_samples) % classes}
        recon = (self.model.reconstruct(self.images) if self.labels is None
                 else self.model.reconstruct(self.images, self.labels))
        pairs = tf.concat([self.images, recon], axis=2)
        samples = self.model.sample(self.num_samples, seed=stateless_seed(self.seed), mean=True,
                                    **conditional)
        with self.writer.as_default(step=epoch + 1):
            tf.summary.image("reconstructions", tf.clip_by_value(pairs, 0.0, 1.0),
                             max_outputs=len(self.images),
                             description="left: data; right: E[x|z] at z = posterior mean")
            tf.summary.image("samples", tf.clip_by_value(samples, 0.0, 1.0),
                             max_outputs=self.num_samples,
                             description="E[x|z] for fixed z ~ p(z)")
        self.writer.flush()

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.close()


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras's ``BackupAndRestore`` for one or several workers, with atomic commits.

    After every epoch each worker saves the weights (model and optimizer) —
    all of them, since saving may take part in collective operations — the
    chief into ``backup_dir`` and the others into a private temporary folder
    (:func:`tfvae.distribute.write_folder`). The chief's backup is committed
    by writing :attr:`STATE` (completed epochs, the weights file, the logs so
    far) atomically after the weights file, so a kill at any moment leaves the
    previous epoch's backup whole. When ``fit`` starts, every worker restores
    the chief's backup: weights and the epoch to continue from. Workers on
    other machines must therefore see ``backup_dir`` (a shared folder). The
    backup is deleted once the last epoch is done (``delete_checkpoint``), not
    when training stops early (a time budget), so that a later run resumes.

    Args:
        backup_dir: the chief's backup folder (only its files are touched).
        delete_checkpoint: remove the backup after the last epoch.
    """

    STATE = "backup_state.json"

    def __init__(self, backup_dir: str | os.PathLike, delete_checkpoint: bool = True):
        super().__init__(os.fspath(backup_dir), save_freq="epoch",
                         delete_checkpoint=delete_checkpoint)
        self.backup_dir = Path(backup_dir)
        self.history: dict[str, list[float]] = {}

    @classmethod
    def saved_state(cls, backup_dir: str | os.PathLike) -> dict | None:
        """The committed backup in ``backup_dir``: ``{"epoch", "weights", "history"}``, or None."""
        state = read_json(Path(backup_dir) / cls.STATE)
        if state is None or not (Path(backup_dir) / str(state.get("weights", ""))).is_file():
            return None
        return state

    def on_train_begin(self, logs=None):
        state = self.saved_state(self.backup_dir)
        if state is None:
            return
        self._current_epoch = int(state["epoch"])
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)  # its moments are saved too
        self.model.load_weights(self.backup_dir / state["weights"])
        self.model._initial_epoch = int(state["epoch"])  # how Keras's own callback resumes fit
        self.history = {k: list(v) for k, v in state.get("history", {}).items()}

    def on_train_batch_end(self, batch, logs=None):
        pass  # backups at epoch ends only

    def on_epoch_end(self, epoch, logs=None):
        self._current_epoch = epoch + 1
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        name = f"epoch-{epoch + 1:05d}.weights.h5"
        strategy = self.model.distribute_strategy
        with distribute.write_folder(self.backup_dir, strategy) as folder:
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(folder / name, suffix=".weights.h5") as tmp:
                self.model.save_weights(tmp)
            if distribute.is_chief(strategy):
                write_json(folder / self.STATE,
                           {"epoch": epoch + 1, "weights": name, "history": self.history})
                for old in folder.glob("epoch-*.weights.h5"):
                    if old.name != name:
                        old.unlink(missing_ok=True)

    def on_train_end(self, logs=None):
        finished = self._current_epoch >= self.params.get("epochs", 0)
        chief = distribute.is_chief(self.model.distribute_strategy)
        if self.delete_checkpoint and finished and chief:
            shutil.rmtree(self.backup_dir, ignore_errors=True)
