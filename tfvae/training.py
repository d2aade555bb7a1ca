"""Train a VAE into a run folder that survives interruptions.

:func:`train` writes, inside the run folder ``out``::

    run_config.json      the arguments of the run (a re-run must match them)
    checkpoints/         a resumable checkpoint after every finished epoch
    model.keras          the newest good model (updated every epoch)
    logs/                TensorBoard: scalars (train/, validation/) and images/
    samples.png          a grid of E[x|z] for z ~ p(z)
    reconstructions.png  rows of data, then their reconstructions
    metrics.json         final metrics; ``"completed": true`` marks a finished run

Calling :func:`train` again with the same config resumes after the last
finished epoch, and returns at once for a finished run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfvae import checkpoints, datasets, networks, plot
from tfvae.callbacks import KLWarmup
from tfvae.model import VAE
from tfvae.optimizers import FusedAdam
from tfvae.seeds import stateless_seed

RUN_CONFIG = "run_config.json"
METRICS = "metrics.json"
MODEL = "model.keras"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
SAMPLES_PNG = "samples.png"
RECONSTRUCTIONS_PNG = "reconstructions.png"
# Everything train() writes, so that overwrite removes exactly these.
RUN_FILES = (RUN_CONFIG, METRICS, MODEL, CHECKPOINTS, LOGS, SAMPLES_PNG, RECONSTRUCTIONS_PNG)
# Held-out validation examples taken from the end of the training split.
FREY_VALIDATION = 200
VALIDATION_FRACTION = 0.1


class RunConfigMismatch(ValueError):
    """The run folder holds a run made with other arguments."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good model was kept."""


@dataclass
class TrainConfig:
    """The arguments of a training run (all that defines its result).

    ``likelihood=None`` means the dataset's default
    (:func:`default_likelihood`). ``limit`` caps each split at that many
    examples (quick runs). ``nll_samples`` (importance samples for the test
    NLL, 0 for none) only affects the final metrics, so a resumed run may
    change it.
    """

    dataset: str = "mnist"
    likelihood: str | None = None
    network: str = "mlp"
    latent_dim: int = 20
    epochs: int = 20
    batch_size: int = 100
    learning_rate: float = 1e-3
    beta: float = 1.0
    kl_warmup: int = 0
    limit: int | None = None
    seed: int = 0
    nll_samples: int = 0

    def __post_init__(self):
        if self.likelihood is None:
            self.likelihood = default_likelihood(self.dataset)

    def identity(self) -> dict:
        """The fields a resumed run must share with the stored run."""
        fields = dataclasses.asdict(self)
        fields.pop("nll_samples")
        return fields


def default_likelihood(dataset: str) -> str:
    """``"normal"`` (learned scale) for Frey Face, ``"bernoulli"`` otherwise.

    For grey MNIST / Fashion-MNIST the Bernoulli treats each grey level as a
    probability (the usual, if not strictly valid, choice).
    """
    return "normal" if dataset == "frey_face" else "bernoulli"


# ------------------------------------------------------------------ data
def load_splits(dataset: str, limit: int | None = None, seed: int = 0,
                splits: tuple[str, ...] = ("train", "valid", "test")) -> dict[str, np.ndarray]:
    """Images of each split in ``splits``, float32 ``[N, H, W, 1]`` in [0, 1].

    Splits: ``"train"``, ``"valid"``, ``"test"``. ``binarized_mnist`` has its
    own validation file; for the others the validation split is the last 10%
    of the training file (Frey Face: its last 200), and ``"train"`` is the
    rest. ``limit`` keeps a fixed random subset of at most that many per split.

    Raises:
        datasets.DatasetUnavailableError, datasets.DatasetCorruptError.
    """
    unknown = [s for s in splits if s not in ("train", "valid", "test")]
    if unknown:
        raise ValueError(f"Unknown split {unknown[0]!r}. Expected train, valid or test.")
    result, train_file = {}, None
    for split in splits:
        if split == "test" or dataset == "binarized_mnist":
            result[split] = datasets.load(dataset, split, limit=limit, seed=seed)[0]
            continue
        if train_file is None:  # read once for both train and valid
            train_file = datasets.load(dataset, "train")[0]
        held_out = (FREY_VALIDATION if dataset == "frey_face"
                    else round(VALIDATION_FRACTION * len(train_file)))
        x = train_file[-held_out:] if split == "valid" else train_file[:-held_out]
        if limit is not None and limit < len(x):
            x = x[np.sort(np.random.default_rng(seed).permutation(len(x))[:limit])]
        result[split] = x
    return result


def load_split(dataset: str, split: str, limit: int | None = None, seed: int = 0) -> np.ndarray:
    """One split of :func:`load_splits`."""
    return load_splits(dataset, limit, seed, (split,))[split]


# --------------------------------------------------------------- callbacks
class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stop training at the first batch whose loss is NaN or infinite.

    Sets ``message`` (naming the step and the likely causes) and
    ``model.stop_training``; :class:`tfvae.checkpoints.EpochCheckpoint`
    then skips that epoch, so the bad weights are never saved.
    """

    def __init__(self):
        super().__init__()
        self.message: str | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)) or self.message:
            return
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self.message = (
            f"the loss became {float(loss)} at training step {step} (epoch {self._epoch + 1}, "
            f"batch {batch + 1}). Likely causes: a learning rate too high (try a 10x smaller "
            f"--learning-rate), bad data (NaN or values outside the likelihood's support), or a "
            f"learned Normal scale collapsing towards 0 (try a fixed scale, e.g. "
            f"--likelihood normal:0.1)."
        )
        self.model.stop_training = True


class ImageSummaries(keras.callbacks.Callback):
    """TensorBoard images after each epoch: reconstructions and samples.

    ``reconstructions``: each data image beside its reconstruction E[x|z=mu];
    ``samples``: E[x|z] for a fixed set of z ~ p(z) (the same every epoch,
    so the images show how the decoder changes). Step = epochs completed.

    Args:
        log_dir: folder of the event file.
        images: ``[n, *data_shape]`` data images to reconstruct.
        num_samples: number of samples.
        seed: seed of the samples' z.
    """

    def __init__(self, log_dir: str | os.PathLike, images: np.ndarray, num_samples: int = 16,
                 seed: int = 0):
        super().__init__()
        self.log_dir = str(log_dir)
        self.images = np.asarray(images, np.float32)
        self.num_samples = num_samples
        self.seed = seed
        self.writer = None

    def on_train_begin(self, logs=None):
        self.writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_end(self, epoch, logs=None):
        if not math.isfinite(float((logs or {}).get("loss", math.nan))):
            return
        pairs = tf.concat([self.images, self.model.reconstruct(self.images)], axis=2)
        samples = self.model.sample(self.num_samples, seed=stateless_seed(self.seed), mean=True)
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


# ------------------------------------------------------------ run folders
def run_status(out: str | os.PathLike, config: TrainConfig) -> str:
    """``"new"``, ``"resume"`` or ``"complete"`` for training ``config`` into ``out``.

    Raises:
        RunConfigMismatch: ``out`` holds a run with other arguments.
    """
    out = Path(out)
    stored = checkpoints.read_json(out / RUN_CONFIG)
    if stored is None:
        return "new"
    wanted = config.identity()
    stored = {k: v for k, v in stored.items() if k in wanted}
    if stored != wanted:
        diffs = ", ".join(f"{k}: stored {stored.get(k)!r}, now {v!r}"
                          for k, v in wanted.items() if stored.get(k) != v)
        raise RunConfigMismatch(
            f"{out} holds a run with other arguments ({diffs}). Re-run with the stored "
            f"arguments to resume it, pass --overwrite to replace it, or choose another --out."
        )
    metrics = checkpoints.read_json(out / METRICS)
    if metrics and metrics.get("completed"):
        return "complete"
    return "resume"


def clear_run(out: str | os.PathLike, temporary_only: bool = False) -> None:
    """Remove the files a previous :func:`train` wrote into ``out`` (and nothing else).

    With ``temporary_only``, remove only temporary files left by a save that
    was killed (``.model.keras.*``, see :func:`tfvae.checkpoints.atomic_path`).
    """
    out = Path(out)
    for name in RUN_FILES:
        for pattern in (f".{name}.*", f"{name}.*.tmp"):  # ours, and tfvae.plot's
            for leftover in out.glob(pattern):
                leftover.unlink(missing_ok=True)
        path = out / name
        if temporary_only:
            continue
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def build_vae(config: TrainConfig, data_shape: tuple[int, ...]) -> VAE:
    """A compiled VAE for ``config`` (weights initialised from ``config.seed``)."""
    keras.utils.set_random_seed(config.seed)
    encoder, decoder = networks.build_networks(config.network, data_shape, config.latent_dim)
    model = VAE(encoder, decoder, config.latent_dim, likelihood=config.likelihood,
                beta=config.beta, seed=config.seed)
    # One step per execution (tfvae's default runs several): NonFiniteLossGuard
    # then sees every step's loss and names the exact step that diverged.
    model.compile(optimizer=FusedAdam(config.learning_rate), steps_per_execution=1)
    return model


def evaluate(model: VAE, x: np.ndarray, batch_size: int = 100, nll_samples: int = 0,
             verbose: int = 0) -> dict[str, float]:
    """Mean ``loss``, ``reconstruction``, ``kl``, ``elbo`` over ``x`` (nats per example).

    With ``nll_samples > 0`` also ``nll``: minus the mean importance-sampled
    log p(x) with that many samples (:meth:`VAE.log_likelihood`), whose
    progress is shown when ``verbose``.
    """
    metrics = model.evaluate(x, batch_size=batch_size, verbose=0, return_dict=True)
    metrics = {k: float(v) for k, v in metrics.items()}
    if nll_samples > 0:
        if verbose:
            print(f"Estimating log p(x) of {len(x)} examples with {nll_samples} importance "
                  f"samples each", flush=True)
        log_px = model.log_likelihood(x, num_samples=nll_samples, batch_size=batch_size,
                                      seed=0, verbose=verbose)
        metrics["nll"] = float(-np.mean(log_px))
        metrics["nll_samples"] = int(nll_samples)
    return metrics


def save_pictures(model: VAE, images: np.ndarray, out: str | os.PathLike, seed: int = 0,
                  num_samples: int = 64) -> None:
    """Write ``samples.png`` (E[x|z], z ~ p(z)) and ``reconstructions.png``.

    ``reconstructions.png`` alternates rows: 8 data images, then their
    reconstructions E[x|z=mu].
    """
    out = Path(out)
    samples = model.sample(num_samples, seed=stateless_seed(seed), mean=True).numpy()
    plot.save_image_grid(samples, out / SAMPLES_PNG, ncols=8)
    images = images[: len(images) // 8 * 8]
    recon = model.reconstruct(images).numpy()
    rows = np.stack([images.reshape(-1, 8, *images.shape[1:]),
                     recon.reshape(-1, 8, *images.shape[1:])], axis=1)
    plot.save_image_grid(rows.reshape(-1, *images.shape[1:]), out / RECONSTRUCTIONS_PNG, ncols=8)


def train(config: TrainConfig, out: str | os.PathLike, overwrite: bool = False,
          verbose: int = 1, callbacks: list | None = None) -> dict:
    """Train ``config`` into the run folder ``out`` (see the module docstring).

    Args:
        config: what to train.
        out: run folder (created if needed).
        overwrite: delete a previous run in ``out`` first (once the data loaded).
        verbose: Keras verbosity (1: progress bars).
        callbacks: extra Keras callbacks.

    Returns:
        The contents of ``metrics.json``: for each of ``train``,
        ``validation``, ``test`` the mean loss, reconstruction, kl and elbo
        (nats per example; ``test`` also ``nll`` if ``config.nll_samples``),
        plus ``history`` (per-epoch logs), ``epochs``, ``seconds``,
        ``completed``.

    Raises:
        RunConfigMismatch: ``out`` holds another run (and not ``overwrite``).
        checkpoints.ModelFileError: the run's checkpoint cannot be loaded.
        TrainingDiverged: the loss became NaN/inf (the last good model is kept).
        datasets.DatasetUnavailableError, datasets.DatasetCorruptError.
    """
    out = Path(out)
    if not overwrite and run_status(out, config) == "complete":
        return checkpoints.read_json(out / METRICS)
    data = load_splits(config.dataset, config.limit, config.seed)  # before deleting anything
    clear_run(out, temporary_only=not overwrite)
    out.mkdir(parents=True, exist_ok=True)
    checkpoints.write_json(out / RUN_CONFIG, config.identity())

    restored = checkpoints.latest_checkpoint(out / CHECKPOINTS)
    if restored is None:
        model, initial_epoch, history = build_vae(config, data["train"].shape[1:]), 0, {}
    else:
        model_file, state = restored
        try:
            model = checkpoints.load_model(model_file)
        except checkpoints.ModelFileError as error:
            raise checkpoints.ModelFileError(
                f"cannot resume {out}: {error}. Pass --overwrite (overwrite=True) to start the "
                f"run again.") from error
        initial_epoch, history = state["epoch"], state.get("history", {})
        print(f"Resuming {out} after epoch {initial_epoch} of {config.epochs} "
              f"(checkpoint {model_file}).", flush=True)
        keras.utils.set_random_seed(config.seed + initial_epoch)

    guard = NonFiniteLossGuard()
    saver = checkpoints.EpochCheckpoint(out / CHECKPOINTS, export_path=out / MODEL,
                                        history=history)
    fit_callbacks = [guard, saver,
                     ImageSummaries(out / LOGS / "images", data["valid"][:8], seed=config.seed),
                     keras.callbacks.TensorBoard(out / LOGS, write_graph=False)]
    if config.kl_warmup > 0:
        fit_callbacks.insert(0, KLWarmup(config.kl_warmup, target=config.beta))
    start = time.time()
    if initial_epoch < config.epochs:
        model.fit(data["train"], validation_data=data["valid"], epochs=config.epochs,
                  initial_epoch=initial_epoch, batch_size=config.batch_size, shuffle=True,
                  callbacks=fit_callbacks + list(callbacks or []), verbose=verbose)
    if guard.message:
        good = saver.last_saved_epoch or initial_epoch
        kept = (f"The model after epoch {good} is kept in {out / MODEL}." if good else
                "No epoch finished, so no model was saved.")
        raise TrainingDiverged(f"Training stopped: {guard.message} {kept}")

    if initial_epoch == config.epochs and not (out / MODEL).exists():
        checkpoints.save_model(model, out / MODEL)
    metrics = {
        "train": evaluate(model, data["train"], config.batch_size),
        "validation": evaluate(model, data["valid"], config.batch_size),
        "test": evaluate(model, data["test"], config.batch_size, config.nll_samples, verbose),
    }
    save_pictures(model, data["test"][:32], out, seed=config.seed)
    metrics.update(history=saver.history, epochs=config.epochs, config=dataclasses.asdict(config),
                   seconds=round(time.time() - start, 1), completed=True)
    checkpoints.write_json(out / METRICS, metrics)
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)  # model.keras is the final model
    return metrics
